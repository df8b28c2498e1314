"""Human-readable report of a quantization run (CLI, demo and benchmarks print the same one).

With activations quantized under the hardware recipe the quantized row is the integer model
(golden/convert.py, run bit-exactly by golden/fast.py): what the accelerator computes. The float32
fake-quant model, which the quantizer optimises, follows it on its own row.
"""
from __future__ import annotations


def _row(cells, widths):
    return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}%"


def format_report(r: dict) -> str:
    bits = f"W{r['n_bits_w']}A{r['n_bits_a'] if r.get('act_quant', True) else 32}"
    integer = bool(r.get("integer_model"))
    lines = [f"== Trio-ViT PTQ report: {r['model']} {bits}, recipe {r.get('recipe', '?')}, "
             f"techniques: {', '.join(r['techniques']) or 'none (vanilla)'} ==",
             f"calibration images {r.get('num_samples')}, iters_w {r.get('iters_w')}, iters_a {r.get('iters_a')}, "
             f"processes {r.get('world_size', 1)}, {r.get('n_val', '?')} val images"]
    if "corrections" in r:  # results.json from before they were recorded has no such key
        lines.append(f"hardware-free corrections: {', '.join(r['corrections']) or 'none'}")
    w = (40, 8, 8, 20)
    lines.append(_row(("model", "top-1", "top-5", "agreement w/ float"), w))
    lines.append(_row(("float", f"{r['fp_top1']:.2f}", f"{r['fp_top5']:.2f}", "-"), w))
    rows = []
    if "quant_top1" in r:
        if integer:
            rows.append((f"quantized {bits} (integer, the hardware)", "quant"))
            if "fakequant_top1" in r:
                rows.append((f"float32 fake-quant {bits}", "fakequant"))
        else:
            rows.append((f"quantized {bits} (float32 fake-quant)", "quant"))
    if "wq_top1" in r:
        rows.append((f"weight-only W{r['n_bits_w']}A32 (fake-quant)", "wq"))
    for name, key in rows:
        lines.append(_row((name, f"{r[f'{key}_top1']:.2f}", f"{r[f'{key}_top5']:.2f}",
                           _pct(r.get(f"{key}_agreement"))), w))
    if integer:
        sq = r.get("int_logit_sqnr_db")
        lines.append(f"integer vs float32 fake-quant top-1 agreement {_pct(r.get('agreement_int_vs_fakequant'))}; "
                     f"integer logit SQNR vs float " + ("-" if sq is None else f"{sq:.2f} dB"))
    if "quant_top1" in r:
        what = "integer model" if integer else "float32 fake-quant"
        lines.append(f"top-1 drop vs float: {r['fp_top1'] - r['quant_top1']:.2f} points ({what})")
    if not integer and r.get("integer_model_reason"):
        lines.append(f"integer model (the hardware's arithmetic) not evaluated: {r['integer_model_reason']}")
    sq = r.get("block_sqnr_db") or {}
    if sq:
        lines.append("output SQNR per block (dB, float vs float32 fake-quant, end to end):")
        for name, v in sq.items():
            bar = "#" * max(0, min(40, int(v)))
            lines.append(f"  {name:32s} {v:7.2f}  {bar}")
    if r.get("log2_ranges"):
        lines.append("divisor exponent windows (integer units): " +
                     ", ".join(f"{k.split('.')[-1]}@{k.rsplit('.', 2)[0]}: [{lo}, {hi}]"
                               for k, (lo, hi) in r["log2_ranges"].items()))
    for note in r.get("integer_conversion_notes") or []:
        lines.append(f"integer conversion note: {note}")
    t = r.get("timing") or {}
    if "seconds" in r:
        lines.append(f"wall time {r['seconds']:.1f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in t.items()) + ")")
    return "\n".join(lines)
