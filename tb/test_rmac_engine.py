"""R-MAC engine vs golden/ops.py: depthwise 3x3 / 5x5, stride 1 / 2, zero-point padding; pointwise mode.

golden.ops.conv2d (groups = C) and fold_bias give the expected accumulators;
rtl/rmac_schedule.py is the controller's plan (it fills every out-of-image
position with random garbage: the engine must substitute the zero point
itself). Every element is compared, with and without random valid gaps /
backpressure; stall-free cycles are checked against RmacEngine.cmd_cycles and
recorded in tb/baselines/cycles/rmac_engine/.
"""
from __future__ import annotations

import numpy as np
import pytest

from golden import ops
from arch.config import PRESETS, AccelConfig
from rtl.rmac_engine import RmacEngine
from rtl.rmac_schedule import rmac_depthwise, rmac_pointwise
from tb.engines import run_engine


def _add(o, a, cfg, name, plan, expected, op, macs):
    L, S, T = cfg.replicas, cfg.rmac_rows, cfg.rmac_cols
    o.append({"name": name, "cmds": plan.cmds, "geometry": plan.geometry,
              "record": {"op": op, "ideal_cycles": -(-macs // (L * S * T))}})
    a[f"{name}.w"] = plan.wt
    a[f"{name}.x"] = plan.x
    a[f"{name}.omap"] = plan.omap
    a[f"{name}.expected"] = np.asarray(expected, np.int64).reshape(plan.shape)


def depthwise(o, a, cfg, rng, c, h, w, k, stride, extreme=None):
    pad = k // 2
    if extreme == "max":
        x = np.full((c, h, w), 255, np.int64)
        wt = np.full((c, 1, k, k), 127, np.int64)
        z = np.zeros(c, np.int64)
    elif extreme == "min":
        x = np.full((c, h, w), 255, np.int64)
        wt = np.full((c, 1, k, k), -127, np.int64)
        z = np.full(c, 255, np.int64)
    else:
        x = rng.integers(0, 256, (c, h, w))
        wt = rng.integers(-127, 128, (c, 1, k, k))
        z = rng.integers(0, 256, c)                     # per-channel zero points (padding codes)
    b = ops.fold_bias(rng.integers(-2**20, 2**20, c), wt, z, groups=c)
    acc = ops.conv2d(x[None], z, wt, b, stride=stride, padding=pad, groups=c)[0]
    plan = rmac_depthwise(x, wt, b, z, stride, pad, cfg, fill=rng)
    Ho, Wo = acc.shape[1:]
    _add(o, a, cfg, f"dw{k}x{k}s{stride}_{c}x{h}x{w}{'_' + extreme if extreme else ''}", plan, acc,
         {"kind": f"dw{k}x{k}", "C": c, "H": h, "W": w, "stride": stride, "pad": pad, "Ho": Ho, "Wo": Wo},
         c * Ho * Wo * k * k)


def pointwise(o, a, cfg, rng, p, k, c):
    X = rng.integers(0, 256, (p, k))
    W = rng.integers(-127, 128, (c, k))
    b = rng.integers(-2**24, 2**24, c)
    plan = rmac_pointwise(X, W, b, cfg)
    _add(o, a, cfg, f"pw_{p}x{k}_{c}", plan, ops.linear(X, W, b), {"kind": "pw", "P": p, "K": k, "C": c},
         p * k * c)


def build_ops(cfg: AccelConfig, seed: int, full: bool):
    rng = np.random.default_rng(seed)
    o, a = [], {}
    depthwise(o, a, cfg, rng, 3, 6, 7, 3, 1)
    depthwise(o, a, cfg, rng, 3, 7, 6, 3, 2)
    depthwise(o, a, cfg, rng, 2, 6, 9, 5, 1)
    depthwise(o, a, cfg, rng, 3, 9, 8, 5, 2)
    depthwise(o, a, cfg, rng, 2, 4, 5, 3, 1, extreme="max")
    depthwise(o, a, cfg, rng, 2, 5, 4, 5, 2, extreme="min")
    pointwise(o, a, cfg, rng, 7, 10, 3)
    if cfg.name == "small":
        # layer-sized shapes: realistic cycles for pysim's check
        depthwise(o, a, cfg, rng, 16, 14, 14, 3, 1)
        depthwise(o, a, cfg, rng, 16, 14, 14, 5, 1)
        depthwise(o, a, cfg, rng, 8, 28, 28, 3, 2)
    if full:
        for _ in range(8):
            k = int(rng.choice([3, 5]))
            depthwise(o, a, cfg, rng, int(rng.integers(1, 10)), int(rng.integers(2, 15)),
                      int(rng.integers(2, 15)), k, int(rng.integers(1, 3)))
        pointwise(o, a, cfg, rng, 40, 48, 9)
    return o, a


def _run(preset: str, full: bool, seed: int = 7):
    cfg = PRESETS[preset]
    ops_list, arrays = build_ops(cfg, seed, full)
    res, _ = run_engine("rmac_engine", cfg, ops_list, arrays, f"{preset}_{'full' if full else 'fast'}", seed=seed)
    for op in ops_list:
        g = op["geometry"]
        expect = sum(RmacEngine.cmd_cycles(**t) for t in g) - (len(g) - 1)
        assert res["cycles"][op["name"]] == expect, (op["name"], res["cycles"][op["name"]], expect)
    return sum(len(arrays[f"{op['name']}.x"]) for op in ops_list)


@pytest.mark.sim
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_rmac_engine_fast(preset):
    _run(preset, full=False)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_rmac_engine_full(preset):
    assert _run(preset, full=True, seed=29) >= 1000
