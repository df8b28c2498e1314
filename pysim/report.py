"""Text tables, JSON and plots of a pysim result (see pysim/schedule.py:simulate)."""
from __future__ import annotations

import json
from pathlib import Path

PAPER_GOPS = 780.2          # Trio-ViT's published throughput at its budget
PAPER_PEAK_GOPS = 819.2     # (8x8 + 8x8) x 16 multipliers x 2 ops x 200 MHz


def totals_lines(res: dict) -> list[str]:
    c = res["config"]
    return [
        f"model {res.get('model', '?')}  preset {c['name']}: MAT {c['mat_lanes']}x{c['mat_mults']} + "
        f"R-MAC {c['rmac_rows']}x{c['rmac_cols']}, x{c['replicas']} replicas = {c['multipliers']} multipliers "
        f"({c['dsps']} DSPs at {c['mults_per_dsp']}/DSP), {c['clock_mhz']:g} MHz, "
        f"DRAM {res['dram_gbps']:.1f} GB/s ({c['dram_bytes_per_cycle']:g} B/cycle)",
        f"total MACs      {res['total_macs']:,}",
        f"cycles          {res['cycles']:,}  (MAT busy {res['mat_busy']:,}, R-MAC busy {res['rmac_busy']:,}, "
        f"pipeline fill {res['fill_cycles']:,})",
        f"latency         {res['latency_ms']:.3f} ms",
        f"FPS             {res['fps']:.1f}",
        f"GOPS            {res['gops']:.1f} of {res['peak_gops']:.1f} peak  "
        f"(MAC utilization {100 * res['mac_utilization']:.1f}%)",
        f"GOPS/DSP        {res['gops_per_dsp']:.3f}",
        f"DRAM            {res['dram_mb_per_frame']:.2f} MB/frame (weights "
        f"{res['dram_breakdown']['weights'] / 1e6:.2f}, activations in "
        f"{res['dram_breakdown']['act_in'] / 1e6:.2f}, out {res['dram_breakdown']['act_out'] / 1e6:.2f}, "
        f"spills {res['dram_breakdown']['spills'] / 1e6:.2f})",
        f"bound           {res['bound']} ({100 * res['memory_bound_cycle_fraction']:.1f}% of cycles in "
        f"memory-bound groups)",
    ]


def layer_table(res: dict, units: bool = False) -> list[str]:
    hdr = f"{'layer':58s} {'kind':9s} {'engine':20s} {'shape':34s} {'MACs':>11s} {'cycles':>8s} " \
          f"{'util':>6s} {'bound':7s} {'DRAM B':>9s}"
    out = [hdr, "-" * len(hdr)]
    for lay in res["layers"]:
        if lay["engine"] == "unit" and not units:
            continue
        out.append(f"{lay['name'][:58]:58s} {lay['kind']:9s} {lay['engine'][:20]:20s} {lay['shape'][:34]:34s} "
                   f"{lay['macs']:11,d} {lay['cycles']:8,d} {100 * lay['utilization']:5.1f}% "
                   f"{lay['bound']:7s} {lay['dram_bytes']:9,d}")
    return out


def kind_summary(res: dict) -> list[str]:
    """Utilization per layer type (MAC-weighted over the multiplier-cycles each type held)."""
    agg: dict[str, list] = {}
    for lay in res["layers"]:
        if not lay["macs"]:
            continue
        a = agg.setdefault(lay["kind"], [0, 0.0, 0, 0])
        a[0] += lay["macs"]
        a[1] += lay["macs"] / lay["utilization"] if lay["utilization"] else 0.0
        a[2] += 1
        a[3] += lay["bound"] == "memory"
    out = [f"{'type':9s} {'layers':>6s} {'MACs':>13s} {'util':>6s} {'memory-bound':>12s}"]
    for k, (macs, held, n, mem) in sorted(agg.items(), key=lambda kv: -kv[1][0]):
        out.append(f"{k:9s} {n:6d} {macs:13,d} {100 * macs / held:5.1f}% {mem:12d}")
    return out


def kind_utilization(res: dict) -> dict:
    agg: dict[str, list] = {}
    for lay in res["layers"]:
        if lay["macs"] and lay["utilization"]:
            a = agg.setdefault(lay["kind"], [0, 0.0])
            a[0] += lay["macs"]
            a[1] += lay["macs"] / lay["utilization"]
    return {k: m / h for k, (m, h) in agg.items()}


def write_json(res: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")


def plot(res: dict, out_dir: Path, tag: str) -> list[Path]:
    """Per-layer utilization bars and a roofline with every compute layer; returns the PNG paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    comp = [lay for lay in res["layers"] if lay["macs"]]
    cfg = res["config"]
    colors = {"conv": "C0", "pw": "C1", "grouped": "C2", "dw": "C3", "linear": "C4",
              "attn_kv": "C5", "attn_qkv": "C6"}

    fig, ax = plt.subplots(figsize=(max(8, len(comp) * 0.12), 4))
    ax.bar(range(len(comp)), [100 * lay["utilization"] for lay in comp],
           color=[colors.get(lay["kind"], "k") for lay in comp])
    ax.axhline(100 * res["mac_utilization"], color="k", ls="--", lw=1,
               label=f"network {100 * res['mac_utilization']:.1f}%")
    ax.set_xlabel("compute layer (execution order)")
    ax.set_ylabel("MAC utilization of the engines it held (%)")
    ax.set_ylim(0, 105)
    for k, c in colors.items():
        ax.bar([0], [0], color=c, label=k)
    ax.legend(ncol=4, fontsize=7, loc="lower left")
    ax.set_title(f"{res.get('model', '')} on {cfg['name']}: per-layer utilization")
    fig.tight_layout()
    p1 = out_dir / f"{tag}_utilization.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    peak = res["peak_gops"]
    bw = res["dram_gbps"]
    xs = [0.1, 10000]
    ridge = peak / bw
    ax.plot([xs[0], ridge, xs[1]], [xs[0] * bw, peak, peak], "k-", lw=1.5,
            label=f"roof: {peak:.0f} GOPS, {bw:.1f} GB/s")
    clock = cfg["clock_mhz"] * 1e6
    for lay in comp:
        secs = max(lay["cycles"], lay["dram_cycles"]) / clock
        gops = 2 * lay["macs"] / secs / 1e9 if secs else 0
        oi = 2 * lay["macs"] / lay["dram_bytes"] if lay["dram_bytes"] else 5000.0
        ax.scatter(oi, gops, s=12, color=colors.get(lay["kind"], "k"))
    for k, c in colors.items():
        ax.scatter([], [], color=c, label=k, s=12)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("operational intensity (ops per DRAM byte; no DRAM traffic drawn at 5000)")
    ax.set_ylabel("achieved GOPS")
    ax.set_title(f"{res.get('model', '')} on {cfg['name']}: roofline, every compute layer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p2 = out_dir / f"{tag}_roofline.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]
