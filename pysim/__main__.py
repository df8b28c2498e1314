"""pysim command line: compile a model for a configuration and price the program.

    python -m pysim --quantized OUT/quantized.pt --preset paper [--json F] [--program F] [--listing]
    python -m pysim --model b1-r224 --preset paper            (a float model's structure, same path)
                    [--clock-mhz F --dram-gbps B --dsps N] [--plot DIR] [--units]
                    [--no-rmac-pointwise] [--what-if-streamed]
    python -m pysim perf --out DIR [--models b0-r224,...] [--presets paper,zcu102] [--no-plots]
    python -m pysim sweep --dsps 2520 --model b1-r224 [--top 8] [--clock-mhz F] [--dram-gbps B]
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

from arch.compiler import compile_ir
from arch.config import PRESETS, AccelConfig, get_preset

from . import report
from .price import price


class UsageError(ValueError):
    """A bad command-line value: printed as one line."""


def apply_overrides(cfg: AccelConfig, clock_mhz=None, dram_gbps=None, dsps=None) -> AccelConfig:
    """Clock, DRAM bandwidth and DSP budget on top of a preset.

    The DRAM bandwidth is a property of the board, so a new clock keeps the
    preset's GB/s (fewer bytes per cycle at a higher clock) unless
    ``dram_gbps`` says otherwise.  ``dsps`` keeps the preset's engine shapes and
    sets the replica count to the most that fit the budget (``AccelConfig.dsps``: two int8 products
    per DSP where the engines pack them).
    """
    for name, v in (("--clock-mhz", clock_mhz), ("--dram-gbps", dram_gbps)):
        if v is not None and (not math.isfinite(v) or v <= 0):
            raise UsageError(f"{name} must be a positive number, got {v}")
    gbps = cfg.dram_gbps if dram_gbps is None else dram_gbps
    if clock_mhz is not None:
        cfg = cfg.replace(clock_mhz=float(clock_mhz))
    cfg = cfg.replace(dram_bytes_per_cycle=gbps * 1e3 / cfg.clock_mhz)
    if dsps is not None:
        L = cfg.max_replicas(dsps)
        if L < 1:
            raise UsageError(f"--dsps {dsps}: one replica of this preset needs {cfg.replace(replicas=1).dsps} DSPs")
        cfg = cfg.replace(replicas=L, name=f"{cfg.name}-{dsps}dsp")
    return cfg


def model_ir(model: str):
    """A float model's structure IR (quant/ owns the model zoo; no weights, no download)."""
    from quant.export import structure_ir
    from quant.models import MODELS
    if model not in MODELS:
        raise UsageError(f"unknown model {model!r}; valid names: {', '.join(MODELS)}")
    return structure_ir(model)


def run(ir, cfg: AccelConfig, rmac_pointwise: bool = True, streamed: bool = False) -> tuple[dict, object]:
    program = compile_ir(ir, cfg, rmac_pointwise=rmac_pointwise)
    res = price(program, streamed=streamed)
    res["options"] = dict(rmac_pointwise=rmac_pointwise, streamed=streamed)
    return res, program


def _preset(name: str) -> AccelConfig:
    try:
        return get_preset(name)
    except KeyError as e:
        raise UsageError(e.args[0]) from None


def cmd_report(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m pysim", description="Compile a model for one accelerator "
                                 "configuration and price the program (subcommands: perf, sweep).")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--quantized", type=Path, help="quantized.pt written by main_imagenet.py --output")
    src.add_argument("--model", help="a float model's structure, e.g. b1-r224 (b0..b3 x r224/r256/r288)")
    ap.add_argument("--preset", default="paper", help=f"one of {', '.join(sorted(PRESETS))}")
    ap.add_argument("--clock-mhz", type=float)
    ap.add_argument("--dram-gbps", type=float)
    ap.add_argument("--dsps", type=int, help="DSP budget: replicas set to the most that fit")
    ap.add_argument("--json", type=Path, help="write the full result (totals, groups, operations) here")
    ap.add_argument("--program", type=Path, help="write the compiled program (JSON, docs/program_format.md) here")
    ap.add_argument("--listing", action="store_true", help="print the program, one line per operation")
    ap.add_argument("--plot", type=Path, help="write utilization and roofline PNGs into this folder")
    ap.add_argument("--units", action="store_true", help="list the integer-unit operations too")
    ap.add_argument("--no-rmac-pointwise", action="store_true",
                    help="keep pointwise convs off the R-MAC array (no engine balancing)")
    ap.add_argument("--what-if-streamed", action="store_true",
                    help="NOT the RTL: every operation priced at its issue cycles alone, with no weight load "
                         "and no pipeline fill or drain (shows how much of the gap to peak those cost)")
    a = ap.parse_args(argv)
    cfg = apply_overrides(_preset(a.preset), a.clock_mhz, a.dram_gbps, a.dsps)
    ir = model_ir(a.model.strip().lower()) if a.model else a.quantized
    res, program = run(ir, cfg, not a.no_rmac_pointwise, a.what_if_streamed)
    if a.listing:
        print(program.listing({o["index"]: o["cycles"] for o in res["ops"]}))
        print()
    if a.what_if_streamed:
        print("WHAT-IF: every operation at its issue cycles alone (no weight load, no fill or drain); not the RTL")
    print("\n".join(report.op_table(res, units=a.units)))
    print()
    print("\n".join(report.kind_summary(res)))
    print()
    print("\n".join(report.totals_lines(res)))
    if a.json:
        report.write_json(res, a.json)
        print(f"wrote {a.json}")
    if a.program:
        print(f"wrote {program.save(a.program)}")
    if a.plot:
        for p in report.plot(res, a.plot, f"{res['model']}_{cfg.name}"):
            print(f"wrote {p}")
    return 0


def cmd_perf(argv) -> int:
    from quant.models import MODELS
    ap = argparse.ArgumentParser(prog="python -m pysim perf",
                                 description="B0..B3 x r224/r256/r288 under the paper and zcu102 presets")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--presets", default="paper,zcu102")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    models = [m.strip().lower() for m in a.models.split(",") if m.strip()]
    presets = [_preset(p) for p in a.presets.split(",") if p]
    irs = {m: model_ir(m) for m in models}
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for cfg in presets:
        for model in models:
            res, _ = run(irs[model], cfg)
            tag = f"{model}_{cfg.name}"
            report.write_json(res, a.out / f"{tag}.json")
            (a.out / f"{tag}.txt").write_text("\n".join(
                report.op_table(res, units=True) + [""] + report.kind_summary(res) + [""]
                + report.totals_lines(res)) + "\n")
            if not a.no_plots:
                report.plot(res, a.out / "plots", tag)
            rows.append({k: res[k] for k in ("model", "cycles", "latency_ms", "fps", "gops", "peak_gops",
                                              "mac_utilization", "dsps", "gops_per_dsp", "dram_mb_per_frame",
                                              "bound", "total_macs")} | {"preset": cfg.name})
            print(f"{cfg.name:8s} {model:8s} {res['fps']:8.1f} FPS  {res['gops']:7.1f} GOPS  "
                  f"{100 * res['mac_utilization']:5.1f}%", flush=True)
    lines = report.perf_table(rows)
    (a.out / "summary.md").write_text("\n".join(lines) + "\n")
    (a.out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))
    print(f"wrote {a.out / 'summary.md'} and one .json/.txt per run")
    return 0


def sweep_configs(dsps: int, base: AccelConfig):
    """Array shapes whose engines fit ``dsps`` DSPs: power-of-two M, N, S, T, the most replicas."""
    pw2 = (4, 8, 16, 32)
    for M, N, S, T in itertools.product(pw2, pw2, (4, 8, 16), (4, 8, 16)):
        shape = base.replace(mat_lanes=M, mat_mults=N, rmac_rows=S, rmac_cols=T, replicas=1,
                             mat_wbuf_words=max(base.mat_wbuf_words, -(-2560 // N)))
        L = shape.max_replicas(dsps)
        if L >= 1:
            yield shape.replace(name=f"M{M}N{N}+S{S}T{T}xL{L}", replicas=L)


def cmd_sweep(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m pysim sweep",
                                 description="array shapes within a DSP budget, best first by FPS")
    ap.add_argument("--dsps", type=int, required=True)
    ap.add_argument("--model", default="b1-r224")
    ap.add_argument("--preset", default="zcu102", help="buffers, clock and DRAM come from this preset")
    ap.add_argument("--clock-mhz", type=float)
    ap.add_argument("--dram-gbps", type=float)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.dsps < 1:
        raise UsageError(f"--dsps must be positive, got {a.dsps}")
    base = apply_overrides(_preset(a.preset), a.clock_mhz, a.dram_gbps)
    ir = model_ir(a.model.strip().lower())
    results = []
    for cfg in sweep_configs(a.dsps, base):
        res, _ = run(ir, cfg)
        results.append((res["fps"], cfg, res))
    results.sort(key=lambda r: -r[0])
    print(f"{a.model}: {len(results)} array shapes within {a.dsps} DSPs (two int8 products per DSP, "
          f"{base.clock_mhz:g} MHz, {base.dram_gbps:.1f} GB/s); best {a.top}:")
    print(f"{'shape':22s} {'mults':>6s} {'DSPs':>5s} {'FPS':>8s} {'GOPS':>8s} {'util':>6s} {'GOPS/DSP':>8s} bound")
    for fps, cfg, res in results[:a.top]:
        print(f"{cfg.name:22s} {cfg.multipliers:6d} {cfg.dsps:5d} {fps:8.1f} {res['gops']:8.1f} "
              f"{100 * res['mac_utilization']:5.1f}% {res['gops_per_dsp']:8.3f} {res['bound']}")
    if a.json:
        report.write_json([{"shape": cfg.name, "config": cfg.to_dict(), "fps": fps, "gops": res["gops"],
                            "mac_utilization": res["mac_utilization"], "gops_per_dsp": res["gops_per_dsp"],
                            "bound": res["bound"]} for fps, cfg, res in results], a.json)
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = {"perf": cmd_perf, "sweep": cmd_sweep}.get(argv[0] if argv else "", None)
    try:
        return cmd(argv[1:]) if cmd else cmd_report(argv)
    except (UsageError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
