"""Worst-case accumulator widths of every product type for EfficientViT-B0..B3 (SPEC 9).

Layer shapes come from timm's ``efficientvit_b0..b3`` built on the meta device
(no weights, no memory) and traced with forward hooks at the chosen
resolution.  Bounds assume the SPEC's operand ranges: activation codes in
[0, 2^a - 1], zero points in the same range (so ``|x - z| <= 2^a - 1``),
weights in [-(2^(w-1) - 1), 2^(w-1) - 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

A_MAX = 255          # largest activation code, and largest |x - z|
W_MAX = 127          # largest |weight| (narrow range)
KV_MAX = 127         # kv codes are signed symmetric 8-bit
T3_MAX = (1 << 22) - 1    # rtl/hswish.py: t3_bits = acc_bits - act_bits - 2


def signed_bits(bound: int) -> int:
    """Bits of a two's-complement register holding every value in [-bound, bound]."""
    return max(int(bound).bit_length() + 1, 1)


@dataclass
class Product:
    """One product type in one model: its largest reduction length and magnitude bound."""
    kind: str
    where: str          # the layer that attains the worst case
    length: int         # number of products summed
    bound: int          # worst |final accumulator value| (zero point removed)
    raw_bound: int      # worst |partial sum| when the hardware sums raw codes onto a folded bias

    @property
    def bits(self) -> int:
        return signed_bits(self.bound)

    @property
    def raw_bits(self) -> int:
        return signed_bits(self.raw_bound)


def trace_layers(variant: str, resolution: int) -> list[dict]:
    """Every conv / linear / attention / pool / LayerNorm of a timm EfficientViT with its shapes."""
    import timm
    import torch
    from torch import nn
    from timm.models.efficientvit_mit import LiteMLA

    with torch.device("meta"):
        model = timm.create_model(variant, pretrained=False, num_classes=1000)
    model.eval()
    layers: list[dict] = []

    def hook(name):
        def fn(mod, inp, out):
            x = inp[0]
            if isinstance(mod, nn.Conv2d):
                layers.append(dict(name=name, type="conv", cin=mod.in_channels, cout=mod.out_channels,
                                   k=mod.kernel_size[0] * mod.kernel_size[1], groups=mod.groups,
                                   hw=tuple(out.shape[-2:])))
            elif isinstance(mod, nn.Linear):
                layers.append(dict(name=name, type="linear", cin=mod.in_features, cout=mod.out_features))
            elif isinstance(mod, LiteMLA):
                tokens = x.shape[-2] * x.shape[-1]
                total = mod.qkv.conv.out_channels // 3 * (1 + len(mod.aggreg))
                layers.append(dict(name=name, type="attention", tokens=tokens, d=mod.dim, heads=total // mod.dim))
            elif isinstance(mod, nn.LayerNorm):
                layers.append(dict(name=name, type="layernorm", c=mod.normalized_shape[0]))
            elif type(mod).__name__ == "SelectAdaptivePool2d":
                layers.append(dict(name=name, type="avgpool", hw=x.shape[-2] * x.shape[-1], c=x.shape[1]))
        return fn

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear, LiteMLA, nn.LayerNorm)) or type(mod).__name__ == "SelectAdaptivePool2d":
            mod.register_forward_hook(hook(name))
    with torch.no_grad():
        model(torch.empty(1, 3, resolution, resolution, device="meta"))
    return layers


def conv_kind(layer: dict) -> str:
    if layer["groups"] == 1:
        return "pointwise conv" if layer["k"] == 1 else "generic conv"
    if layer["groups"] == layer["cin"] == layer["cout"]:
        return "depthwise conv"
    return "grouped conv"


def products(layers: list[dict]) -> list[Product]:
    """The worst case of each product type over the layers of one model."""
    worst: dict[str, Product] = {}

    def keep(p: Product):
        if p.kind not in worst or p.bound > worst[p.kind].bound:
            worst[p.kind] = p

    for L in layers:
        t = L["type"]
        if t == "conv" or t == "linear":
            kind = conv_kind(L) if t == "conv" else "linear"
            K = (L["cin"] // L.get("groups", 1)) * L.get("k", 1)
            # final value b + sum w (x - z): K products of |w| <= 127, |x - z| <= 255 (bias excluded)
            # raw partial sums: bias' = b - z sum w adds up to K*255*127 more
            keep(Product(kind, L["name"], K, K * A_MAX * W_MAX, 2 * K * A_MAX * W_MAX))
        elif t == "attention":
            N, d = L["tokens"], L["d"]
            # kr <= 255, v <= 255: sum kr v <= N 255^2; the z_v ksum correction keeps |kv_acc| within that
            keep(Product("attention k^T v", L["name"], N, N * A_MAX * A_MAX, N * A_MAX * A_MAX))
            keep(Product("attention k-sum", L["name"], N, N * A_MAX, N * A_MAX))
            keep(Product("attention q kv (numerator)", L["name"], d, d * A_MAX * KV_MAX, d * A_MAX * KV_MAX))
            keep(Product("attention q ks (denominator)", L["name"], d, d * A_MAX * A_MAX, d * A_MAX * A_MAX))
        elif t == "avgpool":
            keep(Product("global avgpool sum", L["name"], L["hw"], L["hw"] * A_MAX, L["hw"] * A_MAX))
        elif t == "layernorm":
            C = L["c"]
            # V = C sum d^2 - (sum d)^2 <= C^2 255^2 / ... (bounded by C * C * 255^2); int64 in the LN unit
            keep(Product("layernorm C*sum(d^2) (64-bit unit)", L["name"], C, C * C * A_MAX * A_MAX,
                         C * C * A_MAX * A_MAX))
            # y = normalised value with 10 fractional bits (K = 31, F = 10): |y| <= sqrt(C - 1) 2^10
            ymax = (math.isqrt(C - 1) + 1) << 10
            keep(Product("layernorm y (normalised, Q.10)", L["name"], C, ymax, ymax))
    # fixed-width elementwise products (independent of the model)
    h = A_MAX * (A_MAX + T3_MAX)
    keep(Product("hardswish k*clamp(k+t3) (t3 < 2^22)", "every hardswish", 1, h, h))
    return list(worst.values())


def table(variants=("efficientvit_b0", "efficientvit_b1", "efficientvit_b2", "efficientvit_b3"),
          resolution: int = 288) -> list[dict]:
    rows = []
    for v in variants:
        for p in products(trace_layers(v, resolution)):
            rows.append(dict(model=v.replace("efficientvit_", "").upper(), kind=p.kind, where=p.where,
                             length=p.length, bound=p.bound, bits=p.bits, raw_bits=p.raw_bits))
    return rows


def markdown(rows: list[dict], resolution: int) -> str:
    """One row per product type, one column per model: terms / max |value| / bits (raw bits)."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    cell = {(r["model"], r["kind"]): r for r in rows}
    out = [f"Worst case at r{resolution}: |x - z| <= 255, |w| <= 127, |kv| <= 127. Each cell: terms summed,",
           "max |value|, bits of a signed register for the final value (in brackets: for every partial",
           "sum when raw codes are summed onto the folded bias; the bias b itself is data, measured by",
           "`python -m golden eval`).", "",
           "| product | " + " | ".join(models) + " |",
           "| --- |" + " ---: |" * len(models)]
    for k in kinds:
        cells = []
        for m in models:
            r = cell.get((m, k))
            cells.append("-" if r is None else f"{r['length']} / {r['bound']:,} / {r['bits']} ({r['raw_bits']})")
        out.append(f"| {k} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Worst layers (timm names): " + "; ".join(
        f"{k}: `{cell[(models[-1], k)]['where']}`" for k in kinds if (models[-1], k) in cell))
    return "\n".join(out)
