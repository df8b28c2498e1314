"""pysim command line.

    python -m pysim --model b1-r224 --preset paper [--clock-mhz F] [--dram-gbps B] [--dsps N]
                    [--json FILE] [--plot DIR] [--units]
    python -m pysim perf --out DIR [--models b0-r224,...] [--presets paper,zcu102] [--no-plots]
    python -m pysim sweep --dsps 2520 --model b1-r224 [--top 8] [--clock-mhz F] [--dram-gbps B]
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from rtl.config import PRESETS, AccelConfig, get_preset

from . import report
from .layers import MODEL_NAMES, model_layers, parse_model_name
from .schedule import Options, simulate


def apply_overrides(cfg: AccelConfig, clock_mhz=None, dram_gbps=None, dsps=None) -> AccelConfig:
    """Clock, DRAM bandwidth and DSP budget on top of a preset.

    The DRAM bandwidth is a property of the board, so a new clock keeps the
    preset's GB/s (fewer bytes per cycle at a higher clock) unless
    ``dram_gbps`` says otherwise.  ``dsps`` keeps the preset's engine shapes and
    sets the replica count to the most that fits the budget.
    """
    gbps = cfg.dram_gbps if dram_gbps is None else dram_gbps
    if clock_mhz is not None:
        if clock_mhz <= 0:
            raise ValueError(f"--clock-mhz must be positive, got {clock_mhz}")
        cfg = cfg.replace(clock_mhz=float(clock_mhz))
    if gbps <= 0:
        raise ValueError(f"--dram-gbps must be positive, got {gbps}")
    cfg = cfg.replace(dram_bytes_per_cycle=gbps * 1e3 / cfg.clock_mhz)
    if dsps is not None:
        per_replica = cfg.mat_lanes * cfg.mat_mults + cfg.rmac_rows * cfg.rmac_cols
        L = dsps * cfg.mults_per_dsp // per_replica
        if L < 1:
            raise ValueError(f"--dsps {dsps}: one replica of this preset needs "
                             f"{-(-per_replica // cfg.mults_per_dsp)} DSPs")
        cfg = cfg.replace(replicas=L, name=f"{cfg.name}-{dsps}dsp")
    return cfg


def run_one(model: str, cfg: AccelConfig, opt: Options | None = None) -> dict:
    opt = opt or Options()
    res = simulate(cfg, model_layers(model), opt)
    res["model"] = model
    res["options"] = dict(opt.__dict__)
    return res


def _preset(name: str) -> AccelConfig:
    try:
        return get_preset(name)
    except KeyError as e:
        raise SystemExit(f"error: {e.args[0]}")


def _model(name: str) -> str:
    try:
        parse_model_name(name)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    return name.strip().lower()


def cmd_report(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m pysim", description="Cycle-level co-simulation of one model "
                                 "on one accelerator configuration (subcommands: perf, sweep).")
    ap.add_argument("--model", required=True, help=f"one of {', '.join(MODEL_NAMES)}")
    ap.add_argument("--preset", default="paper", help=f"one of {', '.join(sorted(PRESETS))}")
    ap.add_argument("--clock-mhz", type=float)
    ap.add_argument("--dram-gbps", type=float)
    ap.add_argument("--dsps", type=int, help="DSP budget: replicas set to the most that fit")
    ap.add_argument("--json", type=Path, help="write the full result (totals + layers) here")
    ap.add_argument("--plot", type=Path, help="write utilization and roofline PNGs into this folder")
    ap.add_argument("--units", action="store_true", help="list the integer-unit rows too")
    ap.add_argument("--no-rmac-pointwise", action="store_true",
                    help="keep pointwise convs off the R-MAC array (no engine balancing)")
    ap.add_argument("--what-if-streamed", action="store_true",
                    help="NOT the RTL: engines that prefetch weights and overlap command fill/drain "
                         "(shows how much of the gap to peak is per-command overhead)")
    a = ap.parse_args(argv)
    model = _model(a.model)
    try:
        cfg = apply_overrides(_preset(a.preset), a.clock_mhz, a.dram_gbps, a.dsps)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    res = run_one(model, cfg, Options(rmac_pointwise=not a.no_rmac_pointwise, streamed=a.what_if_streamed))
    if a.what_if_streamed:
        print("WHAT-IF: command overheads hidden (weights prefetched, fill/drain overlapped); not the RTL")
    print("\n".join(report.layer_table(res, units=a.units)))
    print()
    print("\n".join(report.kind_summary(res)))
    print()
    print("\n".join(report.totals_lines(res)))
    if a.json:
        report.write_json(res, a.json)
        print(f"wrote {a.json}")
    if a.plot:
        for p in report.plot(res, a.plot, f"{model}_{cfg.name}"):
            print(f"wrote {p}")
    return 0


def cmd_perf(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m pysim perf",
                                 description="B0..B3 x r224/r256/r288 under the paper and zcu102 presets")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default=",".join(MODEL_NAMES))
    ap.add_argument("--presets", default="paper,zcu102")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    models = [_model(m) for m in a.models.split(",") if m]
    presets = [_preset(p) for p in a.presets.split(",") if p]
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for cfg in presets:
        for model in models:
            res = run_one(model, cfg)
            tag = f"{model}_{cfg.name}"
            report.write_json(res, a.out / f"{tag}.json")
            (a.out / f"{tag}.txt").write_text("\n".join(
                report.layer_table(res, units=True) + [""] + report.kind_summary(res) + [""]
                + report.totals_lines(res)) + "\n")
            if not a.no_plots:
                report.plot(res, a.out / "plots", tag)
            rows.append({k: res[k] for k in ("model", "cycles", "latency_ms", "fps", "gops", "peak_gops",
                                              "mac_utilization", "dsps", "gops_per_dsp", "dram_mb_per_frame",
                                              "bound", "total_macs")} | {"preset": cfg.name})
            print(f"{cfg.name:8s} {model:8s} {res['fps']:8.1f} FPS  {res['gops']:7.1f} GOPS  "
                  f"{100 * res['mac_utilization']:5.1f}%", flush=True)
    hdr = (f"| preset | model | GMACs | cycles | latency ms | FPS | GOPS (peak) | MAC util | DSPs | GOPS/DSP "
           f"| DRAM MB/frame | bound |")
    lines = [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['model']} | {r['total_macs'] / 1e9:.3f} | {r['cycles']:,} | "
                     f"{r['latency_ms']:.3f} | {r['fps']:.1f} | {r['gops']:.1f} ({r['peak_gops']:.1f}) | "
                     f"{100 * r['mac_utilization']:.1f}% | {r['dsps']} | {r['gops_per_dsp']:.3f} | "
                     f"{r['dram_mb_per_frame']:.2f} | {r['bound']} |")
    (a.out / "summary.md").write_text("\n".join(lines) + "\n")
    (a.out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))
    print(f"wrote {a.out / 'summary.md'} and one .json/.txt per run")
    return 0


def sweep_configs(dsps: int, base: AccelConfig, mults_per_dsp: int = 2):
    """Array shapes whose multipliers fit ``dsps`` DSPs: power-of-two M, N, S, T, the most replicas."""
    pw2 = (4, 8, 16, 32)
    for M, N, S, T in itertools.product(pw2, pw2, (4, 8, 16), (4, 8, 16)):
        per = M * N + S * T
        L = dsps * mults_per_dsp // per
        if L < 1:
            continue
        yield base.replace(name=f"M{M}N{N}+S{S}T{T}xL{L}", mat_lanes=M, mat_mults=N, rmac_rows=S,
                           rmac_cols=T, replicas=L, mults_per_dsp=mults_per_dsp,
                           mat_wbuf_words=max(base.mat_wbuf_words, -(-2560 // N)))


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
    model = _model(a.model)
    if a.dsps < 1:
        raise SystemExit(f"error: --dsps must be positive, got {a.dsps}")
    base = apply_overrides(_preset(a.preset), a.clock_mhz, a.dram_gbps)
    layers = model_layers(model)
    results = []
    opt = Options(split_steps=8)
    for cfg in sweep_configs(a.dsps, base):
        res = simulate(cfg, layers, opt)
        results.append((res["fps"], cfg, res))
    results.sort(key=lambda r: -r[0])
    print(f"{model}: {len(results)} array shapes within {a.dsps} DSPs ({base.mults_per_dsp} int8 MACs/DSP, "
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
    if argv and argv[0] == "perf":
        return cmd_perf(argv[1:])
    if argv and argv[0] == "sweep":
        return cmd_sweep(argv[1:])
    return cmd_report(argv)


if __name__ == "__main__":
    sys.exit(main())
