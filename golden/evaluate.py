"""`python -m golden eval`: integer-only vs fake-quant accuracy on an ImageNet-layout split.

The integer model (golden/convert.py) sees uint8 pixels after the MIT
transform's resize and center crop; the fake-quant model (rebuilt from the same
quantized.pt by quant.export.load_quantized) sees the same pixels normalised.
Reported: top-1 of both, their top-1 agreement, the largest |logit difference|
in int16 logit LSBs, and the largest accumulator magnitudes next to the SPEC's
worst-case bounds.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from . import convert, execute, widths


def pixel_dataset(data_path: str | Path, split: str, input_size: int, crop_ratio: float):
    """ImageFolder yielding uint8 (3, H, W) pixels after bicubic resize to ceil(size / crop) and center crop."""
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder
    from quant.data import check_split
    d = check_split(data_path, split)
    resize = math.ceil(input_size / crop_ratio)
    tf = T.Compose([T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(input_size),
                    T.PILToTensor()])
    return ImageFolder(str(d), transform=tf)


def normalise(u8: np.ndarray, dtype):
    """The float input the fake-quant model expects (ToTensor + Normalize, computed in float32 like torchvision)."""
    import torch
    from quant.data import IMAGENET_MEAN, IMAGENET_STD
    x = torch.from_numpy(u8).float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x.to(dtype)


def fakequant_reference(path: str | Path, float64: bool):
    """The fake-quant model from quantized.pt; with ``float64`` its weights are pinned to the exported codes.

    Recomputing codes in another precision can flip ties, so the float64
    reference uses ``weight_codes * weight_scale`` with nearest rounding:
    the same codes, evaluated with less float noise.
    """
    import torch
    from quant.export import load_quantized
    qm, obj = load_quantized(path)
    if float64:
        codes = {n["name"]: n for n in obj["nodes"] if "weight_codes" in n}
        qm = qm.double()
        for op in qm.weight_ops():
            n = codes[op.name]
            s = op.wq.scale
            op.weight.data = n["weight_codes"].to(torch.float64).view_as(op.weight) * s
            op.wq.mode = "nearest"
            # The exported bias is the hardware's (bias correction included, which needs the
            # float weights): use it as is instead of recomputing it from the pinned codes.
            op.pin_bias(n["bias"].to(torch.float64))
    return qm.eval(), obj


def spec_bounds(model_name: str) -> dict[str, dict]:
    """SPEC 9 worst cases for this model at its resolution (same computation as `python -m golden widths`)."""
    from quant.models import get_spec
    spec = get_spec(model_name)
    return {p.kind: dict(bound=p.bound, raw_bound=p.raw_bound, bits=p.bits, raw_bits=p.raw_bits)
            for p in widths.products(widths.trace_layers(spec.timm_name, spec.input_size))}


def evaluate(quantized: str | Path, data_path: str | Path, split: str = "val", max_images: int | None = None,
             batch_size: int = 16, float64: bool = True, progress: bool = True, every: int = 1) -> dict:
    import torch
    from torch.utils.data import DataLoader, Subset
    t0 = time.time()
    int_model = convert.from_ir(quantized)
    qm, obj = fakequant_reference(quantized, float64)
    dtype = torch.float64 if float64 else torch.float32
    s_logit = float(obj["tensors"][obj["graph_output"]]["scale"].reshape(-1)[0].abs())
    ds = pixel_dataset(data_path, split, int(obj["input_size"]), float(obj.get("crop_ratio", 1.0)))
    idx = list(range(0, len(ds), max(every, 1)))          # every k-th image spreads a subset over the classes
    if max_images is not None:
        idx = idx[:max_images]
    if len(idx) != len(ds):
        ds = Subset(ds, idx)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    st = execute.Stats()
    n = int_ok = fq_ok = agree = 0
    max_err = 0
    input_code_mismatch = 0
    t_int = 0.0
    for bi, (x, y) in enumerate(loader):
        u8 = x.numpy().astype(np.uint8)
        t = time.time()
        li = execute.run(int_model, u8, stats=st)
        t_int += time.time() - t
        with torch.no_grad():
            xf = normalise(u8, dtype)
            codes = qm.input_q(xf) / qm.input_q.scale.abs().view(1, 3, 1, 1) + qm.input_q.zero_point.view(1, 3, 1, 1)
            input_code_mismatch += int((codes.round().numpy() != u8).sum())
            fq = qm(xf).numpy()
        fq_codes = np.floor(fq / s_logit + 0.5)
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
    bounds = spec_bounds(obj["model"])
    acc = {k: dict(measured=v, layer=st.where[k], spec_bound=bounds.get(k, {}).get("bound"),
                   spec_bits=bounds.get(k, {}).get("bits"), measured_bits=widths.signed_bits(v),
                   fits_int32=v < 2 ** 31)
           for k, v in sorted(st.max_abs.items())}
    return dict(quantized=str(quantized), model=obj["model"], split=split, num_images=n, every=every,
                int_top1=100.0 * int_ok / n, fakequant_top1=100.0 * fq_ok / n, agreement=agree / n,
                agreement_percent=100.0 * agree / n, max_logit_error_lsb=max_err,
                fakequant_dtype="float64" if float64 else "float32", input_code_mismatches=input_code_mismatch,
                accumulators=acc, conversion_notes=int_model["notes"],
                seconds=dict(total=time.time() - t0, integer=t_int, integer_per_image=t_int / max(n, 1)))


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
