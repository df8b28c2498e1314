"""`python -m quant.widths`: the worst-case accumulator widths of EfficientViT-B0..B3 (golden/SPEC.md section 9).

quant/ owns the model zoo, so it builds each model's structure IR
(quant.export.structure_ir: shapes and formats, no weights) and arch/widths.py
bounds every product type of it.

    python -m quant.widths [--models B0,B1,B2,B3] [--resolution 288] [--out DIR] [--spec golden/SPEC.md]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from arch import graph as arch_graph
from arch import widths

BEGIN, END = "<!-- widths:begin", "<!-- widths:end -->"


def width_rows(models: list[str], resolution: int) -> list[dict]:
    from .export import structure_ir
    graphs = [arch_graph.infer(structure_ir(f"{m.strip().lower()}-r{resolution}")) for m in models]
    return widths.table(graphs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quant.widths", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="B0,B1,B2,B3", help="comma-separated, e.g. B0,B3")
    ap.add_argument("--resolution", type=int, default=288)
    ap.add_argument("--out", default=None, help="also write widths.json / widths.md here")
    ap.add_argument("--spec", default=None, help="rewrite the table between the widths markers of this SPEC.md")
    args = ap.parse_args(argv)
    try:
        rows = width_rows(args.models.split(","), args.resolution)
    except (KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = widths.markdown(rows, args.resolution)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "widths.json").write_text(json.dumps(dict(resolution=args.resolution, rows=rows), indent=1))
        (out / "widths.md").write_text(text + "\n")
    if args.spec:
        spec = Path(args.spec)
        t = spec.read_text()
        if BEGIN not in t or END not in t:
            print(f"error: {spec}: markers {BEGIN} ... {END} not found", file=sys.stderr)
            return 2
        a = t.index("\n", t.index(BEGIN)) + 1
        spec.write_text(t[:a] + text + "\n" + t[t.index(END):])
        print(f"rewrote the width table in {spec}")
    worst = max(r["raw_bits"] for r in rows if r["kind"] != widths.LAYERNORM_VAR)
    print(f"\nwidest 32-bit accumulator need: {worst} bits (raw partial sums, bias excluded)")
    return 0 if worst <= 32 else 1


if __name__ == "__main__":
    sys.exit(main())
