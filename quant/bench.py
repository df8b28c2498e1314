"""`make bench-quant`: the quantization ablation table on the real proxy, written into README.md.

Every row is one main_imagenet.py run (its command is printed in the table)
on ../shared/assets; the table sits between the BENCH-QUANT markers of the README.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
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
    # Migration alone beats all three on the proxy: these two say which of the others costs what.
    ("migration + shifting", dict(w=8, a=8, it=0), "--no_log2"),
    ("migration + log2 divisor", dict(w=8, a=8, it=0), "--no_shift"),
    ("Trio-ViT W8A8", dict(w=8, a=8, it=0), ""),
    # the divisor's mantissa bit ({1, 4/3} 2^e, golden/SPEC.md 5.4) off: Trio-ViT's powers of two
    ("Trio-ViT W8A8, powers-of-two divisor", dict(w=8, a=8, it=0), "--no_log2_mantissa"),
    ("vanilla W8A8 + reconstruction", dict(w=8, a=8, it=500), "--vanilla"),
    ("Trio-ViT W8A8 + reconstruction", dict(w=8, a=8, it=500), ""),
    ("Trio-ViT W4A8 + reconstruction", dict(w=4, a=8, it=500), ""),
    ("Trio-ViT W6A6 + reconstruction", dict(w=6, a=6, it=500), ""),
]
BEGIN, END = "<!-- BENCH-QUANT:BEGIN -->", "<!-- BENCH-QUANT:END -->"


def code_digest() -> str:
    """A digest of the sources a row's figures depend on (quant/, golden/, arch/, the CLI): a reused
    result measured on other sources is marked as such in the table."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha1()
    for f in sorted([root / "main_imagenet.py"] + [p for d in ("quant", "golden", "arch")
                                                    for p in (root / d).glob("*.py")]):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def row_dir(label: str) -> str:
    """Rows live in folders named after their label, so adding a row does not orphan the others' results."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def row_flags(kw: dict, extra: str) -> list[str]:
    """The row's quantization flags (what differs between rows)."""
    return shlex.split(BASE.format(**kw)) + shlex.split(extra)


def row_args(assets: Path, kw: dict, extra: str) -> list[str]:
    return (["--data_path", str(assets / "data" / "imagenette"),
             "--weight_url", str(assets / "models" / "efficientvit_b0_imagenette.pt")] + row_flags(kw, extra))


def row_command(kw: dict, extra: str) -> str:
    """The row's command as the README prints it (and as a reused result must match)."""
    return "python main_imagenet.py " + " ".join(
        shlex.quote(x) for x in row_args(Path("../shared/assets"), kw, extra) + ["--output", "OUT"])


def parse_rows(spec: str | None) -> set[int]:
    if not spec:
        return set(range(1, len(ROWS) + 1))
    try:
        wanted = {int(x) for x in spec.split(",") if x.strip()}
    except ValueError:
        raise SystemExit(f"error: --rows takes comma-separated row numbers, got {spec!r} (--list shows them)")
    bad = sorted(i for i in wanted if not 1 <= i <= len(ROWS))
    if bad:
        raise SystemExit(f"error: --rows {spec}: no row {bad[0]}; rows are 1..{len(ROWS)} (--list shows them)")
    return wanted


def replace_table(text: str, table: str, where: str) -> str:
    """The README with `table` between the BENCH-QUANT markers."""
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"error: {where} has no {BEGIN} ... {END} markers to put the table between")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + BEGIN + "\n" + table + "\n" + END + tail


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--assets", default="../shared/assets")
    p.add_argument("--readme", default=None, help="rewrite the table between the BENCH-QUANT markers of this file")
    p.add_argument("--out", default="build/bench-quant")
    p.add_argument("--rows", default=None,
                   help="comma-separated row numbers (1-based, see --list) to run; default all. Rows not "
                        "named still appear in the table if their results are already in --out")
    p.add_argument("--list", action="store_true", help="print the rows with their numbers and exit")
    p.add_argument("--max_val", type=int, default=None, help="evaluate on the first N val images (quick look)")
    p.add_argument("--force", action="store_true",
                   help="rerun rows whose results are already in --out (default: reuse them, so a long "
                        "bench can be run a few rows at a time)")
    a = p.parse_args(argv)
    if a.list:
        for i, (label, kw, extra) in enumerate(ROWS, 1):
            print(f"{i:2d}  {label:34s} {' '.join(row_flags(kw, extra))}")
        return 0
    wanted = parse_rows(a.rows)
    assets = Path(a.assets)
    if not (assets / "models" / "efficientvit_b0_imagenette.pt").is_file():
        print(f"error: {assets} lacks models/efficientvit_b0_imagenette.pt (see shared/assets/README.md)",
              file=sys.stderr)
        return 2
    if a.readme:  # fail now, not after an hour of runs
        replace_table(Path(a.readme).read_text(), "", a.readme)
    results = []
    digest = code_digest()
    for i, (label, kw, extra) in enumerate(ROWS, 1):
        out = Path(a.out) / row_dir(label)
        args = row_args(assets, kw, extra) + ["--output", str(out), "--no_progress"]
        if a.max_val:
            args += ["--max_val", str(a.max_val)]
        cmd = row_command(kw, extra)
        done = out / "bench_row.json"
        if done.is_file() and not (a.force and i in wanted):
            r = json.loads(done.read_text())
            if r.get("cmd") == cmd and r.get("max_val") == a.max_val:
                stale = " (stale: from before the integer model was evaluated)" if "integer_model" not in r else ""
                if r.get("code") != digest:
                    stale += f" (measured on other sources: {r.get('code', 'before digests')} vs {digest})"
                print(f"[{i}/{len(ROWS)}] {label}: reusing {done}{stale} (--force reruns it)", flush=True)
                results.append(dict(r, current=r.get("code") == digest))
                continue
        if i not in wanted:
            continue
        t = time.time()
        print(f"[{i}/{len(ROWS)}] {label}: python main_imagenet.py {' '.join(args)}", flush=True)
        proc = subprocess.run([sys.executable, "main_imagenet.py"] + args, text=True)
        if proc.returncode:
            print(f"row {i} failed (exit {proc.returncode})", file=sys.stderr)
            return proc.returncode
        r = json.loads((out / "results.json").read_text())
        r.update(label=label, wall_s=time.time() - t, cmd=cmd, max_val=a.max_val, code=digest)
        done.write_text(json.dumps(r, indent=2, default=float))
        results.append(dict(r, current=True))
    table = format_table(results)
    print(table)
    if a.readme:
        path = Path(a.readme)
        path.write_text(replace_table(path.read_text(), table, a.readme))
        print(f"updated {path}")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "bench.json").write_text(json.dumps(results, indent=2, default=float))
    return 0


def _num(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def row_cells(r: dict) -> tuple[list[str], str | None]:
    """The table cells integer top-1, top-5, drop, agreement with float, fake-quant top-1, and the row's
    footnote: why it has no integer figures (stale: results.json from before the integer evaluation)."""
    if "integer_model" not in r:  # old results.json: quant_* were the float32 fake-quant figures
        return ["- (stale)", "-", "-", "-", _num(r.get("quant_top1"))], "stale"
    fq = r.get("fakequant_top1", None if r["integer_model"] else r.get("quant_top1"))
    if not r["integer_model"]:
        return ["-", "-", "-", "-", _num(fq)], r.get("integer_model_reason") or "no integer model"
    agree = r.get("agreement_int_vs_float", r.get("quant_agreement"))
    return [_num(r["quant_top1"]), _num(r["quant_top5"]), _num(r["fp_top1"] - r["quant_top1"]),
            "-" if agree is None else f"{agree:.2f}%", _num(fq)], None


def _short_reason(reason: str) -> str:
    """The reason without the per-node prefix, so rows that fail alike share one footnote."""
    core = reason.split("has no integer model: ", 1)[-1]
    head, sep, tail = core.partition(": ")
    return tail if sep and ("." in head and " " not in head) else core


def format_table(results: list[dict]) -> str:
    lines = ["| row | W/A | top-1 (integer) | top-5 (integer) | drop vs float | agreement w/ float | "
             "fake-quant top-1 | wall time | command |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_label = {r["label"]: r for r in results}
    notes: dict[str, list[str]] = {}
    for label, kw, _ in ROWS:  # the bench's order, whichever rows were run
        r = by_label.get(label)
        if r is None:
            lines.append(f"| {label} | W{kw['w']}A{kw['a']} | not run yet | | | | | | |")
            continue
        cells, note = row_cells(r)
        if note is not None:
            note = "stale" if note == "stale" else _short_reason(note)
            notes.setdefault(note, []).append(label)
        mark = "" if r.get("current", True) else " †"
        lines.append(f"| {r['label']}{mark} | W{r['n_bits_w']}A{r['n_bits_a']} | " + " | ".join(cells) +
                     f" | {r['wall_s'] / 60:.1f} min | `{r['cmd']}` |")
    if results:
        lines.append(f"\nTop-1, top-5, drop and agreement are the integer model's (golden/fast.py, bit for bit "
                     f"what the hardware computes); fake-quant top-1 is the float32 fake-quant model's. "
                     f"Float top-1 {results[0]['fp_top1']:.2f} on {results[0].get('n_val', 'the')} val images.")
    old = [r["label"] for r in results if not r.get("current", True)]
    if old:
        lines.append(f"\n†: {', '.join(old)}: measured on earlier sources of quant/, golden/ or arch/ "
                     f"(before the last change that could move them); `make bench-quant BENCH_ARGS='--force "
                     f"--rows N'` reruns them.")
    for note, labels in notes.items():
        if note == "stale":
            lines.append(f"\n`- (stale)`: {', '.join(labels)}: results from before the integer model was "
                         f"evaluated (its fake-quant top-1 shown); `make bench-quant BENCH_ARGS='--force "
                         f"--rows N'` reruns them.")
        else:
            lines.append(f"\n`-`: no integer model for {', '.join(labels)}: {note}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
