"""Command line of golden/: ``python -m golden {widths,eval,dump,all}`` (see golden/SPEC.md)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_widths(args) -> int:
    from .widths import markdown, table
    variants = [f"efficientvit_{m.lower()}" for m in args.models.split(",")]
    rows = table(variants, args.resolution)
    text = markdown(rows, args.resolution)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "widths.json").write_text(json.dumps(dict(resolution=args.resolution, rows=rows), indent=1))
        (out / "widths.md").write_text(text + "\n")
    if args.spec:
        spec = Path(args.spec)
        t = spec.read_text()
        begin, end = "<!-- widths:begin", "<!-- widths:end -->"
        if begin not in t or end not in t:
            raise SystemExit(f"{spec}: markers {begin} ... {end} not found")
        a = t.index("\n", t.index(begin)) + 1
        spec.write_text(t[:a] + text + "\n" + t[t.index(end):])
        print(f"rewrote the width table in {spec}")
    worst = max(r["raw_bits"] for r in rows if "64-bit" not in r["kind"])
    print(f"\nwidest 32-bit accumulator need: {worst} bits (raw partial sums, bias excluded)")
    return 0 if worst <= 32 else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golden", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("widths", help="worst-case accumulator widths of B0..B3 (SPEC section 9)")
    w.add_argument("--models", default="B0,B1,B2,B3", help="comma-separated, e.g. B0,B3")
    w.add_argument("--resolution", type=int, default=288)
    w.add_argument("--out", default=None, help="also write widths.json / widths.md here")
    w.add_argument("--spec", default=None, help="rewrite the table between the widths markers of this SPEC.md")
    w.set_defaults(fn=cmd_widths)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
