"""Where a quantized model's noise comes from: the logit SQNR with one group of quantizers on at a time.

    python -m quant.sensitivity --quantized OUT/quantized.pt --data_path DIR [--by block|quantizer]
                                [--max_val N] [--json F]

Every other quantizer is off (float), so each row is that group's noise alone, as it reaches the
logits; the rows' noise powers add up to roughly the whole model's when they are small. (With the
rest of the model quantized instead, any perturbation re-draws every later rounding and each row
reads the same ~20 dB floor on the proxy.) A block's row runs its attention as the hardware does,
log2 divisors included; one more row per LiteMLA gives the part of that which its divisors add (the
noise of q's producers quantized with the divisors less without), not counted again in the shares.
Single quantizers (`--by quantizer`) run without divisors: a k-sum quantized alone then divides in
float, which the hardware never does (a zero divisor is NaN there), so read attention by block.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .evaluate import sqnr_db
from .qmodel import QEfficientViT, QLiteMLA
from .quantizers import ActQuantizer


class _Switch:
    """Saves which quantizers (and divisors) of `qm` are on, turns groups on and off, restores on exit."""

    def __init__(self, qm: QEfficientViT):
        self.acts = {q: q.enabled for q in qm.act_quantizers()}
        self.weights = {op: op.wq.enabled for op in qm.weight_ops() if op.wq is not None}
        self.log2 = {c: c.log2 for c in qm.attn_cores()}

    def only(self, acts=(), weights=False, log2_in=None) -> None:
        """Turn on the given act quantizers (where the model has them on), all weights or none, and the
        log2 divisors of the cores inside module `log2_in` (where the model has them on)."""
        on = set(acts)
        for q, en in self.acts.items():
            q.enabled = en and q in on
        for op, en in self.weights.items():
            op.wq.enabled = en and weights
        inside = set(log2_in.modules()) if log2_in is not None else set()
        for c, en in self.log2.items():
            c.log2 = en and c in inside

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for q, en in self.acts.items():
            q.enabled = en
        for op, en in self.weights.items():
            op.wq.enabled = en
        for c, en in self.log2.items():
            c.log2 = en


def _noise_db(snr_db: float) -> float:
    return 10 ** (-snr_db / 10) if math.isfinite(snr_db) else 0.0


@torch.no_grad()
def sensitivity(qm: QEfficientViT, batches: list[torch.Tensor], by: str = "block",
                progress: bool = True) -> tuple[list[dict], float]:
    """Rows {group, kind, sqnr_db, share}: the logit SQNR (dB) against the float model with only that
    group quantized, and its share of the rows' summed noise power (divisor rows: of their block's
    noise, not added to the sum), sorted worst first; and the whole model's SQNR (everything on)."""
    if by not in ("block", "quantizer"):
        raise ValueError(f"--by {by!r}: choose 'block' or 'quantizer'")

    def logits():
        return torch.cat([qm(x) for x in batches])

    rows = []
    with _Switch(qm) as sw:
        sw.only()
        ref = logits()

        def measure(group, kind, **on):
            sw.only(**on)
            rows.append(dict(group=group, kind=kind, sqnr_db=sqnr_db(ref, logits())))

        steps = 1 + (len(qm.blocks) if by == "block" else len(sw.acts)) + 2 * sum(isinstance(b, QLiteMLA)
                                                                               for b in qm.modules())
        bar = tqdm(total=steps, desc="sensitivity", disable=not progress, leave=False)
        measure("weights", "weights", weights=True)
        if sw.acts.get(qm.input_q):
            measure(qm.input_q.name, "input pixels", acts=[qm.input_q])
        bar.update()
        for blk in qm.blocks:
            mine = [q for q in blk.modules() if isinstance(q, ActQuantizer) and sw.acts.get(q)]
            if by == "block":
                measure(blk.name, "activations", acts=mine, log2_in=blk)
                bar.update()
            else:
                for q in mine:
                    measure(q.name, "activation", acts=[q])
                    bar.update()
            for mla in (m for m in blk.modules() if isinstance(m, QLiteMLA)):
                producers = [mla.qkv.out_q, mla.agg_pw.out_q]   # q's scales, which the divisors use
                sw.only(acts=producers)
                without = sqnr_db(ref, logits())
                sw.only(acts=producers, log2_in=mla)
                with_div = sqnr_db(ref, logits())
                bar.update(2)
                extra = max(_noise_db(with_div) - _noise_db(without), 0.0)
                rows.append(dict(group=f"{mla.name} divisors", kind="log2 divisors",
                                 sqnr_db=-10 * math.log10(extra) if extra > 0 else float("inf")))
        bar.close()
    whole = sqnr_db(ref, logits())   # the switches are back as the model had them
    counted = [r for r in rows if r["kind"] != "log2 divisors" and not math.isnan(r["sqnr_db"])]
    total = sum(_noise_db(r["sqnr_db"]) for r in counted)
    for r in rows:
        r["share"] = _noise_db(r["sqnr_db"]) / total if total > 0 and not math.isnan(r["sqnr_db"]) else 0.0
    return sorted(rows, key=lambda r: (not math.isnan(r["sqnr_db"]), r["sqnr_db"])), whole  # NaN: worst


def format_rows(rows: list[dict], whole_db: float | None = None) -> str:
    lines = [f"{'group':<48} {'kind':<14} {'SQNR dB':>8} {'share':>6}"]
    for r in rows:
        lines.append(f"{r['group']:<48} {r['kind']:<14} {r['sqnr_db']:8.2f} {100 * r['share']:5.1f}%")
    if whole_db is not None:
        lines.append(f"whole model (everything on): {whole_db:.2f} dB")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m quant.sensitivity", description=__doc__.split("\n\n")[0])
    p.add_argument("--quantized", required=True, help="quantized.pt written by main_imagenet.py --output")
    p.add_argument("--data_path", required=True, help="ImageNet-layout folder; its val/ split is used")
    p.add_argument("--by", choices=["block", "quantizer"], default="block")
    p.add_argument("--max_val", type=int, default=132, help="val images, spread evenly over the split")
    p.add_argument("--batch_size", type=int, default=66)
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--no_progress", action="store_true")
    a = p.parse_args(argv)
    from .data import image_folder, loader
    from .export import load_quantized
    if a.max_val < 1 or a.batch_size < 1:
        p.error("--max_val and --batch_size must be >= 1")
    if not Path(a.quantized).is_file():
        p.error(f"--quantized {a.quantized}: no such file (main_imagenet.py --output DIR writes DIR/quantized.pt)")
    try:
        qm, obj = load_quantized(a.quantized)
        val = image_folder(a.data_path, "val", obj["input_size"], obj["crop_ratio"])
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    step = max(1, len(val) // a.max_val)
    val = torch.utils.data.Subset(val, list(range(0, len(val), step))[:a.max_val])
    batches = [x for x, _ in loader(val, a.batch_size)]
    rows, whole = sensitivity(qm, batches, a.by, not a.no_progress)
    print(f"{obj['model']}: logit SQNR vs float with one group quantized at a time, {len(val)} val images")
    print(format_rows(rows, whole))
    if a.json:
        Path(a.json).write_text(json.dumps(dict(model=obj["model"], images=len(val), whole_db=whole, rows=rows),
                                           indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
