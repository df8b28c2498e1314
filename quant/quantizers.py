"""Fake quantizers: activations (learned steps), weights (AdaRound), and the Lp range search.

Every quantizer describes integer codes exactly as golden/SPEC.md stores them:
activations unsigned `[0, 2^b - 1]` with an integer zero point, weights signed
symmetric `[-(2^(b-1) - 1), 2^(b-1) - 1]` (or unsigned asymmetric in the
reference recipe). The dequantized value is `scale * (code - zero_point)`.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class _FakeQuant(torch.autograd.Function):
    """(clamp(round(x / s) + z, lo, hi) - z) * s with LSQ's gradients, in few passes over x.

    The same values as the plain expression with a straight-through round, but
    autograd's graph of that expression walks a large activation some twenty
    times per step, which dominated reconstruction time on the CPU.
    d/dx: 1 inside the code range, else 0. d/ds: round(x/s) - x/s inside,
    (clamped code - z) outside. z is a constant (shifts are snapped with s detached).
    """

    @staticmethod
    def forward(ctx, x, s, z, lo: int, hi: int):
        xs = x / s
        r = torch.round(xs).add_(z)
        out = r.clamp(lo, hi).sub_(z).mul_(s)
        ctx.save_for_backward(xs, r, s, z)
        ctx.lo, ctx.hi = lo, hi
        return out

    @staticmethod
    def backward(ctx, g):
        xs, r, s, z = ctx.saved_tensors
        inside = (r >= ctx.lo).logical_and_(r <= ctx.hi)
        gx = g * inside if ctx.needs_input_grad[0] else None
        gs = None
        if ctx.needs_input_grad[1]:
            t = torch.where(inside, r - xs, r.clamp(ctx.lo, ctx.hi)).sub_(z).mul_(g)
            gs = t.sum_to_size(s.shape)
        return gx, gs, None, None, None


def fake_quant(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Fake-quantize x (s, z broadcast to it); differentiable in x and s (LSQ)."""
    if torch.is_grad_enabled() and (x.requires_grad or s.requires_grad):
        return _FakeQuant.apply(x, s, z.to(x.dtype), lo, hi)
    return (torch.round(x / s) + z).clamp(lo, hi).sub_(z).mul_(s)


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


# --- Lp range search ------------------------------------------------------------------

def lp_search(x: torch.Tensor, bits: int, signed: bool, p: float, steps: int = 40,
              min_shrink: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row range search: x is (R, K); returns scale (R,) and zero point (R,) minimising E|x - Q(x)|^p.

    Candidates shrink the observed range [min, max] (asymmetric) or [-amax, amax]
    (symmetric) uniformly from 1.0 to `min_shrink`.
    """
    lo, hi = code_range(bits, signed)
    x = x.float()
    xmin = x.min(dim=1).values.clamp(max=0)
    xmax = x.max(dim=1).values.clamp(min=0)
    fr = torch.linspace(1.0, min_shrink, steps, device=x.device)
    best_err = torch.full((x.shape[0],), float("inf"), device=x.device)
    best_s = torch.ones_like(best_err)
    best_z = torch.zeros_like(best_err)
    for f in fr:
        if signed:
            amax = torch.maximum(-xmin, xmax) * f
            s = (amax / hi).clamp(min=1e-8)
            z = torch.zeros_like(s)
        else:
            mn, mx = xmin * f, xmax * f
            s = ((mx - mn) / (hi - lo)).clamp(min=1e-8)
            z = (lo - mn / s).round().clamp(lo, hi)
        q = (torch.round(x / s[:, None]) + z[:, None]).clamp(lo, hi)
        err = ((q - z[:, None]) * s[:, None] - x).abs().pow(p).mean(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s, best_s)
        best_z = torch.where(better, z, best_z)
    return best_s, best_z


# --- activations ------------------------------------------------------------------------

class ActQuantizer(nn.Module):
    """Activation fake quantizer with a learnable step (LSQ-style) and a fixed integer zero point.

    `groups` parameter entries broadcast to the tensor through `bshape` (e.g.
    (1, C, 1, 1) for per-channel, (1, H, 1, D) for the per-column k^T v scale)
    or, with `channel_index`, entry `channel_index[c]` serves channel c of dim 1
    (q/k/v channel groups). A per-channel integer `zp_offset` implements
    filter-wise shifting (see techniques.py). Observing and calibrating subsample
    with `generator`, which the caller sets (one per quantize() call, seeded from
    its config) so that every call draws the same values.
    """

    def __init__(self, name: str, bits: int = 8, signed: bool = False, groups: int = 1,
                 bshape: tuple[int, ...] | None = None, channel_index: torch.Tensor | None = None,
                 min_zero: bool = False, floor: float | None = None):
        super().__init__()
        self.name, self.bits, self.signed = name, bits, signed
        self.groups, self.bshape = groups, bshape
        self.min_zero = min_zero  # values known >= 0 (post-ReLU sums): zero point fixed at 0
        # Values below `floor` all mean the same to the consumer (hardswish is 0 below -3):
        # the range search sees them clamped there instead of stretching the range for them.
        self.floor = floor
        self.scale = nn.Parameter(torch.ones(groups))
        self.register_buffer("zero_point", torch.zeros(groups))
        self.register_buffer("channel_index", channel_index if channel_index is not None else torch.zeros(0, dtype=torch.long))
        self.register_buffer("shift", torch.zeros(0))  # per-channel real-valued centre (filter-wise shifting)
        self.enabled = False
        self.observing = False
        self.generator: torch.Generator | None = None
        self._obs: list[torch.Tensor] = []

    # -- shapes
    def _view(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.channel_index.numel():
            v = v[self.channel_index]
            return v.view(1, -1, *([1] * (x.dim() - 2)))
        if self.groups == 1:
            return v.view([1] * x.dim()) if x.dim() else v
        return v.view(self.bshape)

    def zero_points(self, x_dim: int = 4) -> torch.Tensor:
        """The integer zero point of every channel, shifting included (used by export)."""
        return self.zero_point if not self.shift.numel() else self.zero_point - torch.round(self.shift / self.scale.detach())

    @property
    def code_range(self) -> tuple[int, int]:
        return code_range(self.bits, self.signed)

    def channel_scales(self) -> torch.Tensor:
        """Scale of every channel (dim 1) of a tensor this quantizer produces; per tensor gives (1,)."""
        s = self.scale.abs()
        if self.channel_index.numel():
            return s[self.channel_index]
        if self.groups == 1:
            return s.view(1)
        if self.bshape is not None and len(self.bshape) >= 2 and self.bshape[1] == self.groups:
            return s
        raise ValueError(f"{self.name}: no per-channel scale for a tensor grouped as {self.bshape}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self._observe(x)
        if not self.enabled:
            return x
        lo, hi = self.code_range
        s = self._view(self.scale, x).abs().clamp(min=1e-8)
        z = self._view(self.zero_point, x)
        if self.shift.numel():
            # Filter-wise shifting: channel c is centred on its own midpoint, snapped to the grid,
            # which is the same as a per-channel integer zero point.
            z = z - torch.round(self.shift.view(1, -1, *([1] * (x.dim() - 2))) / s.detach())
        return fake_quant(x, s, z, lo, hi)

    # -- calibration
    def _observe(self, x: torch.Tensor, cap: int = 1 << 16) -> None:
        x = x.detach().float()
        if self.shift.numel():
            x = x - self.shift.view(1, -1, *([1] * (x.dim() - 2)))
        rows = self._rows(x)                       # (groups, K)
        k = max(1, cap // self.groups)
        if rows.shape[1] > k:
            idx = torch.randint(0, rows.shape[1], (k,), generator=self._draws())
            rows = torch.cat([rows[:, idx], rows.min(1, keepdim=True).values, rows.max(1, keepdim=True).values], 1)
        self._obs.append(rows)

    def _draws(self) -> torch.Generator:
        if self.generator is None:  # torch's global RNG would make results depend on the caller's state
            raise RuntimeError(f"activation quantizer {self.name}: set .generator before subsampling")
        return self.generator

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """The values each parameter entry sees, one row per entry (entries see equally many)."""
        if self.groups == 1:
            return x.reshape(1, -1)
        if self.channel_index.numel():
            xc = x.transpose(0, 1).reshape(x.shape[1], -1)
            return xc[torch.argsort(self.channel_index, stable=True)].reshape(self.groups, -1)
        gdims = [i for i, d in enumerate(self.bshape) if d != 1]
        rest = [i for i in range(x.dim()) if i not in gdims]
        return x.permute(gdims + rest).reshape(self.groups, -1)

    def calibrate(self, p: float, max_samples: int = 1 << 15) -> None:
        """Fit scale and zero point to everything observed (Lp search, p = `p`), all groups at once."""
        if not self._obs:
            raise RuntimeError(f"activation quantizer {self.name} saw no data during calibration")
        x = torch.cat(self._obs, dim=1)
        self._obs.clear()
        k = max_samples // self.groups + 2
        if x.shape[1] > k:  # subsample, but keep the extremes: they bound the search
            idx = torch.randint(0, x.shape[1], (k - 2,), generator=self._draws())
            x = torch.cat([x[:, idx], x.min(1, keepdim=True).values, x.max(1, keepdim=True).values], 1)
        if self.min_zero:
            x = x.clamp(min=0)
        if self.floor is not None:
            x = x.clamp(min=self.floor)
        s, z = lp_search(x, self.bits, self.signed, p)
        self.scale.data.copy_(s)
        self.zero_point.copy_(z)

    def extra_repr(self):
        return f"{self.name}, bits={self.bits}, signed={self.signed}, groups={self.groups}"


# --- weights ------------------------------------------------------------------------------

class WeightQuantizer(nn.Module):
    """Per-output-channel (or per-tensor) weight quantizer with AdaRound.

    mode 'nearest': round to nearest; 'soft': AdaRound's rectified sigmoid
    (training); 'hard': AdaRound's learned decision (after reconstruction).
    """

    ZETA, GAMMA = 1.1, -0.1

    def __init__(self, weight: torch.Tensor, bits: int, symmetric: bool, channel_wise: bool, p: float):
        super().__init__()
        self.bits, self.symmetric, self.channel_wise = bits, symmetric, channel_wise
        c = weight.shape[0]
        rows = weight.detach().reshape(c, -1) if channel_wise else weight.detach().reshape(1, -1)
        s, z = lp_search(rows, bits, signed=symmetric, p=p)
        shape = (-1,) + (1,) * (weight.dim() - 1)
        self.register_buffer("scale", s.view(shape) if channel_wise else s.view([1] * weight.dim()))
        self.register_buffer("zero_point", z.view_as(self.scale))
        self.alpha: nn.Parameter | None = None
        self.mode = "nearest"
        self.enabled = False

    @property
    def code_range(self):
        return code_range(self.bits, self.symmetric)

    def init_adaround(self, weight: torch.Tensor) -> None:
        frac = weight.detach() / self.scale - torch.floor(weight.detach() / self.scale)
        # Invert the rectified sigmoid so the soft value starts at the real fraction.
        alpha = -torch.log((self.ZETA - self.GAMMA) / (frac - self.GAMMA) - 1)
        self.alpha = nn.Parameter(alpha)
        self.mode = "soft"

    def h(self) -> torch.Tensor:
        return torch.clamp(torch.sigmoid(self.alpha) * (self.ZETA - self.GAMMA) + self.GAMMA, 0, 1)

    def round_loss(self, b: float) -> torch.Tensor:
        return (1 - (2 * self.h() - 1).abs().pow(b)).sum()

    def codes(self, weight: torch.Tensor) -> torch.Tensor:
        lo, hi = self.code_range
        w = weight / self.scale
        if self.mode == "nearest" or self.alpha is None:
            q = torch.round(w)
        elif self.mode == "soft":
            q = torch.floor(w.detach()) + self.h()
        else:
            q = torch.floor(w) + (self.alpha >= 0).float()
        return (q + self.zero_point).clamp(lo, hi)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        return (self.codes(weight) - self.zero_point) * self.scale

    def harden(self) -> None:
        if self.alpha is not None:
            self.mode = "hard"
