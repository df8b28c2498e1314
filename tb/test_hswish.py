"""rtl/hswish.py under Verilator vs golden.ops.hardswish (SPEC 3), bit-exact on every element."""
import numpy as np
import pytest

from golden import ops
from rtl.hswish import Hardswish
from tb import norm_ops
from tb.norm_cases import CONFIGS, edge_values


def hswish_case(cfg, case, rows, C, seed, s_p=None, t3=None, z_p=None, gap=0.0, bp=0.0):
    rng = np.random.default_rng(seed)
    if s_p is None:
        s_p = float(10 ** rng.uniform(-2.5, -0.5))
    t3 = ops.hardswish_t3(s_p) if t3 is None else t3
    z_p = int(rng.integers(0, 256)) if z_p is None else z_p
    # per-channel output scales, as channel-wise migration produces them
    s_out = s_p * 10 ** rng.uniform(-0.5, 1.0, C) * 255 / 6
    M, n = ops.quantize_multipliers(ops.hardswish_output_factor(s_p, t3, s_out))
    z = edge_values(rng, C, 0, 255, p_edge=0.3)
    p = edge_values(rng, rows * C, 0, 255, edges=(z_p,), p_edge=0.2).reshape(rows, C)
    kw = {"p": p, "z_p": z_p, "t3": t3, "M": M, "n": n, "z_out": z}
    return norm_ops.hardswish(cfg, case, kw, ops.hardswish(**kw), gap=gap, backpressure=bp, seed=seed)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_hswish_random_stalls(cfg):
    hswish_case(cfg, "random_stalls", rows=90, C=11, seed=21, gap=0.3, bp=0.3)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
@pytest.mark.parametrize("t3,z_p", [(1, 0), (65535, 255), (3, 128)], ids=["t3_1_zp0", "t3_max_zp255", "t3_3"])
def test_hswish_knee_extremes(cfg, t3, z_p):
    """t3 at both ends of its range and zero point edges: the clamp's knees and the largest |h|."""
    hswish_case(cfg, f"knee_t3_{t3}_zp{z_p}", rows=40, C=5, seed=22 + t3, t3=t3, z_p=z_p, s_p=0.05,
                gap=0.2, bp=0.2)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_hswish_per_channel_pre(cfg):
    """Per-channel pre-activation (SPEC 3): z_p and t3 per channel, t3 up to its 22-bit limit."""
    rng = np.random.default_rng(25)
    C, rows = 9, 100
    s_p = 10 ** rng.uniform(-3.5, -0.5, C)
    t3 = np.array([ops.hardswish_t3(float(s)) for s in s_p])
    t3[0], t3[1] = 1, (1 << 22) - 1                   # both ends of the t3 range
    z_p = edge_values(rng, C, 0, 255, p_edge=0.3)
    M, n = ops.quantize_multipliers(ops.hardswish_output_factor(s_p, t3, s_p * 255 / 6 * 10 ** rng.uniform(-0.5, 1.0, C)))
    p = edge_values(rng, rows * C, 0, 255, p_edge=0.2).reshape(rows, C)
    kw = {"p": p, "z_p": z_p, "t3": t3, "M": M, "n": n, "z_out": edge_values(rng, C, 0, 255, p_edge=0.3)}
    norm_ops.hardswish(cfg, "per_channel_pre", kw, ops.hardswish(**kw), gap=0.3, backpressure=0.3, seed=25)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_hswish_throughput(cfg):
    res = hswish_case(cfg, "throughput", rows=64, C=8, seed=23)
    assert res["cycles"] == 64 * 8 // cfg.mat_lanes + Hardswish.LATENCY


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
def test_hswish_random_large(cfg):
    hswish_case(cfg, "random_large", rows=500, C=19, seed=24, gap=0.2, bp=0.4)
