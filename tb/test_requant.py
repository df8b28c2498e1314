"""rtl/requant.py under Verilator vs golden.ops.requantize (SPEC 1), bit-exact on every element."""
import numpy as np
import pytest

from golden import ops
from rtl.requant import Requant
from tb import norm_ops
from tb.norm_cases import CONFIGS, edge_values


def make_params(rng, C, out_lo, out_hi):
    """Per-channel M, n, z with the extremes: M = 0 / 2^30 / 2^31-1, n = 0 / 63, z at the range edges."""
    M = edge_values(rng, C, 1 << 30, (1 << 31) - 1, edges=(0,), p_edge=0.2)
    n = rng.integers(45, 54, C)                       # the range real layers use ...
    extreme = rng.random(C) < 0.25                    # ... and the ends of the 6-bit field
    n[extreme] = rng.choice([0, 1, 62, 63], int(extreme.sum()))
    z = edge_values(rng, C, out_lo, out_hi, p_edge=0.1)
    return M, n, z


def make_acc(rng, rows, C):
    acc = edge_values(rng, rows * C, -(1 << 31), (1 << 31) - 1, edges=(-1, 0, 1), p_edge=0.1)
    small = rng.random(rows * C) < 0.5                # typical magnitudes, so not everything saturates
    acc[small] = rng.integers(-(1 << 20), 1 << 20, int(small.sum()))
    return acc.reshape(rows, C)


def requant_case(cfg, case, rows, C, seed, lo=0, hi=255, z_range=None, gap=0.0, bp=0.0):
    """``z_range``: (lo, hi) of the zero points when they may leave the code range (filter-wise shifting)."""
    rng = np.random.default_rng(seed)
    M, n, z = make_params(rng, C, *(z_range or (lo, hi)))
    kw = {"acc": make_acc(rng, rows, C), "M": M, "n": n, "z_out": z, "lo": lo, "hi": hi}
    return norm_ops.requantize(cfg, case, kw, ops.requantize(**kw), gap=gap, backpressure=bp, seed=seed)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_requant_random_stalls(cfg):
    """~1,300 elements, random valid gaps and backpressure, per-channel parameters with extremes."""
    requant_case(cfg, "random_stalls", rows=97, C=13, seed=11, gap=0.3, bp=0.3)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_requant_throughput(cfg):
    """No stalls: one beat per cycle after the pipeline latency (recorded for pysim/)."""
    res = requant_case(cfg, "throughput", rows=64, C=8, seed=12)
    beats = 64 * 8 // cfg.mat_lanes
    assert res["cycles"] == beats + Requant.LATENCY


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_requant_shifted_zero_points(cfg):
    """Per-channel zero points off the code range (signed 16-bit, SPEC 0; the proxy has -1239)."""
    requant_case(cfg, "shifted_zero_points", rows=60, C=7, seed=16, z_range=(-(1 << 15), (1 << 15) - 1),
                 gap=0.2, bp=0.2)
    requant_case(cfg, "shifted_zero_points_near", rows=60, C=7, seed=17, z_range=(-1300, 600), gap=0.2, bp=0.2)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
def test_requant_random_large(cfg):
    requant_case(cfg, "random_large", rows=400, C=21, seed=13, gap=0.2, bp=0.4)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_requant_logits_int16(cfg):
    """SPEC 8 (golden.ops.logits_requant): signed 16-bit output, zero point 0, per-class M, n."""
    rng = np.random.default_rng(14)
    M, n, _ = make_params(rng, 10, 0, 0)
    kw = {"acc": make_acc(rng, 200, 10), "M": M, "n": np.clip(n - 12, 0, 63), "bits": 16}  # 16-bit range
    norm_ops.logits_requant(cfg, "logits_int16", kw, ops.logits_requant(**kw), gap=0.2, backpressure=0.2, seed=14)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_requant_signed8(cfg):
    """Signed symmetric 8-bit output range (as kv uses), zero points inside it."""
    requant_case(cfg, "signed8", rows=300, C=6, seed=15, lo=-127, hi=127, gap=0.3, bp=0.3)
