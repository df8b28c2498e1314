"""The integer operations of the accelerator, one function per golden/SPEC.md entry.

Every function here takes and returns numpy *integer* arrays and computes in
int64; floating point never touches the integer path (each op checks its
inputs' dtypes).  Accumulators are checked against the widths SPEC.md states:
an overflow is a specification error and raises ``OverflowError`` instead of
wrapping.  rtl/ testbenches call these functions as the reference, so their
signatures are stable: add keyword arguments, never change existing ones.

Parameter derivation (real scale -> integer parameter) lives at the end of the
file (``quantize_multiplier`` ...); those helpers take Python floats and are
run once by the converter, never during inference.

Shape conventions: feature maps are ``(N, C, H, W)`` (or ``(C, H, W)``),
vectors ``(N, C)``; per-channel parameters are 1-D arrays of length C that
broadcast along ``axis`` (default 1, the channel axis; 0 for a 1-D input).
Attention operands are token-major ``(..., tokens, d)`` for one head (leading
axes, e.g. heads, broadcast with numpy rules).
"""
from __future__ import annotations

import math

import numpy as np

from arch.formats import DEFAULT as F
from arch.formats import log2_thresholds

__all__ = [
    "ACC_BITS", "MULT_BITS", "SHIFT_MAX",
    "rshift_round", "requantize", "fold_bias", "conv2d", "linear", "hardswish",
    "residual_add", "relu_zp", "attention_kv", "attention_requant_kv", "attention_num_den",
    "round_log2", "log2_code", "attention_divide", "attention_out", "global_avgpool",
    "isqrt", "layernorm", "logits_requant",
    "quantize_multiplier", "quantize_multipliers", "quantize_multiplier_pair",
    "quantize_signed_multiplier", "hardswish_t3", "hardswish_output_factor", "layernorm_params",
]

# The machine's formats (arch/formats.py, derived from the default configuration): the
# widths the ops check their operands and accumulators against.
ACC_BITS = F.acc.bits               # MAC accumulators (signed)
MULT_BITS = F.mult.bits             # requantization multiplier magnitude, normalised to [2^30, 2^31)
SHIFT_MAX = F.shift_max             # right shifts: 0..63
T3_BITS = F.t3.bits                 # hardswish knee: t3 < 2^(acc_bits - act_bits - 2), so |h| < 2^31
LN_G_BITS = F.ln_g.bits             # LayerNorm per-channel signed multiplier (|G| < 2^15)
LN_B_BITS = F.ln_b.bits             # LayerNorm per-channel bias at the shifted scale
LN_FRAC_BITS = F.ln_frac_bits       # fractional bits of the normalised LayerNorm value y
LN_RECIP_BITS = F.ln_recip_bits     # R = isqrt(2^62 // V) ~ 2^31 / sqrt(V) (47 is the finer variant)
A_LO, A_HI = F.act.lo, F.act.hi     # default output code range (8-bit activations); the converter
                                    # always passes each tensor's own range


# --------------------------------------------------------------------------- helpers
def _int(x, name: str) -> np.ndarray:
    """Return ``x`` as int64, refusing anything that is not integer-typed."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an integer, got a bool")
    if isinstance(x, (int, np.integer)):
        return np.asarray(x, dtype=np.int64)
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array, got dtype {a.dtype} "
                        "(the golden integer path takes integers only)")
    if a.dtype == np.uint64 and a.size and int(a.max()) >= 1 << 63:
        raise OverflowError(f"{name}: uint64 value does not fit int64")
    return a.astype(np.int64, copy=False)


def _check_range(a: np.ndarray, lo: int, hi: int, name: str) -> None:
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        raise ValueError(f"{name}: values must lie in [{lo}, {hi}], got [{int(a.min())}, {int(a.max())}]")


def _check_acc(a: np.ndarray, bits: int, name: str) -> None:
    lim = 1 << (bits - 1)
    if a.size and (int(a.min()) < -lim or int(a.max()) > lim - 1):
        raise OverflowError(f"{name}: value range [{int(a.min())}, {int(a.max())}] exceeds the "
                            f"signed {bits}-bit accumulator of SPEC.md")


def _chan(p: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Shape a scalar or per-channel 1-D parameter to broadcast along ``axis``."""
    if p.ndim == 0:
        return p
    if p.ndim != 1:
        raise ValueError(f"per-channel parameter must be 1-D, got shape {p.shape}")
    if ndim == 1:
        return p
    shape = [1] * ndim
    shape[axis] = p.shape[0]
    return p.reshape(shape)


def _axis(ndim: int, axis: int) -> int:
    return 0 if ndim == 1 else axis % ndim


def _check_mult(M: np.ndarray, n: np.ndarray, name: str) -> None:
    _check_range(M, 0, (1 << MULT_BITS) - 1, f"{name}: multiplier M")
    _check_range(n, 0, SHIFT_MAX, f"{name}: shift n")


# --------------------------------------------------------------------------- rounding
def rshift_round(x, n) -> np.ndarray:
    """Right shift with round half up: ``(x + 2^(n-1)) >> n`` (``x`` for n = 0).

    ``>>`` is the arithmetic (floor) shift, so halves round toward +inf
    (-2.5 -> -2, 2.5 -> 3).  ``n`` in [0, 63], broadcast against ``x``;
    ``|x| < 2^62`` so that adding the half cannot overflow int64.
    """
    x = _int(x, "rshift_round: x")
    n = _int(n, "rshift_round: n")
    _check_range(n, 0, SHIFT_MAX, "rshift_round: shift n")
    _check_acc(x, 63, "rshift_round: x")
    half = np.where(n > 0, np.left_shift(np.int64(1), np.maximum(n - 1, 0)), np.int64(0))
    return np.right_shift(x + half, n)


def requantize(acc, M, n, z_out, lo: int = A_LO, hi: int = A_HI, axis: int = 1) -> np.ndarray:
    """SPEC 1: ``clamp(z_out + rshift_round(acc * M, n), lo, hi)``.

    ``acc`` int32 accumulators; ``M`` unsigned 31-bit, ``n`` 0..63, ``z_out``
    scalar or per channel (broadcast along ``axis``).  ``acc * M`` is formed
    in int64 (at most 62 bits).
    """
    acc = _int(acc, "requantize: acc")
    M, n, z = (_int(v, f"requantize: {k}") for v, k in ((M, "M"), (n, "n"), (z_out, "z_out")))
    _check_acc(acc, ACC_BITS, "requantize: acc")
    _check_mult(M, n, "requantize")
    ax = _axis(acc.ndim, axis)
    M, n, z = (_chan(v, acc.ndim, ax) for v in (M, n, z))
    return np.clip(z + rshift_round(acc * M, n), lo, hi)


# --------------------------------------------------------------------------- MAC ops
def fold_bias(bias, w, z_x, groups: int = 1) -> np.ndarray:
    """SPEC 2: fold the input zero point into the bias, ``b'[c] = b[c] - sum_k w[c,k] z_x[k]``.

    ``w``: ``(Cout, Cin/groups, kh, kw)`` conv weights or ``(Cout, Cin)``
    linear weights; ``z_x`` scalar or per input channel ``(Cin,)``.  Exact
    because padding uses ``z_x``.  Returns int64, checked to fit int32.
    """
    b = _int(bias, "fold_bias: bias")
    w = _int(w, "fold_bias: w")
    z = _int(z_x, "fold_bias: z_x")
    if w.ndim == 2:
        w = w[:, :, None, None]
    cout, cin_g = w.shape[:2]
    if cout % groups:
        raise ValueError(f"fold_bias: Cout={cout} is not divisible by groups={groups}")
    wsum = w.sum(axis=(2, 3))                                       # (Cout, Cin_g)
    if z.ndim == 0:
        corr = wsum.sum(axis=1) * z
    else:
        if z.shape[0] != cin_g * groups:
            raise ValueError(f"fold_bias: z_x has {z.shape[0]} channels, weights expect {cin_g * groups}")
        zg = z.reshape(groups, cin_g)                                # (G, Cin_g)
        g_of_out = np.arange(cout) // (cout // groups)
        corr = (wsum * zg[g_of_out]).sum(axis=1)
    out = b - corr
    _check_acc(out, ACC_BITS, "fold_bias: folded bias")
    return out


def _mac_bound_check(acc: np.ndarray, bias: np.ndarray, w_abs_sum: np.ndarray, x_max: int,
                     name: str) -> None:
    """Check that no partial sum, in any order, can leave the signed 32-bit range.

    Static bound: ``|b'| + x_max * sum |w|`` per output channel; if that
    fits (it does for every EfficientViT layer, see SPEC 9) nothing else is
    needed; otherwise the final values are checked as well.
    """
    bound = np.abs(bias) + x_max * w_abs_sum
    if bound.size and int(bound.max()) < (1 << (ACC_BITS - 1)):
        return
    _check_acc(acc, ACC_BITS, name)


def conv2d(x, z_x, w, bias, stride: int = 1, padding: int = 0, groups: int = 1,
           x_bits: int = F.act.bits, w_bits: int = F.weight.bits) -> np.ndarray:
    """SPEC 2: int8 x uint8 convolution accumulated in int32 (generic, pointwise, grouped, depthwise).

    ``x``: activation codes ``(N, Cin, H, W)`` or ``(Cin, H, W)`` in
    [0, 2^x_bits - 1]; ``z_x``: scalar or per-input-channel zero point, used
    only as the padding value (a code when ``padding > 0``; any 16-bit signed
    value otherwise, as filter-wise shifting produces); ``w``: ``(Cout, Cin/groups, kh, kw)`` signed
    narrow-range codes; ``bias``: the *folded* int32 bias (``fold_bias``).
    Returns the int32 accumulators ``bias'[c] + sum w * x`` as int64.
    """
    x = _int(x, "conv2d: x")
    w = _int(w, "conv2d: w")
    b = _int(bias, "conv2d: bias")
    z = _int(z_x, "conv2d: z_x")
    squeeze = x.ndim == 3
    if squeeze:
        x = x[None]
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d: expected x (N,C,H,W) and w (Cout,Cin/g,kh,kw), got {x.shape} and {w.shape}")
    _check_range(x, 0, (1 << x_bits) - 1, "conv2d: x codes")
    wmax = (1 << (w_bits - 1)) - 1
    _check_range(w, -wmax, wmax, "conv2d: weights")
    if padding:   # the padding value is stored like any code
        _check_range(z, 0, (1 << x_bits) - 1, "conv2d: z_x (padding value)")
    else:         # only folded into the bias: filter-wise shifting may move it off the code range
        _check_range(z, F.zero_point.lo, F.zero_point.hi, "conv2d: z_x")
    N, cin, H, W = x.shape
    cout, cin_g, kh, kw = w.shape
    if cin != cin_g * groups or cout % groups:
        raise ValueError(f"conv2d: Cin={cin}, Cout={cout} do not match weights {w.shape} with groups={groups}")
    if b.shape != (cout,):
        raise ValueError(f"conv2d: bias must have shape ({cout},), got {b.shape}")
    if padding:
        zc = np.broadcast_to(z, (cin,)).reshape(1, cin, 1, 1)
        xp = np.broadcast_to(zc, (N, cin, H + 2 * padding, W + 2 * padding)).copy()
        xp[:, :, padding:padding + H, padding:padding + W] = x
    else:
        xp = x
    Ho = (H + 2 * padding - kh) // stride + 1
    Wo = (W + 2 * padding - kw) // stride + 1
    if groups == cin == cout:
        # depthwise: one filter per channel, accumulate tap by tap
        acc = np.zeros((N, cout, Ho, Wo), dtype=np.int64)
        for i in range(kh):
            for j in range(kw):
                tap = xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
                acc += tap * w[None, :, 0, i, j, None, None]
    else:
        cout_g = cout // groups
        wg = w.reshape(groups, cout_g, cin_g, kh, kw)
        acc = np.zeros((N, groups, cout_g, Ho * Wo), dtype=np.int64)
        for i in range(kh):
            for j in range(kw):
                tap = xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
                tap = tap.reshape(N, groups, cin_g, Ho * Wo)
                acc += np.matmul(wg[None, :, :, :, i, j], tap)
        acc = acc.reshape(N, cout, Ho, Wo)
    acc += b.reshape(1, cout, 1, 1)
    _mac_bound_check(acc, b, np.abs(w).sum(axis=(1, 2, 3)), (1 << x_bits) - 1, "conv2d: accumulator")
    return acc[0] if squeeze else acc


def linear(x, w, bias, x_bits: int = F.act.bits, w_bits: int = F.weight.bits) -> np.ndarray:
    """SPEC 2: ``acc[..., c] = bias'[c] + sum_k w[c, k] x[..., k]`` in int32.

    ``x`` unsigned codes ``(..., Cin)``, ``w`` ``(Cout, Cin)`` signed narrow
    range, ``bias`` the folded int32 bias (``fold_bias``).
    """
    x = _int(x, "linear: x")
    w = _int(w, "linear: w")
    b = _int(bias, "linear: bias")
    _check_range(x, 0, (1 << x_bits) - 1, "linear: x codes")
    wmax = (1 << (w_bits - 1)) - 1
    _check_range(w, -wmax, wmax, "linear: weights")
    if w.ndim != 2 or x.shape[-1] != w.shape[1] or b.shape != (w.shape[0],):
        raise ValueError(f"linear: shapes x {x.shape}, w {w.shape}, bias {b.shape} do not match")
    acc = x @ w.T + b
    _mac_bound_check(acc, b, np.abs(w).sum(axis=1), (1 << x_bits) - 1, "linear: accumulator")
    return acc


# --------------------------------------------------------------------------- elementwise
def hardswish(p, z_p, t3, M, n, z_out, lo: int = A_LO, hi: int = A_HI, axis: int = 1) -> np.ndarray:
    """SPEC 3: ``k = p - z_p; h = k * clamp(k + t3, 0, 2 t3); out = requantize(h, M, n, z_out)``.

    ``p``: pre-activation codes; ``t3 = round(3 / s_p)`` in [1, 2^22); ``z_p``, ``t3``,
    ``M, n, z_out`` per channel (along ``axis``) or scalar, with
    ``M 2^-n ~ hardswish_output_factor(s_p, t3, s_out)``.  ``|h| <= 255 (255 + t3) < 2^31``.
    """
    p = _int(p, "hardswish: p")
    z_p, t3 = _int(z_p, "hardswish: z_p"), _int(t3, "hardswish: t3")
    _check_range(t3, 1, (1 << T3_BITS) - 1, "hardswish: t3")
    ax = _axis(p.ndim, axis)
    k = p - _chan(z_p, p.ndim, ax)
    t3c = _chan(t3, p.ndim, ax)
    h = k * np.clip(k + t3c, 0, 2 * t3c)
    return requantize(h, M, n, z_out, lo, hi, axis=ax)


def residual_add(a, z_a, Ma, b, z_b, Mb, n, z_out, lo: int = A_LO, hi: int = A_HI, axis: int = 1) -> np.ndarray:
    """SPEC 4: ``clamp(z_out + rshift_round(Ma (a - z_a) + Mb (b - z_b), n), lo, hi)``.

    ``Ma, Mb`` unsigned 31-bit (one shared shift ``n``: see
    ``quantize_multiplier_pair``); the sum is at most 41 bits.
    """
    a, b = _int(a, "residual_add: a"), _int(b, "residual_add: b")
    if a.shape != b.shape:
        raise ValueError(f"residual_add: operand shapes differ: {a.shape} vs {b.shape}")
    za, zb, Ma, Mb, n, z = (_int(v, f"residual_add: {k}") for v, k in
                            ((z_a, "z_a"), (z_b, "z_b"), (Ma, "Ma"), (Mb, "Mb"), (n, "n"), (z_out, "z_out")))
    _check_mult(Ma, n, "residual_add a")
    _check_mult(Mb, n, "residual_add b")
    ax = _axis(a.ndim, axis)
    za, zb, Ma, Mb, n, z = (_chan(v, a.ndim, ax) for v in (za, zb, Ma, Mb, n, z))
    s = Ma * (a - za) + Mb * (b - zb)
    return np.clip(z + rshift_round(s, n), lo, hi)


def relu_zp(x, z) -> np.ndarray:
    """SPEC 5: ReLU on codes, ``max(x - z, 0)``: the result has zero point 0, same scale."""
    x, z = _int(x, "relu_zp: x"), _int(z, "relu_zp: z")
    return np.maximum(x - z, 0)


# --------------------------------------------------------------------------- attention
def attention_kv(k, z_k, v, z_v) -> tuple[np.ndarray, np.ndarray]:
    """SPEC 5.1: ``kv_acc[i,j] = sum_n kr[n,i] v[n,j] - z_v[j] ksum[i]``, ``ksum[i] = sum_n kr[n,i]``.

    ``k, v``: codes ``(..., N, d)``; ``kr = relu_zp(k, z_k)``; ``z_k, z_v``
    scalars or per-channel ``(d,)``.  Returns ``(kv_acc (..., d, d), ksum (..., d))``.
    """
    k, v = _int(k, "attention_kv: k"), _int(v, "attention_kv: v")
    zv = _int(z_v, "attention_kv: z_v")
    kr = relu_zp(k, z_k)
    ksum = kr.sum(axis=-2)
    zv_row = zv[..., None, :] if zv.ndim else zv          # z_v[j] along the columns
    krv = np.swapaxes(kr, -1, -2) @ v
    kv_acc = krv - ksum[..., :, None] * zv_row
    _check_acc(ksum, ACC_BITS, "attention_kv: ksum")
    # every product kr*v is >= 0, so the final sum bounds all partial sums
    _check_acc(krv, ACC_BITS, "attention_kv: sum kr*v")
    _check_acc(kv_acc, ACC_BITS, "attention_kv: kv_acc")
    return kv_acc, ksum


def attention_requant_kv(kv_acc, ksum, M_kv, n_kv, M_ks, n_ks, bits: int = F.act.bits) -> tuple[np.ndarray, np.ndarray]:
    """SPEC 5.2: kv per column j to signed symmetric codes, ksum per head to unsigned codes.

    ``kv = clamp(rshift_round(kv_acc * M_kv[j], n_kv[j]), -(2^(b-1)-1), 2^(b-1)-1)``,
    ``ks = clamp(rshift_round(ksum * M_ks, n_ks), 0, 2^b - 1)``.
    ``M_kv, n_kv`` broadcast along the last axis (columns j).
    """
    kv_acc, ksum = _int(kv_acc, "attention_requant_kv: kv_acc"), _int(ksum, "attention_requant_kv: ksum")
    M_kv, n_kv, M_ks, n_ks = (_int(v, f"attention_requant_kv: {k}") for v, k in
                              ((M_kv, "M_kv"), (n_kv, "n_kv"), (M_ks, "M_ks"), (n_ks, "n_ks")))
    _check_acc(kv_acc, ACC_BITS, "attention_requant_kv: kv_acc")
    _check_acc(ksum, ACC_BITS, "attention_requant_kv: ksum")
    _check_mult(M_kv, n_kv, "attention_requant_kv kv")
    _check_mult(M_ks, n_ks, "attention_requant_kv ks")
    qmax = (1 << (bits - 1)) - 1
    kv = np.clip(rshift_round(kv_acc * M_kv, n_kv), -qmax, qmax)
    ks = np.clip(rshift_round(ksum * M_ks, n_ks), 0, (1 << bits) - 1)
    return kv, ks


def attention_num_den(q, z_q, kv, ks) -> tuple[np.ndarray, np.ndarray]:
    """SPEC 5.3: ``num[n,j] = sum_i qr[n,i] kv[i,j]``, ``den[n] = sum_i qr[n,i] ks[i]`` (int32).

    ``q`` codes ``(..., N, d)`` with ``qr = relu_zp(q, z_q)``; ``kv``
    ``(..., d, d)`` signed, ``ks`` ``(..., d)`` unsigned.
    """
    qr = relu_zp(_int(q, "attention_num_den: q"), z_q)
    kv, ks = _int(kv, "attention_num_den: kv"), _int(ks, "attention_num_den: ks")
    num = qr @ kv
    den = (qr * ks[..., None, :]).sum(axis=-1)
    _check_acc(qr @ np.abs(kv), ACC_BITS, "attention_num_den: num partial sums")
    _check_acc(den, ACC_BITS, "attention_num_den: den")
    return num, den


def round_log2(x, frac_bits: int = 0) -> np.ndarray:
    """SPEC 5.4: the index ``h = 2^b p + #{k: x >= T[p][k]}`` of the divisor step nearest ``x`` in
    log2 (``b = frac_bits`` mantissa bits, ``p = floor(log2 x)``, the thresholds of
    arch.formats.log2_thresholds), exactly. With ``b = 0`` this is ``p + (x*x >= 2^(2p+1))``: log2
    rounded to the nearest integer, the threshold sqrt(2) 2^p. Defined for ``1 <= x < 2^31``.
    """
    x = _int(x, "round_log2: x")
    _check_range(x, 1, (1 << 31) - 1, "round_log2: x")
    p = np.zeros_like(x)
    for s in (16, 8, 4, 2, 1):          # binary search for floor(log2 x) (x < 2^31)
        up = np.right_shift(x, p + s) > 0
        p = p + np.where(up, s, 0)
    T = np.array(log2_thresholds(frac_bits), dtype=np.int64)          # (31, 2^b)
    return (p << frac_bits) + (x[..., None] >= T[p]).sum(axis=-1)


def log2_code(den, e_lo, code_bits: int = F.log2_code.bits, frac_bits: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """SPEC 5.4: the divisor's step ``h = round_log2(den, b)`` (``b = frac_bits`` mantissa bits),
    clamped to ``[2^b e_lo, 2^b e_lo + 2^(code_bits + b) - 1]``; ``den = 0`` gives the low end.

    Returns ``(e, code)``: ``e = h >> b`` (the shift), ``code = h - 2^b e_lo`` (``code_bits + b``
    bits; its low ``b`` bits are the fraction ``f``, which picks the output multiplier row).
    """
    den = _int(den, "log2_code: den")
    e_lo = int(_int(e_lo, "log2_code: e_lo"))
    _check_range(den, 0, (1 << 31) - 1, "log2_code: den")
    h_lo = e_lo << frac_bits
    h = np.where(den > 0, round_log2(np.maximum(den, 1), frac_bits), h_lo)
    h = np.clip(h, h_lo, h_lo + (1 << (code_bits + frac_bits)) - 1)
    return h >> frac_bits, h - h_lo


def attention_divide(num, e, M_o, n_o, z_out, lo: int = A_LO, hi: int = A_HI, f=None, M_o1=None,
                     n_o1=None) -> np.ndarray:
    """SPEC 5.5: ``clamp(z_out + rshift_round(num[n,j] * M_o[j], n_o[j] + e[n]), lo, hi)``.

    ``num`` ``(..., N, d)``, ``e`` ``(..., N)``; ``M_o, n_o, z_out`` scalars
    or per column ``(d,)``.  The total shift ``n_o + e`` must lie in [0, 63].
    With the divisor's mantissa bit, ``f`` ``(..., N)`` (the code's low bit) picks ``(M_o1, n_o1)``
    (``M_o 2^-n_o`` times 3/4, for the divisor (4/3) 2^e) where it is 1.
    """
    num, e = _int(num, "attention_divide: num"), _int(e, "attention_divide: e")
    M, n, z = (_int(v, f"attention_divide: {k}") for v, k in ((M_o, "M_o"), (n_o, "n_o"), (z_out, "z_out")))
    if f is not None:
        if M_o1 is None or n_o1 is None:
            raise ValueError("attention_divide: a fraction f needs the second multiplier row M_o1, n_o1")
        f = _int(f, "attention_divide: f")[..., None] != 0
        M1, n1 = _int(M_o1, "attention_divide: M_o1"), _int(n_o1, "attention_divide: n_o1")
        _check_range(M1, 0, (1 << MULT_BITS) - 1, "attention_divide: M_o1")
        M, n = np.where(f, M1, M), np.where(f, n1, n)
    _check_acc(num, ACC_BITS, "attention_divide: num")
    _check_range(M, 0, (1 << MULT_BITS) - 1, "attention_divide: M_o")
    shift = n + e[..., None]
    if shift.size and (int(shift.min()) < 0 or int(shift.max()) > SHIFT_MAX):
        raise ValueError(f"attention_divide: total shift n_o + e spans [{int(shift.min())}, {int(shift.max())}], "
                         f"outside [0, {SHIFT_MAX}]; the converter must choose n_o and e_lo so it fits")
    return np.clip(z + rshift_round(num * M, shift), lo, hi)


def attention_out(q, z_q, kv, ks, M_o, n_o, e_lo, z_out, code_bits: int = F.log2_code.bits, lo: int = A_LO, hi: int = A_HI,
                  return_all: bool = False, frac_bits: int = 0, M_o1=None, n_o1=None):
    """SPEC 5.3-5.5 in one call: q times kv and ks, the divisor's log2 code, the shift division.

    Returns the output codes ``(..., N, d)``; with ``return_all`` a dict with
    ``out, num, den, e, code``.
    """
    num, den = attention_num_den(q, z_q, kv, ks)
    e, code = log2_code(den, e_lo, code_bits, frac_bits)
    f = (code & ((1 << frac_bits) - 1)) if frac_bits else None
    out = attention_divide(num, e, M_o, n_o, z_out, lo, hi, f=f, M_o1=M_o1, n_o1=n_o1)
    if return_all:
        return {"out": out, "num": num, "den": den, "e": e, "code": code}
    return out


# --------------------------------------------------------------------------- pooling, norm, logits
def global_avgpool(x, z_x, M, n, z_out, lo: int = A_LO, hi: int = A_HI) -> np.ndarray:
    """SPEC 6: ``requantize(sum_hw (x - z_x), M, n, z_out)``, ``M 2^-n ~ s_x / (H W s_out)``.

    ``x`` ``(N, C, H, W)`` codes -> ``(N, C)`` codes; ``z_x, M, n, z_out``
    scalar or per channel.
    """
    x = _int(x, "global_avgpool: x")
    if x.ndim != 4:
        raise ValueError(f"global_avgpool: expected (N, C, H, W), got {x.shape}")
    z = _chan(_int(z_x, "global_avgpool: z_x"), 4, 1)
    s = (x - z).sum(axis=(2, 3))
    _check_acc(s, ACC_BITS, "global_avgpool: sum")
    return requantize(s, M, n, z_out, lo, hi, axis=1)


def isqrt(x) -> np.ndarray:
    """Integer square root ``floor(sqrt(x))`` for ``0 <= x < 2^63``, digit by digit (exact)."""
    x = _int(x, "isqrt: x")
    _check_range(x, 0, (1 << 63) - 1, "isqrt: x")
    rem = x.copy()
    root = np.zeros_like(x)
    bit = np.int64(1) << np.int64(62)
    while bit:
        trial = root + bit
        ok = rem >= trial
        rem = np.where(ok, rem - trial, rem)
        root = np.where(ok, (root >> 1) + bit, root >> 1)
        bit >>= 2
    return root


def layernorm(x, z_x, eps_int, G, B, n_g, z_out, lo: int = A_LO, hi: int = A_HI,
              frac_bits: int = LN_FRAC_BITS, recip_bits: int = LN_RECIP_BITS) -> np.ndarray:
    """SPEC 7: integer LayerNorm over the last axis (C channels) of a per-tensor quantized input.

    ``d = x - z_x``; ``S1 = sum d``; ``V = C sum d^2 - S1^2 + eps_int`` (int64);
    ``R = isqrt(2^(2K) // max(V, 1))`` with ``K = recip_bits`` (~ 2^K / sqrt(V); one per token,
    exact integer arithmetic); ``y = rshift_round((C d - S1) R, K - frac_bits)`` (normalised
    value with frac_bits fractional bits);
    ``out[c] = clamp(z_out + rshift_round(y G[c] + B[c], n_g[c]), lo, hi)`` with
    ``G`` signed 16-bit ~ gamma/s_out 2^(n_g - frac_bits), ``B`` 48-bit ~ beta/s_out 2^n_g
    (``layernorm_params`` derives them).
    """
    x = _int(x, "layernorm: x")
    z = _int(z_x, "layernorm: z_x")
    eps_int = _int(eps_int, "layernorm: eps_int")
    G, B, n = _int(G, "layernorm: G"), _int(B, "layernorm: B"), _int(n_g, "layernorm: n_g")
    zo = _int(z_out, "layernorm: z_out")
    if z.ndim or eps_int.ndim:
        raise ValueError("layernorm: z_x and eps_int must be scalars (the input is quantized per tensor)")
    gl = 1 << (LN_G_BITS - 1)
    _check_range(G, -(gl - 1), gl - 1, "layernorm: G")
    _check_acc(B, LN_B_BITS, "layernorm: B")
    _check_range(n, 0, SHIFT_MAX, "layernorm: n_g")
    _check_range(eps_int, 0, 1 << 40, "layernorm: eps_int")
    if not 16 <= recip_bits <= 47:
        raise ValueError(f"layernorm: recip_bits must be in [16, 47], got {recip_bits}")
    if not 0 <= frac_bits <= recip_bits:
        raise ValueError(f"layernorm: frac_bits must be in [0, recip_bits={recip_bits}], got {frac_bits}")
    C = x.shape[-1]
    d = x - z
    s1 = d.sum(axis=-1, keepdims=True)
    v = C * (d * d).sum(axis=-1, keepdims=True) - s1 * s1 + eps_int
    _check_range(v, 0, (1 << 62) - 1, "layernorm: variance term V")
    # the reciprocal square root is one scalar per token: computed on Python integers (exact)
    num = 1 << (2 * recip_bits)
    r = np.array([math.isqrt(num // max(int(vv), 1)) for vv in v.ravel()], dtype=np.int64).reshape(v.shape)
    t = C * d - s1
    y = rshift_round(t * r, recip_bits - frac_bits)
    acc = y * G + B
    _check_acc(acc, LN_B_BITS + 1, "layernorm: y*G + B")
    return np.clip(zo + rshift_round(acc, n), lo, hi)


def logits_requant(acc, M, n, bits: int = F.logits.bits) -> np.ndarray:
    """SPEC 8: per-class requantization of the classifier's int32 accumulators to a common signed
    ``bits``-bit scale (zero point 0), clamped to ``[-2^(bits-1), 2^(bits-1) - 1]``; argmax on these."""
    lim = 1 << (bits - 1)
    acc = _int(acc, "logits_requant: acc")
    return requantize(acc, M, n, 0, -lim, lim - 1, axis=acc.ndim - 1)


# --------------------------------------------------------------------------- parameter derivation (float -> int, off the integer path)
def quantize_multiplier(real: float) -> tuple[int, int]:
    """Real factor -> ``(M, n)`` with ``real ~ M 2^-n``, ``M`` in [2^30, 2^31), ``n`` in [0, 63].

    ``M = round_half_up(m 2^31)`` where ``real = m 2^e``, ``m`` in [0.5, 1)
    (exact: ``m 2^31`` is exact in binary64); a carry to 2^31 renormalises.
    ``real = 0`` gives ``(0, 0)``.  Representable range: about
    [2^-33, 2^31); anything outside (or negative, or not finite) raises ValueError.
    """
    r = float(real)
    if not math.isfinite(r) or r < 0:
        raise ValueError(f"quantize_multiplier: real factor must be finite and >= 0, got {real!r}")
    if r == 0:
        return 0, 0
    m, e = math.frexp(r)                       # r = m 2^e, 0.5 <= m < 1
    M = math.floor(m * (1 << MULT_BITS) + 0.5)
    n = MULT_BITS - e
    if M == 1 << MULT_BITS:
        M >>= 1
        n -= 1
    if not 0 <= n <= SHIFT_MAX:
        lo, hi = 2.0 ** (MULT_BITS - 1 - SHIFT_MAX), 2.0 ** MULT_BITS
        raise ValueError(f"quantize_multiplier: real factor {r!r} needs shift {n}, outside [0, {SHIFT_MAX}]; "
                         f"representable factors lie in [{lo:.3g}, {hi:.3g}) — check the scales that produced it")
    return M, n


def quantize_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """Vector form of ``quantize_multiplier``: returns int64 arrays ``(M, n)``."""
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(np.asarray(reals, dtype=np.float64))]
    shape = np.shape(reals)
    M = np.array([p[0] for p in pairs], dtype=np.int64).reshape(shape)
    n = np.array([p[1] for p in pairs], dtype=np.int64).reshape(shape)
    return M, n


def quantize_multiplier_pair(real_a: float, real_b: float) -> tuple[int, int, int]:
    """Two real factors sharing one shift (residual add): ``(Ma, Mb, n)``.

    The larger factor is normalised as in ``quantize_multiplier``; the
    smaller one uses the same ``n`` (``Mb = round_half_up(real_b 2^n)``).
    """
    big = max(float(real_a), float(real_b))
    _, n = quantize_multiplier(big)
    scale = 2.0 ** n

    def at(r: float) -> int:
        if not math.isfinite(r) or r < 0:
            raise ValueError(f"quantize_multiplier_pair: factors must be finite and >= 0, got {r!r}")
        return math.floor(r * scale + 0.5)

    Ma, Mb = at(float(real_a)), at(float(real_b))
    if max(Ma, Mb) >= 1 << MULT_BITS:          # a carry at the top: give up one bit
        if n == 0:
            raise ValueError(f"quantize_multiplier_pair: factor {big!r} too large for a {MULT_BITS}-bit multiplier")
        n -= 1
        scale = 2.0 ** n
        Ma, Mb = at(float(real_a)), at(float(real_b))
    return Ma, Mb, n


def quantize_signed_multiplier(real: float, bits: int = LN_G_BITS, max_shift: int = SHIFT_MAX) -> tuple[int, int]:
    """Signed real -> ``(G, n)``, ``real ~ G 2^-n``, ``|G|`` in [2^(bits-2), 2^(bits-1)), ``n`` in [0, max_shift].

    ``|G|`` is rounded half up and the sign applied afterwards (symmetric);
    ``real = 0`` gives ``(0, 0)``.  Factors too small for ``max_shift`` are
    represented with fewer significant bits (never an error: LayerNorm's
    gamma may be tiny); too large ones raise ValueError.
    """
    r = float(real)
    if not math.isfinite(r):
        raise ValueError(f"quantize_signed_multiplier: factor must be finite, got {real!r}")
    if r == 0:
        return 0, 0
    m, e = math.frexp(abs(r))
    n = bits - 1 - e
    if n < 0:
        raise ValueError(f"quantize_signed_multiplier: factor {r!r} is too large for a {bits}-bit multiplier")
    n = min(n, max_shift)
    G = math.floor(abs(r) * 2.0 ** n + 0.5)
    if G >= 1 << (bits - 1):
        G >>= 1
        n -= 1
        G = math.floor(abs(r) * 2.0 ** n + 0.5)
    return (G if r > 0 else -G), n


def hardswish_output_factor(s_p, t3, s_out):
    """Real factor of the hardswish output requant: ``s_p / (2 t3 s_out)`` (SPEC 3).

    With the knee ``t = t3 s_p`` snapped to the grid, ``k (k + t3) / (2 t3)`` keeps
    the linear part (``k >= t3``) exactly ``k``; ``s_p^2 / (6 s_out)`` would scale it
    by ``t / 3``, an error of up to ``s_p / 6`` relative on a wide channel.
    """
    return np.asarray(s_p, np.float64) / (2.0 * np.asarray(t3, np.float64) * np.asarray(s_out, np.float64))


def hardswish_t3(s_p: float) -> int:
    """SPEC 3: the knee ``t3 = round_half_up(3 / s_p)`` (an integer in [1, 2^22))."""
    if not (math.isfinite(s_p) and s_p > 0):
        raise ValueError(f"hardswish_t3: pre-activation scale must be > 0, got {s_p!r}")
    t3 = math.floor(3.0 / s_p + 0.5)
    if not 1 <= t3 < 1 << T3_BITS:
        raise ValueError(f"hardswish_t3: t3 = round(3 / {s_p!r}) = {t3} outside [1, {(1 << T3_BITS) - 1}]")
    return t3


def layernorm_params(gamma, beta, s_x: float, s_out: float, eps: float, frac_bits: int = LN_FRAC_BITS):
    """SPEC 7: float LayerNorm parameters -> ``(eps_int, G, B, n_g)`` int64 arrays.

    ``eps_int = round(eps C^2 / s_x^2)``; per channel ``G 2^-n_g ~ gamma / s_out 2^-frac_bits``
    and ``B = round_half_up(beta / s_out 2^n_g)``; ``s_out`` one value or one per channel.
    """
    gamma = np.asarray(gamma, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    C = gamma.shape[0]
    so = np.broadcast_to(np.asarray(s_out, dtype=np.float64), (C,))     # per channel or one value
    eps_int = math.floor(eps * C * C / (s_x * s_x) + 0.5)
    G = np.zeros(C, dtype=np.int64)
    n = np.zeros(C, dtype=np.int64)
    B = np.zeros(C, dtype=np.int64)
    if eps_int > 1 << 40:
        raise ValueError(f"layernorm_params: eps_int = {eps_int} exceeds 2^40 (input scale {s_x!r} too small)")
    for c in range(C):
        # shift chosen so that also B fits its 48 bits
        _, nc = quantize_signed_multiplier(gamma[c] / so[c] / 2.0 ** frac_bits)
        bmax = (1 << (LN_B_BITS - 1)) - 1
        while nc > 0 and abs(beta[c] / so[c]) * 2.0 ** nc >= bmax:
            nc -= 1
        g2 = math.floor(abs(gamma[c] / so[c] / 2.0 ** frac_bits) * 2.0 ** nc + 0.5)
        if g2 >= 1 << (LN_G_BITS - 1):
            raise ValueError(f"layernorm_params: channel {c}: gamma/s_out too large for a 16-bit multiplier")
        G[c] = g2 if gamma[c] >= 0 else -g2
        n[c] = nc
        B[c] = math.floor(beta[c] / so[c] * 2.0 ** nc + 0.5)
    return np.int64(eps_int), G, B, n
