"""Human-readable report of a quantization run (CLI, demo and benchmarks print the same one)."""
from __future__ import annotations


def _row(cells, widths):
    return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))


def format_report(r: dict) -> str:
    bits = f"W{r['n_bits_w']}A{r['n_bits_a'] if r.get('act_quant', True) else 32}"
    lines = [f"== Trio-ViT PTQ report: {r['model']} {bits}, recipe {r.get('recipe', '?')}, "
             f"techniques: {', '.join(r['techniques']) or 'none (vanilla)'} ==",
             f"calibration images {r.get('num_samples')}, iters_w {r.get('iters_w')}, iters_a {r.get('iters_a')}, "
             f"processes {r.get('world_size', 1)}"]
    w = (22, 8, 8, 20)
    lines.append(_row(("model", "top-1", "top-5", "agreement w/ float"), w))
    lines.append(_row(("float", f"{r['fp_top1']:.2f}", f"{r['fp_top5']:.2f}", "-"), w))
    for key, name in (("wq", "weight-only"), ("quant", "quantized " + bits)):
        if f"{key}_top1" in r:
            lines.append(_row((name, f"{r[f'{key}_top1']:.2f}", f"{r[f'{key}_top5']:.2f}",
                               f"{r[f'{key}_agreement']:.2f}%"), w))
    if "quant_top1" in r:
        lines.append(f"top-1 drop vs float: {r['fp_top1'] - r['quant_top1']:.2f} points")
    sq = r.get("block_sqnr_db") or {}
    if sq:
        lines.append("output SQNR per block (dB, float vs quantized, end to end):")
        for name, v in sq.items():
            bar = "#" * max(0, min(40, int(v)))
            lines.append(f"  {name:32s} {v:7.2f}  {bar}")
    if r.get("log2_ranges"):
        lines.append("divisor exponent windows (integer units): " +
                     ", ".join(f"{k.split('.')[-1]}@{k.rsplit('.', 2)[0]}: [{lo}, {hi}]"
                               for k, (lo, hi) in r["log2_ranges"].items()))
    t = r.get("timing") or {}
    if "seconds" in r:
        lines.append(f"wall time {r['seconds']:.1f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in t.items()) + ")")
    return "\n".join(lines)
