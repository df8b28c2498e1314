"""rtl/residual.py under Verilator vs golden.ops.residual_add (SPEC 4), bit-exact on every element."""
import numpy as np
import pytest

from golden import ops
from rtl.residual import ResidualAdd
from tb import norm_ops
from tb.norm_cases import CONFIGS, edge_values


def residual_case(cfg, case, rows, C, seed, mult=None, gap=0.0, bp=0.0):
    """``mult``: (Ma, Mb, n) or None for a pair derived from random real scales."""
    rng = np.random.default_rng(seed)
    if mult is None:
        ra, rb = 10 ** rng.uniform(-1.5, 0.5, 2)
        mult = ops.quantize_multiplier_pair(ra, rb)
    Ma, Mb, n = (int(v) for v in mult)
    z_a, z_b, z_out = (int(v) for v in edge_values(rng, 3, 0, 255, p_edge=0.4))
    a = edge_values(rng, rows * C, 0, 255, edges=(z_a,), p_edge=0.2).reshape(rows, C)
    b = edge_values(rng, rows * C, 0, 255, edges=(z_b,), p_edge=0.2).reshape(rows, C)
    kw = {"a": a, "z_a": z_a, "Ma": Ma, "b": b, "z_b": z_b, "Mb": Mb, "n": n, "z_out": z_out}
    return norm_ops.residual_add(cfg, case, kw, ops.residual_add(**kw), gap=gap, backpressure=bp, seed=seed)


M31 = (1 << 31) - 1
# (Ma, Mb, n) of the first channels of a per-channel case: the multiplier and shift extremes
EXTREME_PAIRS = [(M31, M31, 0), (M31, M31, 63), (0, M31, 32), (M31, 0, 31), (0, 0, 63), (M31, 1 << 30, 0)]


def residual_per_channel_case(cfg, case, rows, C, seed, gap=0.0, bp=0.0):
    """Every parameter per channel (an operand with per-channel scales): pairs from random scale ratios with
    EXTREME_PAIRS in the first channels, zero points and codes with 0 / 255, z_out at its int16 ends in the last two."""
    rng = np.random.default_rng(seed)
    ra, rb = 10 ** rng.uniform(-1.5, 0.5, (2, C))
    Ma, Mb, n = (np.array(v, dtype=np.int64) for v in zip(*map(ops.quantize_multiplier_pair, ra, rb)))
    for c, (ma, mb, sh) in enumerate(EXTREME_PAIRS[:C]):
        Ma[c], Mb[c], n[c] = ma, mb, sh
    z_a, z_b, z_out = (edge_values(rng, C, 0, 255, p_edge=0.3) for _ in range(3))
    z_a[:2], z_b[:2], z_out[-2:] = (0, 255), (255, 0), (-(1 << 15), (1 << 15) - 1)
    a, b = (edge_values(rng, rows * C, 0, 255, p_edge=0.2).reshape(rows, C) for _ in range(2))
    for x, z in ((a, z_a), (b, z_b)):              # some codes at their own channel's zero point
        at_z = rng.random(x.shape) < 0.1
        x[at_z] = np.broadcast_to(z, x.shape)[at_z]
    kw = {"a": a, "z_a": z_a, "Ma": Ma, "b": b, "z_b": z_b, "Mb": Mb, "n": n, "z_out": z_out}
    return norm_ops.residual_add(cfg, case, kw, ops.residual_add(**kw), gap=gap, backpressure=bp, seed=seed)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_residual_random_stalls(cfg):
    """Both inputs with independent random gaps (the join), random backpressure."""
    residual_case(cfg, "random_stalls", rows=110, C=9, seed=31, gap=0.3, bp=0.3)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
@pytest.mark.parametrize("mult", [((1 << 31) - 1, (1 << 31) - 1, 0), ((1 << 31) - 1, (1 << 31) - 1, 63),
                                  ((1 << 31) - 1, 1 << 30, 31), (0, (1 << 31) - 1, 32)],
                         ids=["max_n0", "max_n63", "n31", "ma0"])
def test_residual_extremes(cfg, mult):
    residual_case(cfg, f"extreme_{mult[0]}_{mult[1]}_{mult[2]}", rows=30, C=4, seed=32, mult=mult,
                  gap=0.1, bp=0.1)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_residual_per_channel(cfg):
    """Per-channel parameters over 7 lane groups (the last one partial), random gaps and backpressure."""
    residual_per_channel_case(cfg, "per_channel", rows=60, C=13, seed=35, gap=0.3, bp=0.3)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_residual_throughput(cfg):
    res = residual_case(cfg, "throughput", rows=64, C=8, seed=33)
    assert res["cycles"] == 64 * 8 // cfg.mat_lanes + ResidualAdd.LATENCY


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
def test_residual_random_large(cfg):
    residual_case(cfg, "random_large", rows=500, C=16, seed=34, gap=0.3, bp=0.4)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
def test_residual_per_channel_large(cfg):
    residual_per_channel_case(cfg, "per_channel_large", rows=300, C=37, seed=36, gap=0.3, bp=0.4)
