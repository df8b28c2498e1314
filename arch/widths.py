"""Worst-case accumulator widths of every product type of a graph (golden/SPEC.md section 9).

Bounds assume the SPEC's operand ranges in the configuration's formats
(arch/formats.py): activation codes in ``[0, 2^a - 1]``, zero points in the same
range (so ``|x - z| <= 2^a - 1``), weights ``|w| <= 2^(w-1) - 1``, kv codes
``|kv| <= 2^(a-1) - 1``.  The shapes come from :func:`arch.graph.infer`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .formats import DEFAULT, Formats
from .graph import Graph


def signed_bits(bound: int) -> int:
    """Bits of a two's-complement register holding every value in [-bound, bound]."""
    return max(int(bound).bit_length() + 1, 1)


@dataclass
class Product:
    """One product type in one model: its largest reduction length and magnitude bound."""
    kind: str
    where: str          # the node that attains the worst case
    length: int         # number of products summed
    bound: int          # worst |final accumulator value| (zero point removed)
    raw_bound: int      # worst |partial sum| when the hardware sums raw codes onto a folded bias

    @property
    def bits(self) -> int:
        return signed_bits(self.bound)

    @property
    def raw_bits(self) -> int:
        return signed_bits(self.raw_bound)


MAC_PRODUCT = {"conv": "generic conv", "pw": "pointwise conv", "dw": "depthwise conv", "grouped": "grouped conv",
               "linear": "linear"}
LAYERNORM_VAR = "layernorm C*sum(d^2) (64-bit unit)"


def products(graph: Graph, F: Formats = DEFAULT) -> list[Product]:
    """The worst case of each product type over the nodes of one graph."""
    A, W, KV, T3 = F.act.hi, F.weight.hi, F.kv.hi, F.t3.hi
    worst: dict[str, Product] = {}

    def keep(p: Product):
        if p.kind not in worst or p.bound > worst[p.kind].bound:
            worst[p.kind] = p

    for n in graph.nodes:
        if n.kind in MAC_PRODUCT:
            K = (n.cin // n.groups) * n.k * n.k
            # final value b + sum w (x - z): K products of |w| <= W, |x - z| <= A (bias excluded);
            # raw partial sums: the folded bias' = b - z sum w adds up to K A W more
            keep(Product(MAC_PRODUCT[n.kind], n.name, K, K * A * W, 2 * K * A * W))
        elif n.kind == "attention":
            N, d = n.tokens, n.dim
            # kr <= A, v <= A: sum kr v <= N A^2; the z_v ksum correction keeps |kv_acc| within that
            keep(Product("attention k^T v", n.name, N, N * A * A, N * A * A))
            keep(Product("attention k-sum", n.name, N, N * A, N * A))
            keep(Product("attention q kv (numerator)", n.name, d, d * A * KV, d * A * KV))
            keep(Product("attention q ks (denominator)", n.name, d, d * A * A, d * A * A))
        elif n.kind == "avgpool":
            keep(Product("global avgpool sum", n.name, n.h * n.w, n.h * n.w * A, n.h * n.w * A))
        elif n.kind == "layernorm":
            C = n.cin
            keep(Product(LAYERNORM_VAR, n.name, C, C * C * A * A, C * C * A * A))
            # y = normalised value with F fractional bits: |y| <= sqrt(C - 1) 2^F
            ymax = (math.isqrt(C - 1) + 1) << F.ln_frac_bits
            keep(Product(f"layernorm y (normalised, Q.{F.ln_frac_bits})", n.name, C, ymax, ymax))
    # fixed-width elementwise product (independent of the model)
    h = A * (A + T3)
    keep(Product(f"hardswish k*clamp(k+t3) (t3 < 2^{F.t3.bits})", "every hardswish", 1, h, h))
    return list(worst.values())


def table(graphs: list[Graph], F: Formats = DEFAULT) -> list[dict]:
    rows = []
    for g in graphs:
        for p in products(g, F):
            rows.append(dict(model=g.model.split("-")[0].upper(), kind=p.kind, where=p.where, length=p.length,
                             bound=p.bound, bits=p.bits, raw_bits=p.raw_bits))
    return rows


def markdown(rows: list[dict], resolution: int, F: Formats = DEFAULT) -> str:
    """One row per product type, one column per model: terms / max |value| / bits (raw bits)."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    cell = {(r["model"], r["kind"]): r for r in rows}
    out = [f"Worst case at r{resolution}: |x - z| <= {F.act.hi}, |w| <= {F.weight.hi}, |kv| <= {F.kv.hi}. "
           "Each cell: terms summed,",
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
    out.append("Worst nodes (quantized.pt names): " + "; ".join(
        f"{k}: `{cell[(models[-1], k)]['where']}`" for k in kinds if (models[-1], k) in cell))
    return "\n".join(out)
