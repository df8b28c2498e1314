"""R-MAC engine vs golden/ops.py: depthwise 3x3 / 5x5, stride 1 / 2, zero-point padding; pointwise mode.

golden.ops.conv2d (groups = C) and fold_bias give the expected accumulators;
rtl/rmac_schedule.py is the controller's plan (it fills every out-of-image
position with random garbage: the engine must substitute the zero point
itself). Every element is compared, with and without random valid gaps /
backpressure; stall-free cycles are checked against RmacEngine.op_cycles
(arch/cost.py's back-to-back formula of the double-buffered engine) and
recorded in tb/baselines/cycles/rmac_engine/. The cmd, weight and row streams
are driven independently, so the next command's weights load while the current
one computes; the stall-free run checks that they do (tb.engines.check_overlap).
Beyond the recorded ops: ``*_reuse`` (pointwise commands reusing the weights,
``load = 0``) and ``chain`` (3x3 / 5x5, stride 1 / 2, pointwise commands back to
back as one sequence: each command's first row beat is placed with its own
padding and zero point while the previous one finishes; a 5x5 weight load
longer than the previous command's taps).
"""
from __future__ import annotations

import numpy as np
import pytest

from golden import ops
from arch.config import PRESETS, AccelConfig
from rtl.rmac_engine import RmacEngine
from rtl.rmac_schedule import rmac_depthwise, rmac_pointwise
from tb.engines import chain, check_overlap, run_engine


def _issue(g) -> int:
    return g["rows"] * g["xsegs"] * g["kh"] * g["kw"]


def _add(o, a, cfg, name, plan, expected, op, macs, record=True):
    L, S, T = cfg.replicas, cfg.rmac_rows, cfg.rmac_cols
    beats = [[g["load"] * g["kh"] * g["kw"], g["rows"] * g["xsegs"] * g["kh"], g["rows"] * g["xsegs"]]
             for g in plan.geometry]
    o.append({"name": name, "cmds": plan.cmds, "geometry": plan.geometry, "beats": beats,
              "record": {"op": op, "ideal_cycles": -(-macs // (L * S * T))} if record else None})
    a[f"{name}.w"] = plan.wt
    a[f"{name}.x"] = plan.x
    a[f"{name}.omap"] = plan.omap
    a[f"{name}.expected"] = np.asarray(expected, np.int64).reshape(plan.shape)


def depthwise(o, a, cfg, rng, c, h, w, k, stride, extreme=None, pad=None, record=True):
    pad = k // 2 if pad is None else pad
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
    _add(o, a, cfg, f"dw{k}x{k}s{stride}_{c}x{h}x{w}{'_' + extreme if extreme else ''}"
         f"{'' if pad == k // 2 else f'_p{pad}'}", plan, acc,
         {"kind": f"dw{k}x{k}", "C": c, "H": h, "W": w, "stride": stride, "pad": pad, "Ho": Ho, "Wo": Wo},
         c * Ho * Wo * k * k, record=record and pad == k // 2)


def pointwise(o, a, cfg, rng, p, k, c, max_rows=None):
    X = rng.integers(0, 256, (p, k))
    W = rng.integers(-127, 128, (c, k))
    b = rng.integers(-2**24, 2**24, c)
    plan = rmac_pointwise(X, W, b, cfg, max_rows=max_rows)
    _add(o, a, cfg, f"pw_{p}x{k}_{c}{'_reuse' if max_rows else ''}", plan, ops.linear(X, W, b),
         {"kind": "pw", "P": p, "K": k, "C": c}, p * k * c, record=not max_rows)


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
    # (after the recorded ops, so that their random shapes and case names stay put)
    L, S, T = cfg.replicas, cfg.rmac_rows, cfg.rmac_cols
    pointwise(o, a, cfg, rng, 3 * L * S - 1, 6, T + 1, max_rows=1)     # 3 commands per channel group
    # one sequence; the pad-0 commands' first row beat holds real input, so it must be placed with
    # their own pad / h / w / zero point in the cycle the previous command issues its last tap
    po, pa = [], {}
    depthwise(po, pa, cfg, rng, T + 1, 1, S, 3, 1)           # 9-tap commands, then a 25-tap load
    depthwise(po, pa, cfg, rng, T + 1, 5, 4, 5, 2)
    depthwise(po, pa, cfg, rng, 2, 6, 7, 3, 1, pad=0)
    depthwise(po, pa, cfg, rng, 2, 6, 5, 3, 2, extreme="min")
    pointwise(po, pa, cfg, rng, 2 * L * S, 4, 2, max_rows=1)
    depthwise(po, pa, cfg, rng, T, 7, 6, 3, 2, pad=0)
    depthwise(po, pa, cfg, rng, T, 7, 6, 5, 1)
    chain(o, a, "chain", po, pa, "geometry")
    return o, a


def _run(preset: str, full: bool, seed: int = 7):
    cfg = PRESETS[preset]
    ops_list, arrays = build_ops(cfg, seed, full)
    res, _ = run_engine("rmac_engine", cfg, ops_list, arrays, f"{preset}_{'full' if full else 'fast'}", seed=seed)
    assert check_cycles(res, ops_list) > 0
    return sum(len(arrays[f"{op['name']}.x"]) for op in ops_list)


def check_cycles(res, ops_list) -> int:
    """Stall-free cycles of every op equal the formula (its commands back to back), and the
    commands overlapped (the next command's weights and first row beat before the previous
    command's last output). Returns how many command boundaries showed the overlap."""
    overlapped = 0
    for op in ops_list:
        g = op["geometry"]
        expect = RmacEngine.op_cycles(g)
        assert res["cycles"][op["name"]] == expect, (op["name"], res["cycles"][op["name"]], expect)
        overlapped += check_overlap(res, op, [_issue(t) for t in g], [t["load"] * t["kh"] * t["kw"] for t in g])
    return overlapped


@pytest.mark.sim
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_rmac_engine_fast(preset):
    _run(preset, full=False)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_rmac_engine_full(preset):
    assert _run(preset, full=True, seed=29) >= 1000
