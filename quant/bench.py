"""`make bench-quant`: the quantization ablation table on the real proxy, written into README.md.

Every row is one main_imagenet.py run (its command is printed in the table)
on ../shared/assets; the table sits between the BENCH-QUANT markers of the README.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

BASE = ("--model b0-r224 --n_bits_w {w} --channel_wise --n_bits_a {a} --act_quant --disable_8bit_head_stem "
        "--input_size 224 --num_samples 256 --iters_w {it} --iters_a {it}")
ROWS = [
    ("vanilla W8A8", dict(w=8, a=8, it=0), "--vanilla"),
    ("migration only", dict(w=8, a=8, it=0), "--no_shift --no_log2"),
    ("shifting only", dict(w=8, a=8, it=0), "--no_migration --no_log2"),
    ("log2 divisor only", dict(w=8, a=8, it=0), "--no_migration --no_shift"),
    ("Trio-ViT W8A8", dict(w=8, a=8, it=0), ""),
    ("vanilla W8A8 + reconstruction", dict(w=8, a=8, it=500), "--vanilla"),
    ("Trio-ViT W8A8 + reconstruction", dict(w=8, a=8, it=500), ""),
    ("Trio-ViT W4A8 + reconstruction", dict(w=4, a=8, it=500), ""),
    ("Trio-ViT W6A6 + reconstruction", dict(w=6, a=6, it=500), ""),
]
BEGIN, END = "<!-- BENCH-QUANT:BEGIN -->", "<!-- BENCH-QUANT:END -->"


def row_args(assets: Path, kw: dict, extra: str) -> list[str]:
    return (["--data_path", str(assets / "data" / "imagenette"),
             "--weight_url", str(assets / "models" / "efficientvit_b0_imagenette.pt")]
            + shlex.split(BASE.format(**kw)) + shlex.split(extra))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--assets", default="../shared/assets")
    p.add_argument("--readme", default=None, help="rewrite the table between the BENCH-QUANT markers of this file")
    p.add_argument("--out", default="build/bench-quant")
    p.add_argument("--rows", default=None, help="comma-separated row numbers (1-based) to run; default all")
    p.add_argument("--max_val", type=int, default=None, help="evaluate on the first N val images (quick look)")
    p.add_argument("--force", action="store_true",
                   help="rerun rows whose results are already in --out (default: reuse them, so a long "
                        "bench can be run a few rows at a time)")
    a = p.parse_args(argv)
    assets = Path(a.assets)
    if not (assets / "models" / "efficientvit_b0_imagenette.pt").is_file():
        print(f"error: {assets} lacks models/efficientvit_b0_imagenette.pt (see shared/assets/README.md)",
              file=sys.stderr)
        return 2
    wanted = {int(i) for i in a.rows.split(",")} if a.rows else set(range(1, len(ROWS) + 1))
    results = []
    for i, (label, kw, extra) in enumerate(ROWS, 1):
        if i not in wanted:
            continue
        out = Path(a.out) / f"row{i}"
        args = row_args(assets, kw, extra) + ["--output", str(out), "--no_progress"]
        if a.max_val:
            args += ["--max_val", str(a.max_val)]
        cmd = "python main_imagenet.py " + " ".join(
            shlex.quote(x) for x in row_args(Path("../shared/assets"), kw, extra) + ["--output", "OUT"])
        done = out / "bench_row.json"
        if done.is_file() and not a.force:
            r = json.loads(done.read_text())
            if r.get("cmd") == cmd and r.get("max_val") == a.max_val:
                print(f"[{i}/{len(ROWS)}] {label}: reusing {done} (--force reruns it)", flush=True)
                results.append(r)
                continue
        t = time.time()
        print(f"[{i}/{len(ROWS)}] {label}: python main_imagenet.py {' '.join(args)}", flush=True)
        proc = subprocess.run([sys.executable, "main_imagenet.py"] + args, text=True)
        if proc.returncode:
            print(f"row {i} failed (exit {proc.returncode})", file=sys.stderr)
            return proc.returncode
        r = json.loads((out / "results.json").read_text())
        r.update(label=label, wall_s=time.time() - t, cmd=cmd, max_val=a.max_val)
        done.write_text(json.dumps(r, indent=2, default=float))
        results.append(r)
    table = format_table(results)
    print(table)
    if a.readme:
        path = Path(a.readme)
        text = path.read_text()
        if BEGIN not in text or END not in text:
            print(f"error: {path} has no {BEGIN} ... {END} markers", file=sys.stderr)
            return 2
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        path.write_text(head + BEGIN + "\n" + table + "\n" + END + tail)
        print(f"updated {path}")
    (Path(a.out) / "bench.json").write_text(json.dumps(results, indent=2, default=float))
    return 0


def format_table(results: list[dict]) -> str:
    lines = ["| row | W/A | top-1 | top-5 | drop vs float | agreement | wall time | command |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    have = {r["label"] for r in results}
    missing = [label for label, _, _ in ROWS if label not in have]
    for r in results:
        lines.append(f"| {r['label']} | W{r['n_bits_w']}A{r['n_bits_a']} | {r['quant_top1']:.2f} | "
                     f"{r['quant_top5']:.2f} | {r['fp_top1'] - r['quant_top1']:.2f} | {r['quant_agreement']:.2f}% | "
                     f"{r['wall_s'] / 60:.1f} min | `{r['cmd']}` |")
    for label in missing:
        lines.append(f"| {label} | | not run yet | | | | | |")
    if results:
        lines.append(f"\nFloat top-1 {results[0]['fp_top1']:.2f} on {results[0].get('n_val', 'the')} val images.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
