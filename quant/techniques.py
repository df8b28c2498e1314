"""The three Trio-ViT techniques, each an exact identity on the float model.

* Channel-wise migration: the input x of each MBConv's depthwise conv becomes
  x / s_c and the depthwise filters W * s_c, with s_c = clip(max_c / r, 0.1, 64)
  and r = max(99th percentile of x, mean of the channel maxima). Channels with
  large ranges no longer set the step of the whole tensor.
* Filter-wise shifting: the input of each MBConv's projecting 1x1 conv is
  centred per channel on its midpoint z_c; conv(x - z) + W z == conv(x). In
  the quantizer this is a per-channel integer zero point (see ActQuantizer).
* Log2 divisor: the attention divisor becomes a power of two (a 4-bit exponent
  code), so the division is a shift (QAttnCore; its range is set here).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch

from .qmodel import QAttnCore, QEfficientViT, QSeq


def mbconvs(qmodel: QEfficientViT) -> list[QSeq]:
    return [b for b in qmodel.blocks if isinstance(b, QSeq) and b.kind == "mbconv"]


class _ChannelStats:
    """Per-channel min/max and a subsample for percentiles of the tensors fed to a module."""

    def __init__(self, generator: torch.Generator):
        self.cmin = self.cmax = None
        self.samples: list[torch.Tensor] = []
        self.generator = generator

    def __call__(self, module, args):
        x = args[0].detach()
        xc = x.transpose(0, 1).reshape(x.shape[1], -1)
        mn, mx = xc.min(dim=1).values, xc.max(dim=1).values
        self.cmin = mn if self.cmin is None else torch.minimum(self.cmin, mn)
        self.cmax = mx if self.cmax is None else torch.maximum(self.cmax, mx)
        flat = x.reshape(-1)
        self.samples.append(flat[torch.randint(0, flat.numel(), (min(flat.numel(), 200_000),),
                                               generator=self.generator)])


@torch.no_grad()
def run_with_pre_hooks(qmodel: QEfficientViT, batches: Iterable[torch.Tensor], hooked: list) -> None:
    """Run the batches through qmodel with forward pre-hooks [(module, hook), ...] installed."""
    hooks = [m.register_forward_pre_hook(h) for m, h in hooked]
    try:
        for x in batches:
            qmodel(x)
    finally:
        for h in hooks:
            h.remove()


@torch.no_grad()
def collect_channel_stats(qmodel: QEfficientViT, batches: Iterable[torch.Tensor],
                          generator: torch.Generator) -> dict:
    """Stats of the depthwise inputs and projection inputs of every MBConv, on the float model.

    The percentile subsample draws from `generator` (the caller's global RNG stays untouched).
    """
    stats, hooked = {}, []
    for blk in mbconvs(qmodel):
        expand, dw, _ = blk.ops
        for key, quantizer in ((f"{blk.name}.dw_in", expand.out_q), (f"{blk.name}.proj_in", dw.out_q)):
            st = stats[key] = _ChannelStats(generator)
            hooked.append((quantizer, st))
    run_with_pre_hooks(qmodel, batches, hooked)
    return stats


@torch.no_grad()
def apply_migration(qmodel: QEfficientViT, stats: dict, clip: tuple[float, float] = (0.1, 64.0)) -> None:
    for blk in mbconvs(qmodel):
        expand, dw, _ = blk.ops
        st = stats[f"{blk.name}.dw_in"]
        cmax = torch.maximum(st.cmax.abs(), st.cmin.abs())
        pct = torch.quantile(torch.cat(st.samples).abs().float()[:1_000_000], 0.99)
        r = torch.maximum(pct, cmax.mean()).clamp(min=1e-8)
        s = (cmax / r).clamp(*clip)
        expand.out_div = s.clone()
        dw.weight.mul_(s.view(-1, 1, 1, 1))


@torch.no_grad()
def apply_shift(qmodel: QEfficientViT, stats: dict) -> None:
    for blk in mbconvs(qmodel):
        _, dw, _ = blk.ops
        st = stats[f"{blk.name}.proj_in"]
        dw.out_q.shift = ((st.cmax + st.cmin) / 2).clone()


@torch.no_grad()
def set_log2_ranges(qmodel: QEfficientViT, batches: Iterable[torch.Tensor], bits: int,
                    clamp: tuple[int, int] | None, frac: int = 0) -> dict[str, tuple[int, int]]:
    """Choose each divisor's exponent window [e_lo, e_lo + 2^bits - 1] (keeping the largest divisors);
    `frac` 1 gives the divisor a mantissa bit ({1, 4/3} 2^e) within it."""
    cores = qmodel.attn_cores()
    for c in cores:
        c.log2, c.log2_bits, c.log2_frac = True, bits, frac
    ranges = {}
    if clamp is not None:
        for c in cores:
            c.e_lo.fill_(clamp[0])
            ranges[c.name] = tuple(clamp)
        return ranges
    for c in cores:
        c.observe_e, c.e_seen = True, []
        c.e_lo.fill_(-(2 ** 20))  # unclamped while observing
        c.log2_bits = 30
    try:
        for x in batches:
            qmodel(x)
    finally:
        for c in cores:
            c.observe_e, c.log2_bits = False, bits
    silent = [c.name for c in cores if not c.e_seen]
    if silent:
        # Low activation bit-widths can round every q . ksum of a branch to 0 (seen at W6A6 in B0's
        # stage 3): the divisor is then 2^e_lo for every pixel (SPEC 5.4), so start the window at
        # 2^0, the smallest non-zero divisor, rather than refuse to quantize the model.
        warnings.warn(f"{len(silent)} attention branch(es) never produced a positive divisor on the "
                      f"calibration images at these bit-widths (their output is mostly zero): "
                      f"{', '.join(silent)}; their divisor window starts at 2^0", stacklevel=3)
    for c in cores:
        lo, hi = (min(c.e_seen), max(c.e_seen)) if c.e_seen else (0, 0)
        e_lo = max(lo, hi - (2 ** bits - 1))
        c.e_lo.fill_(e_lo)
        ranges[c.name] = (e_lo, e_lo + 2 ** bits - 1)
    return ranges


@torch.no_grad()
def apply_bias_correction(qmodel: QEfficientViT, batches: Iterable[torch.Tensor]) -> None:
    """Record each weighted op's per-channel input mean on the float model (QOp.bias_on_grid uses it).

    Not a Trio-ViT technique but a free one for the hardware: it only changes int32 biases.
    """
    sums: dict = {}

    def hook(op, args):
        x = args[0].detach()
        xc = x.transpose(0, 1).reshape(x.shape[1], -1)
        s, n = sums.get(op, (0.0, 0))
        sums[op] = (s + xc.double().sum(1), n + xc.shape[1])

    run_with_pre_hooks(qmodel, batches, [(op, hook) for op in qmodel.weight_ops()])
    for op, (s, n) in sums.items():
        op.in_mean = (s / n).float()
