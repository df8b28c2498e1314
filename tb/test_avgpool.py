"""rtl/avgpool.py under Verilator vs golden.ops.global_avgpool (SPEC 6), bit-exact on every element."""
import numpy as np
import pytest

from golden import ops
from rtl.avgpool import GlobalAvgPool
from tb import norm_ops
from tb.norm_cases import CONFIGS


def avgpool_case(cfg, case, images, C, H, W, seed, x_fill=None, z_x=None, gap=0.0, bp=0.0):
    rng = np.random.default_rng(seed)
    z_x = int(rng.integers(0, 256)) if z_x is None else z_x
    if x_fill is None:
        # per-channel centres, so the means spread over the output range instead of saturating
        centre = rng.integers(0, 256, (images, C, 1, 1))
        x = np.clip(centre + rng.integers(-60, 61, (images, C, H, W)), 0, 255)
        edge = rng.random(x.shape) < 0.1
        x[edge] = rng.choice([0, 255, z_x], int(edge.sum()))
    else:
        x = np.full((images, C, H, W), x_fill, dtype=np.int64)
    M, n = ops.quantize_multiplier(float(rng.uniform(0.3, 1.0)) / (H * W))
    z_out = int(rng.integers(64, 192))
    kw = {"x": x, "z_x": z_x, "M": M, "n": n, "z_out": z_out}
    return norm_ops.global_avgpool(cfg, case, kw, ops.global_avgpool(**kw), gap=gap, backpressure=bp, seed=seed)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_avgpool_random_stalls(cfg):
    """3 images x 9 channels x 7x7 pixels (1,323 inputs), random gaps and backpressure."""
    avgpool_case(cfg, "random_stalls", images=3, C=9, H=7, W=7, seed=51, gap=0.3, bp=0.5)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_avgpool_one_group_back_to_back(cfg):
    """A single lane group: every beat reads the sum the previous beat is writing (transparent port)."""
    avgpool_case(cfg, "one_group", images=4, C=2, H=5, W=6, seed=52, gap=0.2, bp=0.3)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
@pytest.mark.parametrize("fill,z_x", [(255, 0), (0, 255), (255, 255)], ids=["allmax_z0", "allzero_z255", "allmax_z255"])
def test_avgpool_extremes(cfg, fill, z_x):
    avgpool_case(cfg, f"extreme_{fill}_{z_x}", images=1, C=4, H=12, W=12, seed=53, x_fill=fill, z_x=z_x)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_avgpool_throughput(cfg):
    """No stalls: one input beat per cycle; the last output LATENCY cycles after the last input."""
    res = avgpool_case(cfg, "throughput", images=1, C=8, H=4, W=4, seed=54)
    assert res["cycles"] == 16 * 8 // cfg.mat_lanes + GlobalAvgPool.LATENCY


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
def test_avgpool_random_large(cfg):
    avgpool_case(cfg, "random_large", images=4, C=24, H=7, W=7, seed=55, gap=0.2, bp=0.4)
