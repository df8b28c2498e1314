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

Beyond the paper, also exact identities that cost the hardware nothing:

* Residual-stream equalization: each residual stream (the tensors joined by
  residual adds, from the op that starts it to the convs that read it) is
  divided per channel by d_c. Its producers take d as their ``out_div``
  (folded into their per-channel requantization), its readers' filters are
  multiplied by d per input channel, and the adds see both inputs scaled
  alike. d_c = a_c^alpha / w_c^(1 - alpha) (a_c the channel's largest
  magnitude on the stream, w_c its readers' largest weight), so channels with
  large ranges no longer set the step of every stream tensor: on the proxy the
  stem's output channels span 0.4 to 33 and its per-tensor residual sum alone
  cost 17 dB of logit SQNR.
* Projection-input equalization: channel-wise migration for each MBConv's
  projecting 1x1 conv. Its input (the depthwise output) is divided per
  channel by d_c (the depthwise conv's ``out_div``) and the projection's
  input columns multiplied by it, d_c balanced like the streams' against the
  projection's weights; filter-wise shifting then centres the scaled channels.
* Head equalization: ReLU linear attention is unchanged when one head's q or
  k is multiplied by a positive constant (numerator and divisor both scale),
  and one head's v gain is undone by the projection's input columns. LiteMLA's
  qkv output has one scale each for q, k and v, so each head's q, k and v are
  scaled up to the largest head's range, folded into the qkv conv's rows (the
  aggregation branch's depthwise and grouped convs carry the gains through
  per head) and the projection's columns.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from .qmodel import QAttnCore, QEfficientViT, QHead, QLiteMLA, QOp, QSeq
from .quantizers import ActQuantizer


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
def input_absmax(qmodel: QEfficientViT, batches: Iterable[torch.Tensor],
                 watched: dict) -> dict:
    """Per key of ``watched`` (key -> modules), the largest magnitude of each channel of those modules'
    inputs over the batches."""
    amax: dict = {}

    def observe(key):
        def hook(_, args):
            x = args[0].detach()
            m = x.abs().transpose(0, 1).reshape(x.shape[1], -1).amax(1)
            amax[key] = m if key not in amax else torch.maximum(amax[key], m)
        return hook
    run_with_pre_hooks(qmodel, batches, [(m, observe(k)) for k, mods in watched.items() for m in mods])
    return amax


def column_absmax(op: QOp) -> torch.Tensor:
    """A dense op's largest weight magnitude per input channel."""
    return op.weight.abs().transpose(0, 1).flatten(1).amax(1)


def balance(a: torch.Tensor, w: torch.Tensor, alpha: float, clip: tuple[float, float]) -> torch.Tensor:
    """Per-channel divisors d = a^alpha / w^(1 - alpha) for activation ranges a and reader weight ranges w,
    scaled to geometric mean 1 (the tensor keeps its overall size) and clipped."""
    d = a.clamp(min=1e-8).pow(alpha) / w.clamp(min=1e-8).pow(1 - alpha)
    return (d / d.log().mean().exp()).clamp(*clip)


def set_out_div(op: QOp, d: torch.Tensor) -> None:
    """Give ``op`` its per-channel output divisor; one op takes one (two techniques would not compose)."""
    if op.out_div.numel():
        raise RuntimeError(f"{op.name} already divides its output per channel")
    op.out_div = d.clone()


@dataclass
class ResidualStream:
    """Tensors joined by residual adds: the ops whose outputs enter it, the quantizers of its tensors
    and the ops that read it (depthwise readers take d on their own filters, dense ones on input columns)."""
    producers: list[QOp] = field(default_factory=list)
    tensors: list[ActQuantizer] = field(default_factory=list)
    readers: list[QOp] = field(default_factory=list)


def residual_streams(qmodel: QEfficientViT) -> list[ResidualStream]:
    """The streams with at least one residual add (a tensor read by one op only gains nothing)."""
    streams: list[ResidualStream] = []
    cur: ResidualStream | None = None
    for blk in qmodel.blocks:
        if isinstance(blk, QSeq):
            first, last = blk.ops[0], blk.ops[-1]
            if cur is not None:
                cur.readers.append(first)
            if blk.add is None:  # a new stream starts at this block's output
                cur = ResidualStream([last], [last.out_q])
                streams.append(cur)
            elif cur is not None:
                cur.producers.append(last)
                cur.tensors += [last.out_q, blk.add.out_q]
        elif isinstance(blk, QLiteMLA):
            cur.readers.append(blk.qkv)
            cur.producers.append(blk.proj)
            cur.tensors += [blk.proj.out_q, blk.add.out_q]
        elif isinstance(blk, QHead):
            cur.readers.append(blk.in_conv)
            cur = None
    return [st for st in streams if len(st.producers) > 1]


@torch.no_grad()
def apply_stream_equalization(qmodel: QEfficientViT, batches: Iterable[torch.Tensor], alpha: float = 1.0,
                              clip: tuple[float, float] = (1 / 64, 64.0)) -> list[torch.Tensor]:
    """Divide every residual stream by d per channel (see the module docstring); returns each stream's d."""
    streams = residual_streams(qmodel)
    amax = input_absmax(qmodel, batches, {i: st.tensors for i, st in enumerate(streams)})
    out = []
    for i, st in enumerate(streams):
        dense = [op for op in st.readers if op.groups == 1]
        w = torch.stack([column_absmax(op) for op in dense]).amax(0) if dense else torch.ones_like(amax[i])
        d = balance(amax[i], w, alpha, clip)
        for op in st.producers:
            set_out_div(op, d)
        for op in st.readers:  # convs: dense ones scale input columns, a depthwise one its own filters
            op.weight.mul_(d.view(1, -1, 1, 1) if op.groups == 1 else d.view(-1, 1, 1, 1))
        out.append(d)
    return out


@torch.no_grad()
def apply_head_equalization(qmodel: QEfficientViT, batches: Iterable[torch.Tensor],
                            max_gain: float = 64.0) -> dict[str, torch.Tensor]:
    """Scale each LiteMLA head's q, k and v to the largest head's range (see the module docstring);
    returns each block's gains, (heads, 3)."""
    blocks = [b for b in qmodel.blocks if isinstance(b, QLiteMLA)]
    amax = input_absmax(qmodel, batches, {b.name: [b.qkv.out_q] for b in blocks})
    gains = {}
    for b in blocks:
        h, d = b.heads, b.dim
        a = amax[b.name].view(h, 3, d).amax(2).clamp(min=1e-8)       # channels: per head [q k v], dim each
        g = (a.amax(0, keepdim=True) / a).clamp(max=max_gain)        # (heads, 3), >= 1
        gc = g[:, :, None].expand(h, 3, d).reshape(-1)
        b.qkv.weight.mul_(gc.view(-1, 1, 1, 1))
        for op in (b.qkv, b.agg_dw, b.agg_pw):  # agg_dw is depthwise and agg_pw grouped per (head, q/k/v)
            op.bias.mul_(gc)
        v = g[:, 2][:, None].expand(h, d).reshape(-1).repeat(len(b.cores))  # attention output: (branch, head, dim)
        b.proj.weight.div_(v.view(1, -1, 1, 1))
        gains[b.name] = g
    return gains


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
def apply_projection_equalization(qmodel: QEfficientViT, stats: dict, alpha: float = 1.0, centred: bool = True,
                                  clip: tuple[float, float] = (1 / 64, 64.0)) -> None:
    """Each MBConv's projection input divided per channel (see the module docstring). ``stats`` are
    collect_channel_stats'; their projection-input ranges are rescaled to match, for apply_shift.
    ``centred``: balance the channels' half ranges (filter-wise shifting centres them), else their maxima."""
    for blk in mbconvs(qmodel):
        _, dw, proj = blk.ops
        st = stats[f"{blk.name}.proj_in"]
        if centred:  # half ranges; a channel's midpoint over 64 of them would leave the int16 zero point
            r = torch.maximum((st.cmax - st.cmin) / 2, ((st.cmax + st.cmin) / 2).abs() / 64)
        else:
            r = torch.maximum(st.cmax.abs(), st.cmin.abs())
        d = balance(r, column_absmax(proj), alpha, clip)
        set_out_div(dw, d)
        proj.weight.mul_(d.view(1, -1, 1, 1))
        st.cmin, st.cmax = st.cmin / d, st.cmax / d


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


def _linear_output_means(block: torch.nn.Module, ops: list[QOp], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per output channel, the mean of each op's linear output (bias added, before any activation)
    when `block` runs on `inputs`."""
    sums: list = [0.0] * len(ops)
    counts = [0] * len(ops)

    def probe(i, linear_part):
        def run(x, w):
            y = linear_part(x, w)
            yc = y.transpose(0, 1).reshape(y.shape[1], -1)
            sums[i] = sums[i] + yc.double().sum(1)
            counts[i] += yc.shape[1]
            return y
        return run

    for i, op in enumerate(ops):
        op.linear_part = probe(i, op.linear_part)  # an instance attribute shadows the method
    try:
        for x in inputs:
            block(x)
    finally:
        for op in ops:
            del op.linear_part
    return [(s / n).float() for s, n in zip(sums, counts)]


@torch.no_grad()
def apply_output_bias(qmodel: QEfficientViT, fp_model: QEfficientViT, batches: Iterable[torch.Tensor],
                      progress: bool = False) -> None:
    """Empirical bias correction: every weighted op, in execution order, adds to its bias the per-channel
    mean by which its linear output, with every quantizer before it on, misses the float model's.

    Rounding and clipping of activations (hardswish's negative tail, the log2 divisor, ranges clipped by
    the Lp search) shift channel means, and the shifts add up along the network; each correction sees
    the ones before it. Only int32 biases change (QOp.bias_delta, rounded to the bias grid on export).
    """
    xq = [qmodel.input_q(x) for x in batches]
    xf = [fp_model.input_q(x) for x in batches]
    blocks = list(zip(qmodel.blocks, fp_model.blocks))
    for qb, fb in tqdm(blocks, desc="output bias", disable=not progress, leave=False):
        ops = [m for m in qb.modules() if isinstance(m, QOp)]
        fops = [m for m in fb.modules() if isinstance(m, QOp)]
        targets = _linear_output_means(fb, fops, xf)
        for op, target in zip(ops, targets):
            got = _linear_output_means(qb, [op], xq)[0]
            delta = target - got
            op.bias_delta = (op.bias_delta if op.bias_delta.numel() else torch.zeros_like(op.bias)) + delta
        xq = [qb(x) for x in xq]
        xf = [fb(x) for x in xf]
