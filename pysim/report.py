"""Text tables, JSON and plots of a pysim result (pysim/price.py)."""
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
        f"({c['dsps']} DSP48E2, two products per DSP), {c['clock_mhz']:g} MHz, "
        f"DRAM {res['dram_gbps']:.1f} GB/s ({c['dram_bytes_per_cycle']:g} B/cycle)",
        f"total MACs      {res['total_macs']:,}  ({res['operations']} operations in {len(res['groups'])} groups)",
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


def op_table(res: dict, units: bool = False) -> list[str]:
    hdr = f"{'operation':46s} {'opcode':13s} {'oc':>11s} {'shape':30s} {'MACs':>11s} {'cycles':>8s} " \
          f"{'util':>6s} {'bound':7s} {'DRAM B':>9s}"
    out = [hdr, "-" * len(hdr)]
    for op in res["ops"]:
        if op["engine"] == "UNIT" and not units:
            continue
        oc = f"{op['oc'][0]}:{op['oc'][1]}"
        out.append(f"{op['node'][:46]:46s} {op['opcode']:13s} {oc:>11s} {op['shape'][:30]:30s} "
                   f"{op['macs']:11,d} {op['cycles']:8,d} {100 * op['utilization']:5.1f}% "
                   f"{op['bound']:7s} {op['dram_bytes']:9,d}")
    return out


def kind_summary(res: dict) -> list[str]:
    """Utilization per opcode (MAC-weighted over the multiplier-cycles each held)."""
    agg: dict[str, list] = {}
    for op in res["ops"]:
        if not op["macs"]:
            continue
        a = agg.setdefault(op["opcode"], [0, 0.0, 0, 0])
        a[0] += op["macs"]
        a[1] += op["macs"] / op["utilization"] if op["utilization"] else 0.0
        a[2] += 1
        a[3] += op["bound"] == "memory"
    out = [f"{'opcode':13s} {'ops':>5s} {'MACs':>13s} {'util':>6s} {'memory-bound':>12s}"]
    for k, (macs, held, n, mem) in sorted(agg.items(), key=lambda kv: -kv[1][0]):
        out.append(f"{k:13s} {n:5d} {macs:13,d} {100 * macs / held:5.1f}% {mem:12d}")
    return out


def perf_table(rows: list[dict]) -> list[str]:
    hdr = ("| preset | model | GMACs | cycles | latency ms | FPS | GOPS (peak) | MAC util | DSPs | GOPS/DSP "
           "| DRAM MB/frame | bound |")
    lines = [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['model']} | {r['total_macs'] / 1e9:.3f} | {r['cycles']:,} | "
                     f"{r['latency_ms']:.3f} | {r['fps']:.1f} | {r['gops']:.1f} ({r['peak_gops']:.1f}) | "
                     f"{100 * r['mac_utilization']:.1f}% | {r['dsps']} | {r['gops_per_dsp']:.3f} | "
                     f"{r['dram_mb_per_frame']:.2f} | {r['bound']} |")
    return lines


def write_json(res: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")


def plot(res: dict, out_dir: Path, tag: str) -> list[Path]:
    """Per-layer utilization bars and a roofline with every compute layer; returns the PNG paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    comp = [op for op in res["ops"] if op["macs"]]
    cfg = res["config"]
    colors = {"MAT.CONV": "C0", "RMAC.PW": "C1", "RMAC.DW": "C3", "MAT.LINEAR": "C4",
              "MAT.ATTN_KV": "C5", "MAT.ATTN_QKV": "C6"}

    fig, ax = plt.subplots(figsize=(max(8, len(comp) * 0.12), 4))
    ax.bar(range(len(comp)), [100 * op["utilization"] for op in comp],
           color=[colors.get(op["opcode"], "k") for op in comp])
    ax.axhline(100 * res["mac_utilization"], color="k", ls="--", lw=1,
               label=f"network {100 * res['mac_utilization']:.1f}%")
    ax.set_xlabel("compute operation (issue order)")
    ax.set_ylabel("MAC utilization of the engines it held (%)")
    ax.set_ylim(0, 105)
    for k, c in colors.items():
        ax.bar([0], [0], color=c, label=k)
    ax.legend(ncol=4, fontsize=7, loc="lower left")
    ax.set_title(f"{res.get('model', '')} on {cfg['name']}: per-operation utilization")
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
    for op in comp:
        secs = max(op["cycles"], op["dram_cycles"]) / clock
        gops = 2 * op["macs"] / secs / 1e9 if secs else 0
        oi = 2 * op["macs"] / op["dram_bytes"] if op["dram_bytes"] else 5000.0
        ax.scatter(oi, gops, s=12, color=colors.get(op["opcode"], "k"))
    for k, c in colors.items():
        ax.scatter([], [], color=c, label=k, s=12)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("operational intensity (ops per DRAM byte; no DRAM traffic drawn at 5000)")
    ax.set_ylabel("achieved GOPS")
    ax.set_title(f"{res.get('model', '')} on {cfg['name']}: roofline, every compute operation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p2 = out_dir / f"{tag}_roofline.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]
