"""rtl/divider.py under Verilator vs golden.ops.log2_code + attention_divide (SPEC 5 steps 4-5).

Every output code and every token's 4-bit divisor code are compared bit-exactly.
"""
import math

import numpy as np
import pytest

from arch.formats import log2_thresholds
from golden import ops
from rtl.divider import Log2Divider
from tb import norm_ops
from tb.norm_cases import CONFIGS, edge_values


def den_values(rng, n: int) -> np.ndarray:
    """Denominators with every rounding edge: 0, 1, 2^p, and both sides of every threshold for all p
    (sqrt(2) 2^p; the mantissa bit's sqrt(4/3) 2^p and sqrt(8/3) 2^p)."""
    edges = [0, 1, 2, 3, (1 << 31) - 1]
    for p in range(31):
        t = math.isqrt((1 << (2 * p + 1)) - 1) + 1       # least x with x^2 >= 2^(2p+1)
        edges += [1 << p, t - 1, t]
        for t in log2_thresholds(1)[p]:                  # least x with 3 x^2 >= 4 (8) 4^p
            edges += [t - 1, t]
    edges = [e for e in edges if 0 <= e < 1 << 31]
    d = np.exp(rng.uniform(0, math.log(2 ** 31 - 1), n)).astype(np.int64)
    pick = rng.random(n) < 0.5
    d[pick] = rng.choice(np.array(edges, dtype=np.int64), int(pick.sum()))
    return d


def divider_case(cfg, case, tokens, d, seed, e_lo=-6, gap=0.0, bp=0.0, frac=0):
    rng = np.random.default_rng(seed)
    k = cfg.log2_code_bits
    e_hi = e_lo + (1 << k) - 1
    den = den_values(rng, tokens)
    num = edge_values(rng, tokens * d, -(1 << 31), (1 << 31) - 1, edges=(-1, 0, 1), p_edge=0.05)
    typical = rng.random(tokens * d) < 0.7
    num[typical] = rng.integers(-(1 << 22), 1 << 22, int(typical.sum()))
    num = num.reshape(tokens, d)
    M = edge_values(rng, d, 1 << 30, (1 << 31) - 1, edges=(0,), p_edge=0.2)
    n_lo, n_hi = max(0, -e_lo), ops.SHIFT_MAX - e_hi        # keeps n_o + e in [0, 63] (attention_divide's rule)
    n = edge_values(rng, d, n_lo, n_hi, p_edge=0.3)
    n[(rng.random(d) < 0.6)] = np.clip(rng.integers(20, 40), n_lo, n_hi)
    z = edge_values(rng, d, 0, 255, p_edge=0.3)
    kw_code = {"den": den, "e_lo": e_lo, "code_bits": k, "frac_bits": frac}
    e, code = ops.log2_code(**kw_code)
    kw_div = {"num": num, "e": e, "M_o": M, "n_o": n, "z_out": z}
    if frac:   # the rows of f = 1: 3/4 of the multiplier, one shift less where it would leave [0, 63]
        M1 = edge_values(rng, d, 1 << 30, (1 << 31) - 1, edges=(0,), p_edge=0.2)
        n1 = np.clip(n + rng.integers(0, 2, d), n_lo, n_hi)
        kw_div.update(f=code & 1, M_o1=M1, n_o1=n1)
    return norm_ops.attention_divide(cfg, case, kw_code, {"e": e, "code": code}, kw_div,
                                     ops.attention_divide(**kw_div), gap=gap, backpressure=bp, seed=seed)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_divider_random_stalls(cfg):
    """~1,000 tokens' denominators (all sqrt(2) thresholds, 0, 2^31-1), e_lo = -6 as in the paper."""
    divider_case(cfg, "random_stalls", tokens=500, d=4, seed=41, gap=0.3, bp=0.3)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
@pytest.mark.parametrize("e_lo", [0, 12, 16, 31], ids=lambda v: f"elo{v}")
def test_divider_clamp_limits(cfg, e_lo):
    """Code clamp at both ends: e_lo above many exponents (low clamp) and e_lo + 15 below them."""
    divider_case(cfg, f"clamp_elo{e_lo}", tokens=150, d=2, seed=42 + e_lo, e_lo=e_lo, gap=0.2, bp=0.2)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
@pytest.mark.parametrize("e_lo", [-6, 0, 31], ids=lambda v: f"elo{v}")
def test_divider_mantissa_bit(cfg, e_lo):
    """The divisor with a mantissa bit ({1, 4/3} 2^e): every threshold's both sides, both clamps, the
    second multiplier row."""
    divider_case(cfg, f"mantissa_elo{e_lo}", tokens=400, d=3, seed=45 + e_lo, e_lo=e_lo, gap=0.2, bp=0.2, frac=1)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_divider_throughput(cfg):
    res = divider_case(cfg, "throughput", tokens=64, d=8, seed=43)
    assert res["cycles"] == 64 * 8 // cfg.mat_lanes + Log2Divider.LATENCY


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
def test_divider_random_large(cfg):
    divider_case(cfg, "random_large", tokens=1500, d=16, seed=44, gap=0.2, bp=0.4)
