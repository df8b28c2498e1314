"""MAT engine vs golden/ops.py: pointwise / generic convs, linear, attention k^T v (+k-sum), q kv (+q ks).

Stimulus and expected values come from golden.ops (conv2d, fold_bias, linear,
attention_kv, attention_num_den); tb/layouts.im2col only reshapes; the tiling
is rtl/mat_schedule.mat_tiles (the controller's plan). Every element is
compared, with and without random valid gaps / backpressure, and the stall-free
cycles per op are checked against MatEngine.op_cycles (arch/cost.py's
back-to-back formula of the double-buffered engine) and recorded in
tb/baselines/cycles/mat_engine/. The cmd, weight and input streams are driven
independently, so the weights of the next tile load while the current one
computes; the stall-free run checks that they do (tb.engines.check_overlap).
Ops beyond the one-product records: ``*_reuse`` (``max_groups``: tiles that
reuse the weights with ``load = 0``) and ``chain`` (products with different
reductions, ReLU / zero points, ones lanes, reuse, run back to back as one
sequence, including a weight load longer than the previous tile's issue).
"""
from __future__ import annotations

import numpy as np
import pytest

from golden import ops
from arch.config import PRESETS, AccelConfig
from rtl.mat_engine import MatEngine
from rtl.mat_schedule import mat_tiles
from tb.engines import chain, check_overlap, run_engine
from tb.layouts import im2col


def _rand_w(rng, shape, extreme=None):
    if extreme == "max":
        return np.full(shape, 127, np.int64)
    if extreme == "min":
        return np.full(shape, -127, np.int64)
    return rng.integers(-127, 128, shape)


def _add(ops_out, arrays, cfg, name, X, W, bias, expected, kind, relu=False, x_zero=0, w_zero=None,
         ones=None, record=True, max_groups=None):
    plan = mat_tiles(X, W, bias, cfg, relu=relu, x_zero=x_zero, w_zero=w_zero, ones=ones, max_groups=max_groups)
    P, K = X.shape
    C = W.shape[0]
    L, M, N = cfg.replicas, cfg.mat_lanes, cfg.mat_mults
    rec = {"op": {"kind": kind, "P": P, "K": K, "C": C, "tiles": plan.n_tiles,
                  "chunks": plan.tile_chunks[0], "groups": plan.tile_groups[0]},
           "ideal_cycles": -(-P * K * C // (L * M * N))}
    if max_groups:
        name += "_reuse"
    ops_out.append({"name": name, "P": P, "C": C, "cmds": plan.cmds,
                    "record": rec if record and not max_groups else None, "tiles": plan.tiles,
                    "beats": [[load * c, g * c, g] for c, g, load in plan.tiles]})
    arrays[f"{name}.w"] = plan.w
    arrays[f"{name}.x"] = plan.x
    arrays[f"{name}.omap"] = plan.omap
    arrays[f"{name}.expected"] = np.asarray(expected, np.int64).reshape(P, C)


def pointwise(ops_out, arrays, cfg, rng, cin, h, w, cout, extreme=None, z=None, max_groups=None):
    x = np.full((1, cin, h, w), 255, np.int64) if extreme else rng.integers(0, 256, (1, cin, h, w))
    z = int(rng.integers(0, 256)) if z is None else z
    wt = _rand_w(rng, (cout, cin, 1, 1), extreme)
    b = ops.fold_bias(rng.integers(-2**20, 2**20, cout), wt, z)
    acc = ops.conv2d(x, z, wt, b)                                # (1, Cout, H, W)
    _add(ops_out, arrays, cfg, f"pw_{cin}x{h}x{w}_{cout}{'_' + extreme if extreme else ''}",
         x[0].reshape(cin, h * w).T, wt.reshape(cout, cin), b, acc[0].reshape(cout, -1).T, "conv1x1",
         max_groups=max_groups)


def generic_conv(ops_out, arrays, cfg, rng, cin, h, w, cout, k, stride, pad):
    x = rng.integers(0, 256, (1, cin, h, w))
    z = rng.integers(0, 256, cin)                                # per-channel zero points (stem)
    wt = _rand_w(rng, (cout, cin, k, k))
    b = ops.fold_bias(rng.integers(-2**20, 2**20, cout), wt, z)
    acc = ops.conv2d(x, z, wt, b, stride=stride, padding=pad)
    _add(ops_out, arrays, cfg, f"conv{k}x{k}s{stride}_{cin}x{h}x{w}_{cout}",
         im2col(x[0], k, k, stride, pad, z), wt.reshape(cout, -1), b, acc[0].reshape(cout, -1).T,
         f"conv{k}x{k}")


def linear(ops_out, arrays, cfg, rng, batch, cin, cout):
    x = rng.integers(0, 256, (batch, cin))
    wt = _rand_w(rng, (cout, cin))
    b = rng.integers(-2**24, 2**24, cout)
    _add(ops_out, arrays, cfg, f"linear_{batch}x{cin}_{cout}", x, wt, b, ops.linear(x, wt, b), "linear")


def attn_kv(ops_out, arrays, cfg, rng, n, d, extreme=None):
    if extreme:
        k = np.full((n, d), 255, np.int64)
        v = np.full((n, d), 255, np.int64)
        z_k, z_v = 0, np.where(np.arange(d) % 2 == 0, 0, 255)
    else:
        k, v = rng.integers(0, 256, (n, d)), rng.integers(0, 256, (n, d))
        z_k, z_v = int(rng.integers(0, 256)), rng.integers(0, 256, d)
    kv_acc, ksum = ops.attention_kv(k, z_k, v, z_v)
    W = np.concatenate([v.T, np.zeros((1, n), np.int64)])       # columns j of v, then the ones column
    _add(ops_out, arrays, cfg, f"attn_kv_{n}x{d}{'_' + extreme if extreme else ''}", k.T, W, None,
         np.concatenate([kv_acc, ksum[:, None]], axis=1), "attn_kv", relu=True, x_zero=z_k,
         w_zero=np.concatenate([z_v, [0]]), ones=np.arange(d + 1) == d)


def attn_qkv(ops_out, arrays, cfg, rng, n, d, extreme=None):
    if extreme:
        q = np.full((n, d), 255, np.int64)
        kv = np.where(np.arange(d * d).reshape(d, d) % 3 == 0, -127, 127)
        ks = np.full(d, 255, np.int64)
        z_q = 0
    else:
        q = rng.integers(0, 256, (n, d))
        kv, ks, z_q = rng.integers(-127, 128, (d, d)), rng.integers(0, 256, d), int(rng.integers(0, 256))
    num, den = ops.attention_num_den(q, z_q, kv, ks)
    W = np.concatenate([kv.T, ks[None, :]])                      # (d+1, d): columns of kv, then ks
    _add(ops_out, arrays, cfg, f"attn_qkv_{n}x{d}{'_' + extreme if extreme else ''}", q, W, None,
         np.concatenate([num, den[:, None]], axis=1), "attn_qkv", relu=True, x_zero=z_q)


def build_ops(cfg: AccelConfig, seed: int, full: bool):
    rng = np.random.default_rng(seed)
    o, a = [], {}
    pointwise(o, a, cfg, rng, 20, 5, 6, 6)
    pointwise(o, a, cfg, rng, 16, 2, 3, 5, extreme="max", z=0)
    pointwise(o, a, cfg, rng, 12, 3, 1, 3, extreme="min", z=255)
    generic_conv(o, a, cfg, rng, 3, 7, 7, 5, 3, 2, 1)
    linear(o, a, cfg, rng, 3, 37, 7)
    attn_kv(o, a, cfg, rng, 24, 8)
    attn_kv(o, a, cfg, rng, 9, 4, extreme="max")
    attn_qkv(o, a, cfg, rng, 13, 8)
    attn_qkv(o, a, cfg, rng, 5, 4, extreme="max")
    if cfg.name == "small":
        # layer-sized shapes (B0 stage 3 / attention at 14x14): realistic cycles for pysim's check
        pointwise(o, a, cfg, rng, 64, 7, 7, 128)
        attn_kv(o, a, cfg, rng, 196, 16)
        attn_qkv(o, a, cfg, rng, 196, 16)
    if full:
        for _ in range(6):
            pointwise(o, a, cfg, rng, int(rng.integers(1, 70)), int(rng.integers(1, 9)),
                      int(rng.integers(1, 9)), int(rng.integers(1, 20)))
        generic_conv(o, a, cfg, rng, 8, 9, 9, 12, 3, 1, 1)
        generic_conv(o, a, cfg, rng, 4, 11, 10, 6, 5, 2, 2)
        attn_kv(o, a, cfg, rng, 64, 16)
        attn_qkv(o, a, cfg, rng, 64, 16)
        linear(o, a, cfg, rng, 8, 128, 20)
    # (after the recorded ops, so that their random shapes and case names stay put)
    L, M, N = cfg.replicas, cfg.mat_lanes, cfg.mat_mults
    # weight reuse: 3 cmds per column tile, the first loading; two column tiles and a half
    pointwise(o, a, cfg, rng, 2 * N + 1, 3 * L, 1, 2 * M + 1, max_groups=1)
    # one sequence: 1-beat tiles (I = 1), then tiles loading 5 words (W = 5 > I) with ReLU / zero
    # points / w_zero / the ones lane, then tiles that reuse their weights
    po, pa = [], {}
    linear(po, pa, cfg, rng, 1, N, 2 * M)
    attn_kv(po, pa, cfg, rng, 5 * N - 1, M)
    pointwise(po, pa, cfg, rng, 3, 2 * L, 2, M + 1, max_groups=1)
    chain(o, a, "chain", po, pa, "tiles")
    return o, a


def check_cycles(cfg, res, ops_list) -> int:
    """Stall-free cycles of every op equal the formula (its tiles back to back), and the tiles
    overlapped (weights of the next tile and its first input beat before the previous tile's last
    output). Returns how many tile boundaries showed the overlap."""
    overlapped = 0
    for op in ops_list:
        tiles = op["tiles"]
        expect = MatEngine.op_cycles(cfg, tiles)
        assert res["cycles"][op["name"]] == expect, (op["name"], res["cycles"][op["name"]], expect)
        overlapped += check_overlap(res, op, [c * g for c, g, _ in tiles], [c * load for c, _, load in tiles])
    return overlapped


def _run(preset: str, full: bool, seed: int = 11):
    cfg = PRESETS[preset]
    ops_list, arrays = build_ops(cfg, seed, full)
    res, _ = run_engine("mat_engine", cfg, ops_list, arrays, f"{preset}_{'full' if full else 'fast'}", seed=seed)
    assert check_cycles(cfg, res, ops_list) > 0
    n_x = sum(len(arrays[f"{op['name']}.x"]) for op in ops_list)
    return n_x


@pytest.mark.sim
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_mat_engine_fast(preset):
    _run(preset, full=False)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_mat_engine_full(preset):
    assert _run(preset, full=True, seed=23) >= 1000


@pytest.mark.sim
@pytest.mark.slow
def test_mat_engine_paper_pointwise():
    """The paper's budget ((8x8) x 16 MAT multipliers): one pointwise layer, bit-exact, cycles recorded."""
    cfg = PRESETS["paper"]
    rng = np.random.default_rng(3)
    o, a = [], {}
    pointwise(o, a, cfg, rng, 96, 8, 16, 24)
    res, _ = run_engine("mat_engine", cfg, o, a, "paper_pointwise", gap=0.2, backpressure=0.2, seed=3)
    assert check_cycles(cfg, res, o) == len(o[0]["tiles"]) - 1
