"""rtl/avgpool.py under Verilator vs golden.ops.global_avgpool (SPEC 6), bit-exact on every element."""
import numpy as np
import pytest

from golden import ops
from rtl.avgpool import GlobalAvgPool
from tb.norm_cases import CONFIGS, edge_values, pad_channels, run_stream_case

FACTORY = "rtl.avgpool:GlobalAvgPool"


def avgpool_case(cfg, case, images, C, H, W, seed, x_fill=None, z_x=None, gap=0.0, bp=0.0):
    rng = np.random.default_rng(seed)
    L = cfg.mat_lanes
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
    # channels last, padded to whole lane groups with the zero point (sum 0)
    xc = pad_channels(x.transpose(0, 2, 3, 1).reshape(images, H * W, C), L, z_x)
    Cp = xc.shape[-1]
    G = Cp // L
    exp = ops.global_avgpool(xc.transpose(0, 2, 1).reshape(images, Cp, H, W), z_x, M, n, z_out, 0, 255)
    beats, exp_beats = [], []
    for i in range(images):
        for p in range(H * W):
            for g in range(G):
                beats.append({"x": [int(v) for v in xc[i, p, g * L:(g + 1) * L]], "group": g,
                              "first": int(p == 0), "last": int(p == H * W - 1)})
        exp_beats += [{"q": [int(v) for v in exp[i, g * L:(g + 1) * L]], "tag": g} for g in range(G)]
    return run_stream_case("avgpool", FACTORY, cfg, case, inputs={"i": beats}, expected={"o": exp_beats},
                           ports={"z_x": z_x, "m": M, "n": n, "z_out": z_out, "lo": 0, "hi": 255},
                           gap=gap, backpressure=bp, seed=seed,
                           op={"name": "global_avgpool", "images": images, "channels": C, "hw": H * W,
                               "lanes": L, "beats": len(beats), "latency": GlobalAvgPool.LATENCY,
                               "ideal_cycles": len(beats)})


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
