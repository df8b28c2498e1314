"""Real layers of the proxy model replayed through the compute engines, bit-exact against golden's vectors.

Reads a golden vector folder (golden/vectors.py format: manifest.json + one
npz per op call; ``TRIOVIT_VECTORS`` or ``build/golden/vectors``, written by
``python -m golden dump``), and sends every MAC op it holds through the RTL:

* ``conv2d`` with ``groups == 1`` (stem 3x3/s2, pointwise 1x1, projections)
  and grouped 1x1 (LiteMLA aggregation, one plan per group) -> MAT engine
  (im2col'd vectors); depthwise ``conv2d`` (3x3 / 5x5, stride 1 / 2) -> R-MAC;
* ``linear`` (head) -> MAT engine;
* ``attention_kv`` (k^T v with the k-sum) and ``attention_num_den`` (q kv, q ks)
  -> MAT engine, one plan per head.

Each op's expected output is the record's own output. To keep a replay within
a simulation budget, a layer wider than ``MAX_CHANNELS`` output channels (or
heads) is replayed on its first ones (every pixel / token, real weights and
activations); the test prints what it covered.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from arch.config import PRESETS
from rtl.mat_schedule import mat_tiles
from rtl.rmac_schedule import rmac_depthwise
from tb.engines import run_engine
from tb.harness import REPO
from tb.layouts import im2col

MAX_CHANNELS = 8        # output channels (or heads) replayed per layer
MAX_PIXELS = 4096       # output pixels per conv layer (a band of whole rows when the map is larger)
NOT_COMPARED = np.iinfo(np.int64).min   # tb.engine_cocotb.MISSING: outputs the plan does not map


def vector_dir() -> Path:
    path = Path(os.environ.get("TRIOVIT_VECTORS", REPO / "build" / "golden" / "vectors"))
    if (path / "manifest.json").is_file():
        return path
    msg = (f"no golden vectors at {path} (write them with `python -m golden dump`, or set TRIOVIT_VECTORS)")
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _mat_op(ops_out, arrays, cfg, name, X, W, bias, expected, **kw):
    plan = mat_tiles(X, W, bias, cfg, **kw)
    ops_out.append({"name": name, "cmds": plan.cmds})
    arrays.update({f"{name}.w": plan.w, f"{name}.x": plan.x, f"{name}.omap": plan.omap,
                   f"{name}.expected": np.asarray(expected, np.int64).reshape(X.shape[0], W.shape[0])})


def _band(x, kh, stride, pad, Ho, Wo):
    """Rows of the output map to replay (whole rows, at most MAX_PIXELS pixels): (oy0, oy1)."""
    rows = max(1, min(Ho, MAX_PIXELS // max(1, Wo)))
    return 0, rows


def plan_conv(rec_name, kw, out, cfg_mat, cfg_rmac, mat_ops, mat_arrays, rmac_ops, rmac_arrays, covered):
    x, w, b = (np.asarray(kw[k], np.int64) for k in ("x", "w", "bias"))
    z = np.asarray(kw["z_x"], np.int64)
    stride, pad, groups = int(kw.get("stride", 1)), int(kw.get("padding", 0)), int(kw.get("groups", 1))
    x = x[0] if x.ndim == 4 else x
    acc = np.asarray(out, np.int64)
    acc = acc[0] if acc.ndim == 4 else acc
    cout, cin_g, kh, kwid = w.shape
    C, Ho, Wo = acc.shape
    oy0, oy1 = _band(x, kh, stride, pad, Ho, Wo)
    if groups == x.shape[0] == cout and cin_g == 1:
        cs = slice(0, min(cout, MAX_CHANNELS))
        # input rows the band needs, with the padding kept as the engine sees it
        iy1 = min(x.shape[1], (oy1 - 1) * stride - pad + kh)
        sub = x[cs, :iy1]
        zc = np.broadcast_to(z, (cout,))[cs]
        plan = rmac_depthwise(sub, w[cs], b[cs], zc, stride, pad, cfg_rmac)
        # the plan covers the rows computed from the cropped input: compare the band only
        exp_full = acc[cs]
        Ho_p = plan.shape[1]
        keep = min(Ho_p, oy1)
        expected = np.full(plan.shape, NOT_COMPARED, np.int64)   # engine_cocotb's "never written" value
        expected[:, :keep] = exp_full[:, :keep]
        omap = plan.omap.copy()
        C_p, _, Wo_p = plan.shape
        oy_of = (omap // Wo_p) % Ho_p
        omap[(omap >= 0) & (oy_of >= keep)] = -1     # rows past the band saw a cropped input
        name = f"{rec_name}/dw"
        rmac_ops.append({"name": name, "cmds": plan.cmds})
        rmac_arrays.update({f"{name}.w": plan.wt, f"{name}.x": plan.x, f"{name}.omap": omap,
                            f"{name}.expected": expected})
        covered.append(f"{name}: {cs.stop}/{cout} ch, rows {keep}/{Ho} of {Ho}x{Wo}, k{kh} s{stride}")
        return
    cout_g = cout // groups
    n_groups = max(1, min(groups, MAX_CHANNELS // max(1, min(cout_g, MAX_CHANNELS))))
    for g in range(n_groups):
        cs = slice(g * cout_g, g * cout_g + min(cout_g, MAX_CHANNELS))
        xg = x[g * cin_g:(g + 1) * cin_g]
        zg = np.broadcast_to(z, (x.shape[0],))[g * cin_g:(g + 1) * cin_g]
        X = im2col(xg, kh, kwid, stride, pad, zg)
        pix = slice(oy0 * Wo, oy1 * Wo)
        name = f"{rec_name}/g{g}" if groups > 1 else f"{rec_name}/conv"
        _mat_op(mat_ops, mat_arrays, cfg_mat, name, X[pix], w[cs].reshape(cs.stop - cs.start, -1), b[cs],
                acc[cs, oy0:oy1].reshape(cs.stop - cs.start, -1).T)
        covered.append(f"{name}: {cs.stop - cs.start}/{cout_g} ch, rows {oy1 - oy0}/{Ho}, k{kh} s{stride} g{groups}")


def plan_attention(rec_name, op, kw, out, cfg, mat_ops, mat_arrays, covered):
    if op == "attention_kv":
        k, v = (np.asarray(kw[n], np.int64) for n in ("k", "v"))
        kv_acc, ksum = (np.asarray(out[n], np.int64) for n in ("kv_acc", "ksum"))
        lead = k.shape[:-2]
        k2, v2 = k.reshape(-1, *k.shape[-2:]), v.reshape(-1, *v.shape[-2:])
        kv2, ks2 = kv_acc.reshape(-1, *kv_acc.shape[-2:]), ksum.reshape(-1, ksum.shape[-1])
        z_k, z_v = int(np.asarray(kw["z_k"]).reshape(-1)[0]), np.asarray(kw["z_v"], np.int64)
        heads = min(len(k2), MAX_CHANNELS)
        for h in range(heads):
            n, d = k2[h].shape
            zv = np.broadcast_to(z_v, (d,))
            W = np.concatenate([v2[h].T, np.zeros((1, n), np.int64)])
            _mat_op(mat_ops, mat_arrays, cfg, f"{rec_name}/kv_h{h}", k2[h].T, W, None,
                    np.concatenate([kv2[h], ks2[h][:, None]], axis=1), relu=True, x_zero=z_k,
                    w_zero=np.concatenate([zv, [0]]), ones=np.arange(d + 1) == d)
        covered.append(f"{rec_name}/kv: {heads}/{len(k2)} heads x batch {lead}")
    else:
        q, kv, ks = (np.asarray(kw[n], np.int64) for n in ("q", "kv", "ks"))
        num, den = (np.asarray(out[n], np.int64) for n in ("num", "den"))
        q2, kv2, ks2 = q.reshape(-1, *q.shape[-2:]), kv.reshape(-1, *kv.shape[-2:]), ks.reshape(-1, ks.shape[-1])
        num2, den2 = num.reshape(-1, *num.shape[-2:]), den.reshape(-1, den.shape[-1])
        z_q = int(np.asarray(kw["z_q"]).reshape(-1)[0])
        heads = min(len(q2), MAX_CHANNELS)
        for h in range(heads):
            W = np.concatenate([kv2[h].T, ks2[h][None, :]])
            _mat_op(mat_ops, mat_arrays, cfg, f"{rec_name}/qkv_h{h}", q2[h], W, None,
                    np.concatenate([num2[h], den2[h][:, None]], axis=1), relu=True, x_zero=z_q)
        covered.append(f"{rec_name}/qkv: {heads}/{len(q2)} heads")


def collect(vec_dir: Path, cfg_mat, cfg_rmac, layers: set[str] | None = None):
    from golden.vectors import load_record, read_manifest
    man = read_manifest(vec_dir)
    mat_ops, mat_arrays, rmac_ops, rmac_arrays, covered = [], {}, [], {}, []
    for rec in man["records"]:
        op = rec["op"]
        if op not in ("conv2d", "linear", "attention_kv", "attention_num_den"):
            continue
        if layers is not None and rec["layer"] not in layers:
            continue
        kw, out = load_record(vec_dir, rec)
        name = f"{rec['index']:04d}_{rec['layer']}"
        if op == "conv2d":
            plan_conv(name, kw, out["out"], cfg_mat, cfg_rmac, mat_ops, mat_arrays, rmac_ops, rmac_arrays, covered)
        elif op == "linear":
            x, w, b = (np.asarray(kw[k], np.int64) for k in ("x", "w", "bias"))
            x = x.reshape(-1, x.shape[-1])
            cs = slice(0, min(w.shape[0], 4 * MAX_CHANNELS))
            _mat_op(mat_ops, mat_arrays, cfg_mat, f"{name}/linear", x, w[cs], b[cs],
                    np.asarray(out["out"], np.int64).reshape(x.shape[0], -1)[:, cs])
            covered.append(f"{name}/linear: {cs.stop}/{w.shape[0]} outputs")
        else:
            plan_attention(name, op, kw, out, cfg_mat, mat_ops, mat_arrays, covered)
    return mat_ops, mat_arrays, rmac_ops, rmac_arrays, covered


def replay(vec_dir: Path, preset: str, case: str, layers=None):
    cfg = PRESETS[preset]
    mat_ops, mat_arrays, rmac_ops, rmac_arrays, covered = collect(vec_dir, cfg, cfg, layers)
    assert mat_ops or rmac_ops, f"{vec_dir}: no conv2d / linear / attention records to replay"
    print("\n".join(covered))
    if mat_ops:
        run_engine("mat_engine", cfg, mat_ops, mat_arrays, f"{case}_mat", gap=0.1, backpressure=0.1)
    if rmac_ops:
        run_engine("rmac_engine", cfg, rmac_ops, rmac_arrays, f"{case}_rmac", gap=0.1, backpressure=0.1)
    return covered


@pytest.mark.sim
def test_engine_layers_replay_synthetic_vectors(tmp_path):
    """The replay path itself, on a small vector folder recorded from golden.ops with random data."""
    from golden import ops
    from golden.vectors import Recorder, write
    rng = np.random.default_rng(2)
    rec = Recorder()
    x = rng.integers(0, 256, (1, 6, 9, 9)).astype(np.uint8)
    for name, w, s, p, g in (("stem", rng.integers(-127, 128, (4, 6, 3, 3)), 2, 1, 1),
                             ("dw5", rng.integers(-127, 128, (6, 1, 5, 5)), 1, 2, 6),
                             ("agg_pw", rng.integers(-127, 128, (6, 2, 1, 1)), 1, 0, 3)):
        z = rng.integers(0, 256, 6)
        rec.call(name, "conv2d", x=x, z_x=z, w=w, bias=ops.fold_bias(np.zeros(w.shape[0], np.int64), w, z, g),
                 stride=s, padding=p, groups=g)
    k, v, q = (rng.integers(0, 256, (1, 2, 10, 4)) for _ in range(3))
    kv_acc, ksum = rec.call("attn", "attention_kv", k=k, z_k=np.int64(30), v=v, z_v=np.int64(100))
    rec.call("attn", "attention_num_den", q=q, z_q=np.int64(7), kv=rng.integers(-127, 128, (1, 2, 4, 4)),
             ks=rng.integers(0, 256, (1, 2, 4)))
    rec.call("head", "linear", x=rng.integers(0, 256, (1, 20)), w=rng.integers(-127, 128, (5, 20)),
             bias=rng.integers(-1000, 1000, 5))
    write(rec, tmp_path, model={"name": "synthetic"}, image="random")
    covered = replay(tmp_path, "tiny", "synthetic")
    assert any("/dw" in c for c in covered) and any("/g2" in c for c in covered)
    assert any("/kv" in c for c in covered) and any("/qkv" in c for c in covered)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.assets
def test_engine_layers_replay_proxy_model():
    """Every MAC layer type of the proxy model (stem, DSConv, MBConv convs, LiteMLA qkv / aggregation /
    attention core / projection, head) from golden's dump of a real image."""
    covered = replay(vector_dir(), "small", "proxy")
    kinds = " ".join(covered)
    for must in ("/dw", "/conv", "/kv", "/qkv"):
        assert must in kinds, f"the vector folder has no {must} layer"
