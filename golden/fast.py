"""Fast executor of the integer model: the same integers as golden/execute.py, computed with torch.

golden/execute.py runs the integer model (golden/convert.py) op by op through golden/ops.py: numpy
int64, every range checked, every call recordable as a golden vector. That is the definition of the
hardware, and slow (about 10 images/s for the B0 proxy at 224 on two idle cores; this module: 60 to
110). This module is a second implementation of the same arithmetic for evaluation, held to the
first bit for bit by tests/test_golden_fast.py:

* MACs (convolutions, linear layers, the attention products) run as float convolutions and matmuls on
  integer-valued tensors. Every product and every partial sum is an integer, exact in float32 while
  the node's static bound ``(2^x_bits - 1) sum |w|`` is at most 2^24 (every conv and linear of the
  B0 proxy) and in float64 (2^53) otherwise (and always for the small attention products);
  NNPACK (Winograd / FFT, which round) and reduced-precision float32 matmuls are switched off.
  Padding uses the zero point: the input is shifted by ``z_x`` and zero-padded, and ``sum w z_x`` is
  added back to the folded bias, so the accumulator is exactly ``ops.conv2d``'s.
* Everything after an accumulator (62-bit multiplier products, round-half-up shifts, clamps, the
  hardswish, the residual add, the log2 divisor, the LayerNorm) runs on int64 tensors with the
  formulas of golden/SPEC.md. Where an output depends on one 8-bit code per channel only (the
  hardswish after its pre-activation requant) it is tabulated once per node with those formulas
  and looked up.

Unlike golden/ops.py it does not re-check accumulator widths at run time: it runs models that
golden/convert.py produced and golden/execute.py accepts. Activations travel as float32 codes.
torch runs on at most as many threads as the process has cores; on a shared machine whose cores are
busy, two torch threads lose most of their speed (every op waits for the descheduled one), and
``torch.set_num_threads(1)`` before ``run`` is the faster choice.
"""
from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from arch.formats import log2_thresholds

from . import execute
from .execute import Stats, mac_kind

F32_EXACT = 1 << 24         # float32 holds every integer up to this magnitude
F64_EXACT = 1 << 53
_CACHE: list[tuple[dict, list]] = []     # (model, prepared nodes) of the last few models run


# --------------------------------------------------------------------------- parameters
def _param(v, ndim: int = 4, axis: int = 1):
    """A scalar (-> Python int) or per-channel int64 parameter shaped to broadcast along ``axis`` of an
    ``ndim``-D tensor; an array of more dimensions is taken as already shaped."""
    a = np.asarray(v, dtype=np.int64)
    if a.ndim == 0:
        return int(a)
    if a.ndim != 1:            # already shaped (attention: per head and column)
        return torch.as_tensor(a)
    shape = [1] * ndim
    shape[axis] = a.shape[0]
    return torch.as_tensor(a).reshape(shape)


def _half(n) -> np.ndarray:
    """The rounding constant of rshift_round: 2^(n-1), 0 for n = 0."""
    n = np.asarray(n, dtype=np.int64)
    return np.where(n > 0, np.left_shift(np.int64(1), np.maximum(n - 1, 0)), 0)


class Requant:
    """``clamp(z + rshift_round(acc * M, n), lo, hi)`` (SPEC 1) on int64 tensors, parameters per
    channel along ``axis``. With ``bias`` the accumulator is ``acc + bias`` and ``bias * M`` joins the
    rounding constant (``|(acc + b) M| < 2^62``: no intermediate leaves int64)."""

    def __init__(self, M, n, z, lo, hi, ndim=4, axis=1, bias=None):
        M, n = np.asarray(M, np.int64), np.asarray(n, np.int64)
        add = _half(n) + (0 if bias is None else np.asarray(bias, np.int64) * M)
        self.M, self.n, self.add, self.z = (_param(v, ndim, axis) for v in (M, n, add, z))
        self.lo, self.hi = int(lo), int(hi)

    def __call__(self, acc: torch.Tensor) -> torch.Tensor:
        v = acc * self.M
        v += self.add
        v >>= self.n
        v += self.z
        return v.clamp_(self.lo, self.hi)


def _hswish_int(p: torch.Tensor, z_p, t3, requant: Requant) -> torch.Tensor:
    """SPEC 3 on int64 pre-activation codes: ``k = p - z_p``, ``h = k clamp(k + t3, 0, 2 t3)``, requant."""
    k = p - z_p
    h = k + t3
    h = torch.minimum(h.clamp_(min=0), torch.as_tensor(2 * t3))
    return requant(h.mul_(k))


class Hswish:
    """The hardswish of SPEC 3 as a table: its input is a pre-activation code ``p`` in ``[lo, hi]``, so
    each channel's output is one of ``hi - lo + 1`` values, computed with the integer formula."""

    def __init__(self, hs: dict, pre_lo: int, pre_hi: int, channels: int):
        self.lo, self.size = int(pre_lo), int(pre_hi) - int(pre_lo) + 1
        p = torch.arange(pre_lo, pre_hi + 1, dtype=torch.int64).expand(channels, -1)     # (C, codes)
        rq = Requant(hs["M"], hs["n"], hs["z_out"], hs["lo"], hs["hi"], ndim=2, axis=0)
        z_p, t3 = _param(hs["z_p"], 2, 0), _param(hs["t3"], 2, 0)
        self.table = _hswish_int(p, z_p, t3, rq).to(torch.float32).reshape(-1)
        self.offset = (torch.arange(channels, dtype=torch.int64) * self.size - self.lo)

    def __call__(self, p: torch.Tensor, axis: int = 1) -> torch.Tensor:
        shape = [1] * p.ndim
        shape[axis] = -1
        idx = p + self.offset.reshape(shape)
        return self.table.index_select(0, idx.reshape(-1)).reshape(idx.shape)


# --------------------------------------------------------------------------- nodes
class Mac:
    """conv / linear node: float MAC, then the output stage on int64 (requant, hardswish or logits)."""

    def __init__(self, node: dict):
        self.node = node
        w = np.asarray(node["w"], dtype=np.int64)
        self.linear = node["op"] == "linear"
        bias = np.asarray(node["bias"], dtype=np.int64)
        xmax = (1 << node["x_bits"]) - 1
        self.shift = None
        if not self.linear:
            self.stride, self.padding, self.groups = node["stride"], node["padding"], node["groups"]
            z = np.asarray(node["z_x"], dtype=np.int64)
            if self.padding and np.any(z != 0):
                # conv(x - z, zero padding) + sum w z == conv(x padded with z): the padded pixels of x - z
                # are 0, and sum w z over the kernel is one constant per output channel
                cin, (kh, kw) = w.shape[1] * self.groups, w.shape[2:]
                zimg = torch.as_tensor(np.broadcast_to(z.reshape(-1, 1, 1) if z.ndim else z, (cin, kh, kw)).copy(),
                                       dtype=torch.float64)[None]
                wz = F.conv2d(zimg, torch.as_tensor(w, dtype=torch.float64), groups=self.groups)
                bias = bias + wz.reshape(-1).numpy().astype(np.int64)
                self.shift = z.reshape(-1, 1, 1) if z.ndim else int(z)
                xmax = int(np.maximum(np.abs(z), np.abs(xmax - z)).max())     # |x - z|
        bound = xmax * int(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max())   # any partial sum of the MAC
        if bound >= F64_EXACT:
            raise ValueError(f"{node['name']}: MAC bound {bound} is not exact in float64")
        self.dtype = torch.float32 if bound <= F32_EXACT else torch.float64
        if self.shift is not None and not isinstance(self.shift, int):
            self.shift = torch.as_tensor(self.shift, dtype=self.dtype)
        self.w = torch.as_tensor(w, dtype=self.dtype)
        self.bias = torch.as_tensor(bias)
        self.kind, self.taps = mac_kind(node), int(w[0].size)
        nd = 2 if self.linear else 4
        self.hswish = None
        if "hswish" in node:
            pre = node["pre"]
            args = (pre["M"], pre["n"], pre["z"], pre["lo"], pre["hi"], nd, 1)
            self.hswish = Hswish(node["hswish"], pre["lo"], pre["hi"], w.shape[0])
        elif "logits" in node:          # ops.logits_requant: zero point 0, per class along the last axis
            lim = 1 << (node["logits"]["bits"] - 1)
            args = (node["logits"]["M"], node["logits"]["n"], 0, -lim, lim - 1, nd, nd - 1)
        else:
            rq = node["requant"]
            args = (rq["M"], rq["n"], rq["z_out"], rq["lo"], rq["hi"], nd, 1)
        # the requant (to the output, or to the hardswish's pre-activation) of acc + bias, and of acc alone
        # with the bias in the rounding constant (no pass over the accumulator to add it)
        self.requant, self.requant_bias = Requant(*args), Requant(*args, bias=bias)

    def __call__(self, x: torch.Tensor, st: Stats | None) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.linear:
            acc = torch.matmul(x, self.w.T)
        else:
            if self.shift is not None:
                x = x - self.shift
            acc = F.conv2d(x, self.w, None, self.stride, self.padding, 1, self.groups)
        acc = acc.to(torch.int64)
        if st is None:
            out = self.requant_bias(acc)
        else:                                      # the accumulator itself is measured: add the bias
            acc += self.bias.reshape(-1, *([1] * (acc.ndim - 2)))
            st.macs += acc.numel() * self.taps
            _track(st, self.kind, self.node["name"], acc)
            st.track("folded bias", self.node["name"], self.node["bias"])
            out = self.requant(acc)
        if self.hswish is not None:
            return self.hswish(out)
        return out.to(torch.float32)


def _track(st: Stats, kind: str, layer: str, t: torch.Tensor) -> None:
    if t.numel():
        lo, hi = torch.aminmax(t)
        st.track(kind, layer, np.int64(max(-int(lo), int(hi))))


class Add:
    """residual_add (SPEC 4): ``clamp(z + rshift_round(Ma (a - z_a) + Mb (b - z_b), n), lo, hi)``."""

    def __init__(self, node: dict):
        self.node = node
        self.za, self.zb, self.Ma, self.Mb = (_param(node[k]) for k in ("z_a", "z_b", "Ma", "Mb"))
        self.rq = Requant(1, node["n"], node["z_out"], node["lo"], node["hi"])

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        s = (a - self.za).to(torch.int64).mul_(self.Ma)
        s += (b - self.zb).to(torch.int64).mul_(self.Mb)
        return self.rq(s).to(torch.float32)


class Attention:
    """One LiteMLA branch, all heads (SPEC 5): k^T [v | 1], its requant, q [kv | ks], log2 divisor, shift."""

    def __init__(self, node: dict):
        self.node = node
        self.H, self.d = node["heads"], node["dim"]
        self.zq, self.zk, self.zv = (torch.as_tensor(np.asarray(node[k], np.float64)) for k in ("z_q", "z_k", "z_v"))
        qmax = (1 << (node["kv_bits"] - 1)) - 1
        # M_kv (H, 1, d) along the columns of kv (B, H, d, d); M_ks (H, 1) along ksum (B, H, d)
        self.kv = Requant(node["M_kv"], node["n_kv"], 0, -qmax, qmax)
        self.ks = Requant(node["M_ks"], node["n_ks"], 0, 0, (1 << node["kv_bits"]) - 1)
        self.M_o, self.n_o = torch.as_tensor(node["M_o"]), torch.as_tensor(node["n_o"])
        # the divisor's step index (b = frac_bits mantissa bits), clamped to the code window
        self.b = int(node.get("frac_bits", 0))
        self.h_lo = int(node["e_lo"]) << self.b
        self.h_hi = self.h_lo + (1 << (int(node["code_bits"]) + self.b)) - 1
        if self.b:
            self.M_o1, self.n_o1 = torch.as_tensor(node["M_o1"]), torch.as_tensor(node["n_o1"])
        self.z_out, self.lo, self.hi = int(node["z_out"]), int(node["lo"]), int(node["hi"])

    def split(self, t: torch.Tensor):
        """(B, 3 H d, h, w) -> q, k, v token-major (B, H, N, d) in float64 (execute.split_qkv's layout):
        every attention sum (below 255^2 N) is exact there."""
        B, _, h, w = t.shape
        tt = t.to(torch.float64).reshape(B, self.H, 3 * self.d, h * w).transpose(2, 3)
        d = self.d
        return tt[..., :d], tt[..., d:2 * d], tt[..., 2 * d:]

    def __call__(self, t: torch.Tensor, st: Stats | None) -> torch.Tensor:
        name = self.node["name"]
        B, _, h, w = t.shape
        q, k, v = self.split(t)
        kr = (k - self.zk).clamp_(min=0)                       # relu_zp
        ksum = kr.sum(dim=-2)                                  # (B, H, d)
        kv_acc = kr.transpose(-1, -2) @ v - ksum[..., :, None] * self.zv
        kv_acc, ksum = kv_acc.to(torch.int64), ksum.to(torch.int64)
        qr = (q - self.zq).clamp_(min=0)
        if st is not None:
            _track(st, "attention k^T v", name, kv_acc)
            _track(st, "attention k-sum", name, ksum)
            st.macs += 2 * k.numel() * (self.d + 1)            # both halves: B H N d (d + 1)
        kv, ks = self.kv(kv_acc), self.ks(ksum)
        num = (qr @ kv.to(torch.float64)).to(torch.int64)     # (B, H, N, d)
        den = (qr @ ks.to(torch.float64)[..., None])[..., 0].to(torch.int64)   # (B, H, N)
        if st is not None:
            _track(st, "attention q kv (numerator)", name, num)
            _track(st, "attention q ks (denominator)", name, den)
        xh = torch.where(den > 0, round_log2(den.clamp(min=1), self.b), self.h_lo).clamp_(self.h_lo, self.h_hi)
        M, n = self.M_o, self.n_o
        if self.b:                                             # the fraction picks the multiplier row
            f = (xh & 1)[..., None].bool()
            M, n = torch.where(f, self.M_o1, M), torch.where(f, self.n_o1, n)
        shift = n + (xh >> self.b)[..., None]                   # (B, H, N, d), in [0, 63] (converter)
        half = torch.where(shift > 0, torch.ones_like(shift) << (shift - 1).clamp_(min=0), 0)
        out = ((num * M + half) >> shift).add_(self.z_out).clamp_(self.lo, self.hi)
        return out.transpose(2, 3).reshape(B, -1, h, w).to(torch.float32)


def round_log2(x: torch.Tensor, frac_bits: int = 0) -> torch.Tensor:
    """The divisor step ``2^b p + #{k: x >= T[p][k]}`` for int64 ``1 <= x < 2^31`` (SPEC 5.4,
    golden.ops.round_log2), ``p`` the bit length minus one (``frexp`` of an integer below
    2^53 is exact), the thresholds looked up by ``p``."""
    _, ex = torch.frexp(x.to(torch.float64))
    p = ex.to(torch.int64) - 1
    T = torch.tensor(log2_thresholds(frac_bits), dtype=torch.int64)
    return (p << frac_bits) + (x[..., None] >= T[p]).sum(dim=-1)


class Pool:
    """global_avgpool (SPEC 6): ``requantize(sum_hw (x - z_x), M, n, z_out)``."""

    def __init__(self, node: dict):
        self.node = node
        self.z = _param(node["z_x"])
        self.rq = Requant(node["M"], node["n"], node["z_out"], node["lo"], node["hi"], ndim=2)

    def __call__(self, x: torch.Tensor, st: Stats | None) -> torch.Tensor:
        s = (x.to(torch.float64) - self.z).sum(dim=(2, 3)).to(torch.int64)      # |s| < 2^31: exact
        if st is not None:
            _track(st, "global avgpool sum", self.node["name"], s)
        return self.rq(s).to(torch.float32)


class LayerNormHswish:
    """The head's LayerNorm (SPEC 7) to the pre-activation codes, then the hardswish (SPEC 3)."""

    def __init__(self, node: dict):
        self.node = node
        self.z = int(node["z_x"])
        self.eps = int(node["eps_int"])
        self.K, self.Fb = int(node["recip_bits"]), int(node["frac_bits"])
        self.G, self.B = torch.as_tensor(node["G"]), torch.as_tensor(node["B"])
        self.out = Requant(1, node["n_g"], node["z_pre"], node["pre_lo"], node["pre_hi"], ndim=2)
        self.hswish = Hswish(dict(z_p=node["z_pre"], t3=node["t3"], M=node["M"], n=node["n"], z_out=node["z_out"],
                                  lo=node["lo"], hi=node["hi"]), node["pre_lo"], node["pre_hi"], len(node["G"]))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        d = x.to(torch.int64) - self.z                         # (B, C)
        C = d.shape[-1]
        s1 = d.sum(dim=-1, keepdim=True)
        v = C * (d * d).sum(dim=-1, keepdim=True) - s1 * s1 + self.eps
        num = 1 << (2 * self.K)
        r = torch.tensor([[math.isqrt(num // max(int(vv), 1))] for vv in v.reshape(-1).tolist()], dtype=torch.int64)
        t = (C * d - s1) * r
        k = self.K - self.Fb
        y = (t + (1 << (k - 1)) >> k) if k > 0 else t
        p = self.out(y * self.G + self.B)
        return self.hswish(p)


def prepare(model: dict) -> list:
    """The model's nodes with their parameters as torch tensors (cached for the last few models)."""
    for m, nodes in _CACHE:
        if m is model:
            return nodes
    kinds = dict(conv=Mac, linear=Mac, add=Add, attention=Attention, avgpool=Pool, layernorm_hswish=LayerNormHswish)
    nodes = []
    for node in model["nodes"]:
        if node["op"] not in kinds:
            raise ValueError(f"unknown op {node['op']!r} (node {node['name']}) in the integer model")
        nodes.append(kinds[node["op"]](node))
    _CACHE.insert(0, (model, nodes))
    del _CACHE[2:]
    return nodes


def run_node(node, env: dict, st: Stats | None) -> None:
    n = node.node
    op = n["op"]
    if op in ("conv", "linear", "avgpool"):
        env[n["output"]] = node(env[n["input"]], st)
    elif op == "add":
        env[n["output"]] = node(*(env[i] for i in n["inputs"]))
    elif op == "attention":
        t = env[n["input"]]
        out = env.get(n["output"])
        if out is None:                       # both branches write one tensor, each its channel range
            out = env[n["output"]] = torch.zeros((t.shape[0], n["out_channels"], *t.shape[2:]), dtype=torch.float32)
        o = n["out_channel_offset"]
        out[:, o:o + n["heads"] * n["dim"]] = node(t, st)
    else:                                     # layernorm_hswish
        env[n["output"]] = node(env[n["input"]])


@contextlib.contextmanager
def _exact_float():
    """Float MACs on integers must not round: no NNPACK (Winograd / FFT convolutions), no bf16 / tf32
    float32 matmuls; no autograd."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.no_grad(), torch.backends.nnpack.flags(enabled=False):
            yield
    finally:
        torch.set_float32_matmul_precision(precision)


def _threads() -> int:
    """No more torch threads than the cores this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), cores))


def run(model: dict, images: np.ndarray, stats: Stats | None = None, keep: bool = False) -> np.ndarray | dict:
    """Integer logits ``(N, classes)`` (int64) of uint8 images ``(N, 3, H, W)`` (or one ``(3, H, W)``):
    bit for bit ``execute.run``. With ``stats`` the same accumulator maxima and MAC count are tracked;
    with ``keep`` the whole tensor environment (name -> int64 codes) is returned instead."""
    x = execute.check_images(model, images)
    nodes = prepare(model)
    torch.set_num_threads(_threads())
    env = {model["graph_input"]: torch.from_numpy(x.astype(np.float32))}
    last = execute._last_use(model)
    with _exact_float():
        for i, node in enumerate(nodes):
            run_node(node, env, stats)
            if not keep:
                for t in node.node.get("inputs") or [node.node["input"]]:
                    if last.get(t) == i and t != model["graph_output"]:
                        env.pop(t, None)
    if keep:
        return {k: v.to(torch.int64).numpy() for k, v in env.items()}
    return env[model["graph_output"]].to(torch.int64).numpy()
