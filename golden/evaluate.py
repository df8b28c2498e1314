"""`python -m golden eval`: integer-only vs fake-quant accuracy on an ImageNet-layout split.

The integer model (golden/convert.py) sees uint8 pixels after the MIT
transform's resize and center crop; the fake-quant reference
(golden/reference.py: the IR's real-valued semantics in float64, weights
pinned to the exported codes) sees the same pixels.  Reported: top-1 of both,
their top-1 agreement, the largest |logit difference| in logit LSBs, and the
largest accumulator magnitudes next to the SPEC's worst-case bounds for this
model's own graph (arch/widths.py).

The integer model runs on golden/fast.py (torch; bit for bit golden/execute.py,
held to it by tests/test_golden_fast.py); ``reference_ops=True``
(``--reference_ops``) runs golden/execute.py + ops.py themselves, the slow
definition.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from arch import graph as arch_graph
from arch import widths

from . import convert, execute, fast
from .images import pixel_folder
from .reference import Reference


def spec_bounds(ir: dict) -> dict[str, dict]:
    """SPEC 9 worst cases for this model's graph at its resolution."""
    return {p.kind: dict(bound=p.bound, raw_bound=p.raw_bound, bits=p.bits, raw_bits=p.raw_bits)
            for p in widths.products(arch_graph.infer(ir))}


def evaluate(quantized: str | Path, data_path: str | Path, split: str = "val", max_images: int | None = None,
             batch_size: int = 16, progress: bool = True, every: int = 1, reference_ops: bool = False) -> dict:
    from torch.utils.data import DataLoader, Subset
    t0 = time.time()
    ir = convert.read_ir(quantized)
    int_model = convert.from_ir(ir)
    ref = Reference(ir)
    ds = pixel_folder(data_path, split, int(ir["input_size"]), float(ir.get("crop_ratio", 1.0)))
    idx = list(range(0, len(ds), max(every, 1)))          # every k-th image spreads a subset over the classes
    if max_images is not None:
        idx = idx[:max_images]
    if len(idx) != len(ds):
        ds = Subset(ds, idx)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    run_int = execute.run if reference_ops else fast.run
    st = execute.Stats()
    n = int_ok = fq_ok = agree = 0
    max_err = 0
    t_int = t_ref = 0.0
    for x, y in loader:
        u8 = x.numpy().astype(np.uint8)
        t = time.time()
        li = run_int(int_model, u8, stats=st)
        t_int += time.time() - t
        t = time.time()
        fq_codes = ref(u8)
        t_ref += time.time() - t
        yv = y.numpy()
        pi, pf = li.argmax(1), fq_codes.argmax(1)
        n += len(yv)
        int_ok += int((pi == yv).sum())
        fq_ok += int((pf == yv).sum())
        agree += int((pi == pf).sum())
        max_err = max(max_err, int(np.abs(li - fq_codes).max()))
        if progress:
            print(f"\r  {n}/{len(ds)} images: int top-1 {100 * int_ok / n:.2f}  fake-quant {100 * fq_ok / n:.2f}  "
                  f"agreement {100 * agree / n:.2f}%", end="", flush=True)
    if progress:
        print()
    bounds = spec_bounds(ir)
    acc = {k: dict(measured=v, layer=st.where[k], spec_bound=bounds.get(k, {}).get("bound"),
                   spec_bits=bounds.get(k, {}).get("bits"), measured_bits=widths.signed_bits(v),
                   fits_int32=v < 2 ** 31)
           for k, v in sorted(st.max_abs.items())}
    return dict(quantized=str(quantized), model=ir["model"], split=split, num_images=n, every=every,
                int_top1=100.0 * int_ok / n, fakequant_top1=100.0 * fq_ok / n, agreement=agree / n,
                agreement_percent=100.0 * agree / n, max_logit_error_lsb=max_err, fakequant_dtype="float64",
                macs_per_image=st.macs // max(n, 1), accumulators=acc, conversion_notes=int_model["notes"],
                seconds=dict(total=time.time() - t0, integer=t_int, integer_per_image=t_int / max(n, 1),
                             reference=t_ref),
                integer_executor="golden.execute (golden/ops.py)" if reference_ops else "golden.fast")


def write(result: dict, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = out / "golden.json"
    p.write_text(json.dumps(result, indent=1))
    return p


def summary(r: dict) -> str:
    lines = [f"golden eval of {r['quantized']} ({r['model']}, {r['split']}, {r['num_images']} images)",
             f"  integer-only top-1   {r['int_top1']:.2f}",
             f"  fake-quant top-1     {r['fakequant_top1']:.2f}  ({r['fakequant_dtype']})",
             f"  agreement            {r['agreement_percent']:.2f}%",
             f"  max logit error      {r['max_logit_error_lsb']} LSB (int16 logits)",
             "  accumulators: measured max |value| vs SPEC worst case",
             "    | product | measured | bits | SPEC bound | SPEC bits | layer |",
             "    | --- | ---: | ---: | ---: | ---: | --- |"]
    for k, a in r["accumulators"].items():
        b = "-" if a["spec_bound"] is None else f"{a['spec_bound']:,}"
        lines.append(f"    | {k} | {a['measured']:,} | {a['measured_bits']} | {b} | {a['spec_bits'] or '-'} | "
                     f"`{a['layer']}` |")
    for note in r["conversion_notes"]:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
