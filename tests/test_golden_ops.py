"""Property tests of golden/ops.py against the definitions in golden/SPEC.md.

Two kinds of reference per op:
* the SPEC's integer definition, re-derived element by element with Python
  integers and exact fractions (``Fraction``): the op must match it exactly,
  so a one-LSB slip anywhere fails;
* the op's floating-point (real-number) definition with real scales: the op
  must land within the rounding the SPEC states (usually half an LSB plus the
  multiplier's 2^-31 relative error, i.e. one of the two nearest codes).
"""
from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from golden import ops

# GOLDEN_EXAMPLES=2000 runs a thorough sweep; the default keeps this file under ~30 s
N_EX = int(os.environ.get("GOLDEN_EXAMPLES", "60"))
SET = settings(max_examples=N_EX, deadline=None, suppress_health_check=[HealthCheck.too_slow])
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


def rhu(x: Fraction) -> int:
    """Round half up of an exact rational."""
    return math.floor(x + Fraction(1, 2))


def clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


def ints(shape, lo, hi):
    return hnp.arrays(np.int64, shape, elements=st.integers(lo, hi))


mults = st.tuples(st.integers(0, (1 << 31) - 1), st.integers(0, 63))
reals = st.floats(2.0 ** -33, 2.0 ** 31 * 0.999, allow_nan=False, allow_infinity=False)


# --------------------------------------------------------------------------- rounding and multipliers
@SET
@given(x=st.integers(-(1 << 62) + 1, (1 << 62) - 1), n=st.integers(0, 63))
def test_rshift_round_matches_exact_half_up(x, n):
    assert int(ops.rshift_round(np.int64(x), n)) == rhu(Fraction(x, 1 << n))


def test_rshift_round_ties_go_up_and_extremes():
    x = np.array([-5, -3, -1, 1, 3, 5, 6, -6], dtype=np.int64)
    assert ops.rshift_round(x, 1).tolist() == [-2, -1, 0, 1, 2, 3, 3, -3]
    big = (1 << 62) - 1
    assert int(ops.rshift_round(np.int64(big), 63)) == 0      # (2^62 - 1) / 2^63 is just below a half
    assert int(ops.rshift_round(np.int64(1 << 61), 62)) == 1     # exactly a half rounds up
    assert int(ops.rshift_round(np.int64(-big), 63)) == 0
    assert int(ops.rshift_round(np.int64(big), 0)) == big
    with pytest.raises(ValueError, match="shift n"):
        ops.rshift_round(np.int64(1), 64)
    with pytest.raises(TypeError, match="integer"):
        ops.rshift_round(np.array([1.0]), 1)


@SET
@given(r=reals)
def test_quantize_multiplier_round_to_nearest(r):
    M, n = ops.quantize_multiplier(r)
    assert (1 << 30) <= M < (1 << 31) and 0 <= n <= 63
    exact = Fraction(r) * (1 << n)
    assert M == rhu(exact) or (M == 1 << 30 and rhu(exact * 2) == 1 << 31)
    assert abs(Fraction(M, 1 << n) - Fraction(r)) <= Fraction(1, 1 << (n + 1))


def test_quantize_multiplier_edges_and_errors():
    assert ops.quantize_multiplier(0.0) == (0, 0)
    assert ops.quantize_multiplier(1.0) == (1 << 30, 30)
    assert ops.quantize_multiplier(2.0 ** -33) == (1 << 30, 63)
    # 1 - 2^-40 rounds up to 2^31 at n=31 and must renormalise to (2^30, 30)
    assert ops.quantize_multiplier(1 - 2.0 ** -40) == (1 << 30, 30)
    for bad in (-1.0, float("nan"), float("inf"), 2.0 ** 31, 2.0 ** -34):
        with pytest.raises(ValueError, match="quantize_multiplier"):
            ops.quantize_multiplier(bad)


@SET
@given(ra=st.floats(1e-6, 1e3), rb=st.floats(1e-6, 1e3))
def test_quantize_multiplier_pair_shares_shift(ra, rb):
    Ma, Mb, n = ops.quantize_multiplier_pair(ra, rb)
    assert 0 <= Ma < 1 << 31 and 0 <= Mb < 1 << 31 and 0 <= n <= 63
    assert max(Ma, Mb) >= 1 << 30
    for r, M in ((ra, Ma), (rb, Mb)):
        assert M == rhu(Fraction(r) * (1 << n))


@SET
@given(r=st.floats(-1e4, 1e4).filter(lambda v: abs(v) > 1e-12))
def test_quantize_signed_multiplier(r):
    G, n = ops.quantize_signed_multiplier(r)
    assert abs(G) < 1 << 15 and 0 <= n <= 63 and (G > 0) == (r > 0)
    assert abs(G) == rhu(abs(Fraction(r)) * (1 << n))
    if n < 63:
        assert abs(G) >= 1 << 14


# --------------------------------------------------------------------------- requantize
@SET
@given(acc=ints((3, 4), I32_MIN, I32_MAX), mn=st.lists(mults, min_size=4, max_size=4),
       z=st.integers(0, 255))
def test_requantize_exact_per_channel(acc, mn, z):
    M = np.array([m for m, _ in mn]); n = np.array([s for _, s in mn])
    got = ops.requantize(acc, M, n, z)
    for i in range(3):
        for c in range(4):
            want = clamp(z + rhu(Fraction(int(acc[i, c]) * int(M[c]), 1 << int(n[c]))), 0, 255)
            assert got[i, c] == want


@SET
@given(acc=ints((16,), -(1 << 24), 1 << 24), r=st.floats(1e-7, 1e-2), z=st.integers(0, 255))
def test_requantize_within_half_lsb_of_real_scale(acc, r, z):
    M, n = ops.quantize_multiplier(r)
    got = ops.requantize(acc, M, n, z, lo=-(1 << 40), hi=1 << 40)   # unclamped
    for a, q in zip(acc.tolist(), got.tolist()):
        real = Fraction(a) * Fraction(r)
        # half an LSB of rounding + the multiplier's relative error 2^-31
        assert abs(q - z - real) <= Fraction(1, 2) + abs(real) / (1 << 31)


def test_requantize_extremes_and_overflow():
    acc = np.array([I32_MIN, I32_MAX, 0, -1, 1], dtype=np.int64)
    M = (1 << 31) - 1
    for n in (0, 31, 62, 63):
        got = ops.requantize(acc, M, n, 0, lo=-(1 << 62), hi=1 << 62)
        assert got.tolist() == [rhu(Fraction(a * M, 1 << n)) for a in acc.tolist()]
    assert ops.requantize(acc, 1 << 30, 30, 128).tolist() == [0, 255, 128, 127, 129]
    with pytest.raises(OverflowError, match="32-bit"):
        ops.requantize(np.array([1 << 31]), 1 << 30, 30, 0)
    with pytest.raises(ValueError, match="multiplier M"):
        ops.requantize(np.array([1]), 1 << 31, 30, 0)
    with pytest.raises(TypeError, match="integer"):
        ops.requantize(np.array([1.5]), 1 << 30, 30, 0)


# --------------------------------------------------------------------------- convolutions
def conv_reference(x, z, w, b, stride, padding, groups):
    """Float (exact at these magnitudes) definition: b + sum w (x - z), real-zero padding."""
    import torch
    zc = np.broadcast_to(np.asarray(z), (x.shape[1],)).reshape(1, -1, 1, 1)
    xc = torch.tensor(x - zc, dtype=torch.float64)
    out = torch.nn.functional.conv2d(xc, torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                                     stride=stride, padding=padding, groups=groups)
    return out.numpy()


@st.composite
def conv_cases(draw):
    kind = draw(st.sampled_from(["generic", "pointwise", "grouped", "depthwise"]))
    k = {"generic": draw(st.sampled_from([1, 3])), "pointwise": 1, "grouped": 1,
         "depthwise": draw(st.sampled_from([3, 5]))}[kind]
    groups = {"generic": 1, "pointwise": 1, "grouped": draw(st.sampled_from([2, 3])), "depthwise": None}[kind]
    cin = draw(st.integers(1, 4)) * (groups or 1)
    if kind == "depthwise":
        groups = cin
        cout = cin
    else:
        cout = draw(st.integers(1, 3)) * groups
    stride = draw(st.sampled_from([1, 2]))
    padding = k // 2
    hw = draw(st.integers(k, 7))
    extreme = draw(st.booleans())
    if extreme:   # all-max inputs, all-max weights of one sign, zero point at an edge
        x = np.full((1, cin, hw, hw), 255, dtype=np.int64)
        w = np.full((cout, cin // groups, k, k), draw(st.sampled_from([127, -127])), dtype=np.int64)
        z = draw(st.sampled_from([0, 255]))
    else:
        x = draw(ints((draw(st.integers(1, 2)), cin, hw, hw), 0, 255))
        w = draw(ints((cout, cin // groups, k, k), -127, 127))
        z = draw(st.one_of(st.integers(0, 255), ints((cin,), 0, 255)))
    b = draw(ints((cout,), -(1 << 20), 1 << 20))
    return x, z, w, b, stride, padding, groups


@SET
@given(case=conv_cases())
def test_conv2d_matches_definition_exactly(case):
    x, z, w, b, stride, padding, groups = case
    got = ops.conv2d(x, z, w, ops.fold_bias(b, w, z, groups), stride, padding, groups)
    want = conv_reference(x, z, w, b, stride, padding, groups)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want.astype(np.int64))


def test_conv2d_widest_pointwise_fits_and_overflow_raises():
    # the widest reduction of B0..B3 (K = 2304 at the head's Linear): all-max stays inside int32
    x = np.full((1, 2304, 1, 1), 255, dtype=np.int64)
    w = np.full((1, 2304, 1, 1), -127, dtype=np.int64)
    acc = ops.conv2d(x, 0, w, np.zeros(1, dtype=np.int64))
    assert int(acc.ravel()[0]) == -2304 * 255 * 127
    with pytest.raises(OverflowError, match="accumulator"):
        ops.conv2d(x, 0, w, np.array([I32_MIN + 100]))
    with pytest.raises(ValueError, match="weights"):
        ops.conv2d(x, 0, np.full((1, 2304, 1, 1), -128), np.zeros(1, dtype=np.int64))
    with pytest.raises(TypeError, match="integer"):
        ops.conv2d(x.astype(np.float32), 0, w, np.zeros(1, dtype=np.int64))


@SET
@given(x=ints((2, 5), 0, 255), w=ints((3, 5), -127, 127), b=ints((3,), -(1 << 20), 1 << 20),
       z=st.integers(0, 255))
def test_linear_matches_definition_exactly(x, w, b, z):
    got = ops.linear(x, w, ops.fold_bias(b, w, z))
    for i in range(2):
        for c in range(3):
            assert got[i, c] == int(b[c]) + sum(int(w[c, k]) * (int(x[i, k]) - z) for k in range(5))


# --------------------------------------------------------------------------- hardswish, residual, relu
def hswish(v: Fraction) -> Fraction:
    return v * min(max(v + 3, Fraction(0)), Fraction(6)) / 6


@SET
@given(p=ints((2, 3), 0, 255), z_p=st.integers(0, 255), t3=st.integers(1, (1 << 22) - 1),
       mn=st.lists(mults, min_size=3, max_size=3), z=st.integers(0, 255))
def test_hardswish_exact(p, z_p, t3, mn, z):
    M = np.array([m for m, _ in mn]); n = np.array([s for _, s in mn])
    got = ops.hardswish(p, z_p, t3, M, n, z)
    for i in range(2):
        for c in range(3):
            k = int(p[i, c]) - z_p
            h = k * clamp(k + t3, 0, 2 * t3)
            assert got[i, c] == clamp(z + rhu(Fraction(h * int(M[c]), 1 << int(n[c]))), 0, 255)


@SET
@given(p=ints((64,), 0, 255), z_p=st.integers(0, 255), t3=st.integers(4, 200),
       s_out=st.floats(1e-3, 1.0), z=st.integers(0, 255))
def test_hardswish_within_rounding_of_float_definition(p, z_p, t3, s_out, z):
    s_p = Fraction(3, t3)                       # a scale with an exact knee, so t3 = 3 / s_p
    assert ops.hardswish_t3(float(s_p)) == t3
    M, n = ops.quantize_multiplier(float(s_p * s_p / 6) / s_out)
    # at an exact knee (t3 s_p = 3) the gain-corrected factor is the textbook s_p^2 / 6
    assert ops.hardswish_output_factor(float(s_p), t3, s_out) == pytest.approx(float(s_p * s_p / 6) / s_out, rel=1e-12)
    got = ops.hardswish(p, z_p, t3, M, n, z, lo=-(1 << 40), hi=1 << 40)
    for code, q in zip(p.tolist(), got.tolist()):
        real = hswish(s_p * (code - z_p)) / Fraction(s_out)
        assert abs(q - z - real) <= Fraction(1, 2) + abs(real) * Fraction(3, 1 << 31) + Fraction(1, 1 << 20)


def test_hardswish_linear_part_is_exact_with_a_snapped_knee():
    s_p, z_p, s_out = 0.137, 10, 0.05             # 3 / s_p = 21.9: the knee snaps to 22 s_p = 3.014
    t3 = ops.hardswish_t3(s_p)
    M, n = ops.quantize_multiplier(float(ops.hardswish_output_factor(s_p, t3, s_out)))
    p = np.arange(z_p + t3, 256)
    got = ops.hardswish(p, z_p, t3, M, n, 0, lo=-(1 << 40), hi=1 << 40)
    real = (p - z_p) * s_p / s_out                  # hardswish(x) = x above the knee
    assert np.abs(got - real).max() <= 0.5 + 1e-6 * real.max()
    M6, n6 = ops.quantize_multiplier(s_p * s_p / (6 * s_out))  # the textbook gain misses by t / 3
    assert np.abs(ops.hardswish(p, z_p, t3, M6, n6, 0, lo=-(1 << 40), hi=1 << 40) - real).max() > 2


@SET
@given(a=ints((2, 3), 0, 255), b=ints((2, 3), 0, 255), za=st.integers(0, 255), zb=st.integers(0, 255),
       Ma=st.integers(0, (1 << 31) - 1), Mb=st.integers(0, (1 << 31) - 1), n=st.integers(0, 63),
       z=st.integers(0, 255))
def test_residual_add_exact(a, b, za, zb, Ma, Mb, n, z):
    got = ops.residual_add(a, za, Ma, b, zb, Mb, n, z)
    for idx in np.ndindex(a.shape):
        s = Ma * (int(a[idx]) - za) + Mb * (int(b[idx]) - zb)
        assert got[idx] == clamp(z + rhu(Fraction(s, 1 << n)), 0, 255)


@SET
@given(a=ints((32,), 0, 255), b=ints((32,), 0, 255), za=st.integers(0, 255), zb=st.integers(0, 255),
       sa=st.floats(1e-3, 1.0), sb=st.floats(1e-3, 1.0), so=st.floats(1e-3, 1.0), z=st.integers(0, 255))
def test_residual_add_within_rounding_of_real_sum(a, b, za, zb, sa, sb, so, z):
    Ma, Mb, n = ops.quantize_multiplier_pair(sa / so, sb / so)
    got = ops.residual_add(a, za, Ma, b, zb, Mb, n, z, lo=-(1 << 40), hi=1 << 40)
    for x, y, q in zip(a.tolist(), b.tolist(), got.tolist()):
        ra, rb = Fraction(sa) * (x - za) / Fraction(so), Fraction(sb) * (y - zb) / Fraction(so)
        # each multiplier is within half a unit of 2^-n: error <= 255 * 2^-n per operand
        err = Fraction(1, 2) + Fraction(255 * 2, 1 << n)
        assert abs(q - z - (ra + rb)) <= err


def test_relu_zp_edges():
    x = np.array([0, 5, 6, 255], dtype=np.uint8)
    assert ops.relu_zp(x, 5).tolist() == [0, 0, 1, 250]
    assert ops.relu_zp(x, 0).tolist() == [0, 5, 6, 255]
    assert ops.relu_zp(x, 255).tolist() == [0, 0, 0, 0]


# --------------------------------------------------------------------------- attention
def py_round_log2(x: int) -> int:
    p = x.bit_length() - 1
    return p + (x * x >= 1 << (2 * p + 1))


@SET
@given(x=st.integers(1, (1 << 31) - 1))
def test_round_log2_exact_and_float(x):
    assert int(ops.round_log2(np.int64(x))) == py_round_log2(x)
    lg = math.log2(x)
    if abs(lg - math.floor(lg) - 0.5) > 1e-9:     # no exact ties exist for integers > 1
        assert int(ops.round_log2(np.int64(x))) == math.floor(lg + 0.5)


def test_round_log2_boundaries():
    # around sqrt(2) * 2^p: 181^2 = 32761 < 2^15 <= 182^2
    assert ops.round_log2(np.array([1, 2, 3, 181, 182, (1 << 31) - 1])).tolist() == [0, 1, 2, 7, 8, 31]
    with pytest.raises(ValueError):
        ops.round_log2(np.array([0]))


@SET
@given(den=st.integers(0, (1 << 31) - 1), e_lo=st.integers(-6, 16))
def test_log2_code_clamps(den, e_lo):
    e, code = ops.log2_code(np.array([den]), e_lo)
    want = e_lo if den == 0 else clamp(py_round_log2(den), e_lo, e_lo + 15)
    assert int(e[0]) == want and int(code[0]) == want - e_lo and 0 <= int(code[0]) <= 15


def py_mantissa_step(x: int) -> int:
    """The index h of the divisor {1, 4/3} 2^e nearest x in log2, by comparing exact rational squares:
    the candidates 2^p, (4/3) 2^p, 2^(p+1) around x; x vs the geometric mean of two neighbours a, b
    is x^2 vs a b (no irrational numbers, no floats)."""
    from fractions import Fraction
    p = x.bit_length() - 1
    a, b, c = Fraction(1 << p), Fraction(4, 3) * (1 << p), Fraction(1 << (p + 1))
    return 2 * p + (x * x >= a * b) + (x * x >= b * c)


@SET
@given(x=st.integers(1, (1 << 31) - 1))
def test_round_log2_mantissa_bit_is_the_nearest_step(x):
    h = int(ops.round_log2(np.int64(x), 1))
    assert h == py_mantissa_step(x)
    step = lambda k: 2.0 ** (k >> 1) * (4 / 3 if k & 1 else 1.0)      # noqa: E731
    assert all(abs(math.log2(x / step(h))) <= abs(math.log2(x / step(k))) + 1e-12 for k in (h - 1, h + 1))


def test_log2_mantissa_thresholds_both_sides():
    from arch.formats import log2_thresholds
    for p in range(1, 31):
        for t in log2_thresholds(1)[p]:
            for x in (t - 1, t):
                if x >= 1 << p:
                    assert int(ops.round_log2(np.int64(x), 1)) == py_mantissa_step(x), (p, x)


@SET
@given(den=st.integers(0, (1 << 31) - 1), e_lo=st.integers(-6, 16))
def test_log2_code_mantissa_bit_clamps(den, e_lo):
    e, code = ops.log2_code(np.array([den]), e_lo, frac_bits=1)
    h = 2 * e_lo if den == 0 else clamp(py_mantissa_step(den), 2 * e_lo, 2 * e_lo + 31)
    assert int(e[0]) == h >> 1 and int(code[0]) == h - 2 * e_lo and 0 <= int(code[0]) <= 31


def test_attention_divide_mantissa_row():
    """f = 1 takes (M_o1, n_o1); f = 0 the first row; a missing second row is refused."""
    num = np.array([[1000, -1000], [1000, -1000]])
    e, f = np.array([2, 2]), np.array([0, 1])
    out = ops.attention_divide(num, e, np.array([1 << 30, 1 << 30]), np.array([30, 30]), 0, lo=-999, hi=999,
                               f=f, M_o1=np.array([3 << 28, 3 << 28]), n_o1=np.array([30, 30]))
    assert out.tolist() == [[250, -250], [188, -187]]        # 1000 / 4, then 3/4 of it, rounded half up
    with pytest.raises(ValueError, match="M_o1"):
        ops.attention_divide(num, e, 1 << 30, 30, 0, f=f)


def test_log2_code_divisor_at_clamp_limits():
    e_lo = 3
    lo_edge = [0, 1, 11, 12]                    # round_log2: (e_lo), 0, 3, 4 -> clamp to 3, 3, 3, 4
    hi_edge = [(1 << 18) - 1, 1 << 18, 370727, 370728, (1 << 31) - 1]   # 18, 18, 18, 19, 31 -> clamp at 18
    e, code = ops.log2_code(np.array(lo_edge + hi_edge), e_lo)
    assert e.tolist() == [3, 3, 3, 4, 18, 18, 18, 18, 18]
    assert code.tolist() == [0, 0, 0, 1, 15, 15, 15, 15, 15]


def attention_reference(q, zq, k, zk, v, zv, Mkv, nkv, Mks, nks, Mo, no, e_lo, zo):
    """Element-by-element SPEC 5 with Python integers."""
    N, d = q.shape
    kr = [[max(int(k[t, i]) - zk, 0) for i in range(d)] for t in range(N)]
    qr = [[max(int(q[t, i]) - zq, 0) for i in range(d)] for t in range(N)]
    ksum = [sum(kr[t][i] for t in range(N)) for i in range(d)]
    kv_acc = [[sum(kr[t][i] * int(v[t, j]) for t in range(N)) - zv * ksum[i] for j in range(d)] for i in range(d)]
    kv = [[clamp(rhu(Fraction(kv_acc[i][j] * Mkv[j], 1 << nkv[j])), -127, 127) for j in range(d)] for i in range(d)]
    ks = [clamp(rhu(Fraction(ksum[i] * Mks, 1 << nks)), 0, 255) for i in range(d)]
    num = [[sum(qr[t][i] * kv[i][j] for i in range(d)) for j in range(d)] for t in range(N)]
    den = [sum(qr[t][i] * ks[i] for i in range(d)) for t in range(N)]
    e = [e_lo if dn == 0 else clamp(py_round_log2(dn), e_lo, e_lo + 15) for dn in den]
    out = [[clamp(zo + rhu(Fraction(num[t][j] * Mo[j], 1 << (no[j] + e[t]))), 0, 255) for j in range(d)]
           for t in range(N)]
    return dict(kv_acc=kv_acc, ksum=ksum, kv=kv, ks=ks, num=num, den=den, e=e, out=out)


@st.composite
def attention_cases(draw):
    N, d = draw(st.integers(1, 12)), draw(st.sampled_from([2, 4]))
    extreme = draw(st.sampled_from(["none", "allmax", "allzero_q"]))
    q = draw(ints((N, d), 0, 255)); k = draw(ints((N, d), 0, 255)); v = draw(ints((N, d), 0, 255))
    zq, zk, zv = (draw(st.integers(0, 255)) for _ in range(3))
    if extreme == "allmax":
        q[:] = 255; k[:] = 255; v[:] = 255; zq = zk = 0; zv = draw(st.sampled_from([0, 255]))
    elif extreme == "allzero_q":                 # den = 0 for every token
        zq = 255
    Mkv = [draw(st.integers(1 << 30, (1 << 31) - 1)) for _ in range(d)]
    nkv = [draw(st.integers(30, 50)) for _ in range(d)]
    Mks, nks = draw(st.integers(1 << 30, (1 << 31) - 1)), draw(st.integers(30, 50))
    Mo = [draw(st.integers(1 << 30, (1 << 31) - 1)) for _ in range(d)]
    e_lo = draw(st.integers(0, 8))
    no = [draw(st.integers(0, 40)) for _ in range(d)]
    zo = draw(st.integers(0, 255))
    return q, zq, k, zk, v, zv, Mkv, nkv, Mks, nks, Mo, no, e_lo, zo


@SET
@given(case=attention_cases())
def test_attention_pipeline_exact(case):
    q, zq, k, zk, v, zv, Mkv, nkv, Mks, nks, Mo, no, e_lo, zo = case
    ref = attention_reference(*case)
    kv_acc, ksum = ops.attention_kv(k, zk, v, zv)
    assert kv_acc.tolist() == ref["kv_acc"] and ksum.tolist() == ref["ksum"]
    kv, ks = ops.attention_requant_kv(kv_acc, ksum, np.array(Mkv), np.array(nkv), Mks, nks)
    assert kv.tolist() == ref["kv"] and ks.tolist() == ref["ks"]
    res = ops.attention_out(q, zq, kv, ks, np.array(Mo), np.array(no), e_lo, zo, return_all=True)
    for key in ("num", "den", "e", "out"):
        assert res[key].tolist() == ref[key], key
    if zq == 255:                                # den = 0: e = e_lo, num = 0, output = z_out
        assert (res["den"] == 0).all() and (res["code"] == 0).all() and (res["out"] == zo).all()


def test_attention_kv_float_definition_and_heads_axis():
    rng = np.random.default_rng(0)
    k = rng.integers(0, 256, (3, 20, 4)); v = rng.integers(0, 256, (3, 20, 4))
    zk, zv = 100, np.array([3, 200, 128, 0])
    kv_acc, ksum = ops.attention_kv(k, zk, v, zv)
    kr = np.maximum(k.astype(np.float64) - zk, 0)
    np.testing.assert_array_equal(kv_acc, np.swapaxes(kr, 1, 2) @ (v - zv))     # k^T (v - z_v), exact in float64
    np.testing.assert_array_equal(ksum, kr.sum(axis=1))


def test_attention_divide_real_division_and_shift_limits():
    # out = num * M_o 2^-(n_o + e): with den an exact power of two this is num / den * M_o 2^-n_o
    num = np.array([[1000, -1000, 3, 0]]); M, n = ops.quantize_multiplier(0.75)
    e, _ = ops.log2_code(np.array([64]), 0)
    got = ops.attention_divide(num, e, M, n, 128, lo=-(1 << 30), hi=1 << 30)
    assert got.tolist() == [[128 + rhu(Fraction(x * 3, 4 * 64)) for x in (1000, -1000, 3, 0)]]
    with pytest.raises(ValueError, match="total shift"):
        ops.attention_divide(num, np.array([60]), M, 10, 0)
    with pytest.raises(ValueError, match="total shift"):
        ops.attention_divide(num, np.array([-3]), M, 2, 0)


# --------------------------------------------------------------------------- pooling, LayerNorm, logits
@SET
@given(x=ints((1, 3, 4, 5), 0, 255), z=st.one_of(st.integers(0, 255), ints((3,), 0, 255)),
       s=st.floats(1e-3, 1.0), so=st.floats(1e-3, 1.0), zo=st.integers(0, 255))
def test_global_avgpool_exact_and_real(x, z, s, so, zo):
    M, n = ops.quantize_multiplier(s / (20 * so))
    got = ops.global_avgpool(x, z, M, n, zo, lo=-(1 << 30), hi=1 << 30)
    zc = np.broadcast_to(np.asarray(z), (3,))
    for c in range(3):
        tot = int((x[0, c] - int(zc[c])).sum())
        assert got[0, c] == zo + rhu(Fraction(tot * M, 1 << n))
        real = Fraction(s) * Fraction(tot, 20) / Fraction(so)
        assert abs(got[0, c] - zo - real) <= Fraction(1, 2) + abs(real) / (1 << 30)


@SET
@given(x=st.integers(0, (1 << 63) - 1))
def test_isqrt_exact(x):
    assert int(ops.isqrt(np.int64(x))) == math.isqrt(x)


def test_isqrt_squares_edges():
    vals = [0, 1, 2, 3, 4, 8, 9, (1 << 31) ** 2 - 1, (1 << 62) - 1, 1 << 62, (1 << 63) - 1] + [r * r + d for r in (7, 46340, 3037000499) for d in (-1, 0, 1)]
    vals = [v for v in vals if 0 <= v < 1 << 63]
    assert ops.isqrt(np.array(vals)).tolist() == [math.isqrt(v) for v in vals]


def ln_reference(x, z, eps_int, G, B, n, zo, frac_bits=10, recip_bits=31):
    """SPEC 7 element by element with Python integers."""
    C = len(x)
    d = [int(v) - z for v in x]
    s1 = sum(d)
    V = C * sum(t * t for t in d) - s1 * s1 + eps_int
    R = math.isqrt((1 << (2 * recip_bits)) // max(V, 1))
    out = []
    for c in range(C):
        y = rhu(Fraction((C * d[c] - s1) * R, 1 << (recip_bits - frac_bits)))
        out.append(clamp(zo + rhu(Fraction(y * int(G[c]) + int(B[c]), 1 << int(n[c]))), 0, 255))
    return out


@st.composite
def ln_cases(draw):
    C = draw(st.sampled_from([4, 16, 64]))
    kind = draw(st.sampled_from(["random", "constant", "two_level", "extreme"]))
    if kind == "constant":
        x = np.full(C, draw(st.integers(0, 255)), dtype=np.int64)
    elif kind == "two_level":     # maximal spread: half at 0, half at 255
        x = np.array([0, 255] * (C // 2), dtype=np.int64)
    elif kind == "extreme":       # one outlier at max: largest |normalised| value, sqrt(C - 1)
        x = np.zeros(C, dtype=np.int64); x[draw(st.integers(0, C - 1))] = 255
    else:
        x = draw(ints((C,), 0, 255))
    z = draw(st.integers(0, 255))
    gamma = np.array(draw(st.lists(st.floats(0.05, 3.0) | st.floats(-3.0, -0.05), min_size=C, max_size=C)))
    beta = np.array(draw(st.lists(st.floats(-2.0, 2.0), min_size=C, max_size=C)))
    s_x = draw(st.floats(1e-3, 0.1))
    s_out = draw(st.floats(0.02, 0.2))
    return x, z, gamma, beta, s_x, s_out


@settings(max_examples=max(N_EX * 2 // 3, 1), deadline=None)
@given(case=ln_cases(), zo=st.integers(0, 255))
def test_layernorm_exact_and_within_one_lsb_of_float(case, zo):
    x, z, gamma, beta, s_x, s_out = case
    eps = 1e-5
    eps_int, G, B, n = ops.layernorm_params(gamma, beta, s_x, s_out, eps)
    got = ops.layernorm(x[None], z, eps_int, G, B, n, zo)[0]
    assert got.tolist() == ln_reference(x, z, int(eps_int), G, B, n, zo)
    # the finer variant (K = 47, 16 fractional bits) is exact against the same definition too
    eps_f, G_f, B_f, n_f = ops.layernorm_params(gamma, beta, s_x, s_out, eps, frac_bits=16)
    fine = ops.layernorm(x[None], z, eps_f, G_f, B_f, n_f, zo, frac_bits=16, recip_bits=47)[0]
    assert fine.tolist() == ln_reference(x, z, int(eps_f), G_f, B_f, n_f, zo, 16, 47)
    # float definition on the dequantized input; the integer eps is the rounded eps
    xr = s_x * (x - z).astype(np.float64)
    var = xr.var()
    y = (xr - xr.mean()) / np.sqrt(var + eps)
    want = np.clip(zo + (gamma * y + beta) / s_out, 0, 255)
    assert np.abs(got - want).max() <= 1.0, (got, want)
    assert np.abs(fine - want).max() <= 1.0, (fine, want)


@SET
@given(acc=ints((2, 5), I32_MIN, I32_MAX), mn=st.lists(mults, min_size=5, max_size=5))
def test_logits_requant_exact_int16(acc, mn):
    M = np.array([m for m, _ in mn]); n = np.array([s for _, s in mn])
    got = ops.logits_requant(acc, M, n)
    for i in range(2):
        for c in range(5):
            assert got[i, c] == clamp(rhu(Fraction(int(acc[i, c]) * int(M[c]), 1 << int(n[c]))), -32768, 32767)


def test_layernorm_rejects_bad_parameters():
    x = np.zeros((1, 4), dtype=np.int64)
    G = np.full(4, 1 << 14); B = np.zeros(4, dtype=np.int64); n = np.full(4, 20)
    with pytest.raises(ValueError, match="G"):
        ops.layernorm(x, 0, 0, np.full(4, 1 << 15), B, n, 0)
    with pytest.raises(ValueError, match="scalars"):
        ops.layernorm(x, np.zeros(4, dtype=np.int64), 0, G, B, n, 0)
    with pytest.raises(TypeError, match="integer"):
        ops.layernorm(x.astype(float), 0, 0, G, B, n, 0)


def test_hardswish_knee_limits():
    t3 = (1 << 22) - 1                             # the widest knee rtl/hswish.py holds: |h| < 2^31
    p = np.array([[0, 255]])
    M, n = ops.quantize_multiplier(2.0 ** -20)
    got = ops.hardswish(p, 0, t3, M, n, 0, lo=-(1 << 40), hi=1 << 40, axis=1)
    assert got.tolist() == [[0, rhu(Fraction(255 * (255 + t3) * M, 1 << n))]]
    with pytest.raises(ValueError, match="t3"):
        ops.hardswish(p, 0, 1 << 22, M, n, 0)
    assert ops.hardswish_t3(3.0 / ((1 << 22) - 1)) == (1 << 22) - 1
    with pytest.raises(ValueError, match="t3"):
        ops.hardswish_t3(3.0 / (1 << 22))
