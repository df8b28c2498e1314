"""Whole blocks of the proxy model executed by chaining the RTL units on a real image's activations.

Every step runs the unit's Verilog under Verilator; the tensor a step feeds
to the next is the one the previous unit's RTL produced (read back from its
output beats), never golden's. Each step is also compared, bit-exactly and
element by element, with golden's record of that op, and the block's final
residual-add output with golden's block output.

* ``test_mbconv_block_*``: MBConv (1x1 expand on the MAT engine -> requant ->
  hardswish -> depthwise 3x3 on the R-MAC engine -> requant -> hardswish ->
  1x1 project on the MAT engine -> requant -> residual add).
* ``test_attention_block_*``: LiteMLA (qkv 1x1 [MAT] -> requant -> 5x5
  depthwise aggregation [R-MAC] -> requant -> grouped 1x1 [MAT] -> requant;
  per branch and head: k^T v + k-sum [MAT] -> kv / ks requant [requant unit]
  -> q kv + q ks [MAT] -> log2 divisor + shift division [divider unit]; then
  projection 1x1 [MAT] -> requant -> residual add).

Vectors: the golden vector folder of tb/test_engine_layers.py (``TRIOVIT_VECTORS``
or ``build/golden/vectors``, written by ``make golden`` / ``python -m golden dump``).
"""
from __future__ import annotations

import numpy as np
import pytest

from golden import vectors
from arch.config import PRESETS
from rtl.mat_schedule import mat_tiles
from rtl.rmac_schedule import rmac_depthwise
from tb import norm_ops
from tb.engines import run_engine
from tb.layouts import im2col
from tb.test_engine_layers import vector_dir

CFG = PRESETS["small"]
RUN = dict(gap=0.1, backpressure=0.1)


class Block:
    """The records of one block (layer-name prefix) of a vector folder, by (layer suffix, op)."""

    def __init__(self, vec_dir, prefix: str):
        self.vec_dir, self.prefix = vec_dir, prefix
        man = vectors.read_manifest(vec_dir)
        self.recs = {}
        for r in man["records"]:
            if r["layer"] == prefix or r["layer"].startswith(prefix + "."):
                self.recs.setdefault((r["layer"][len(prefix) + 1:], r["op"]), r)
        if not self.recs:
            pytest.fail(f"{vec_dir}: no records of block {prefix!r}")

    def __call__(self, layer: str, op: str):
        r = self.recs.get((layer, op))
        if r is None:
            raise KeyError(f"{self.prefix}.{layer} has no {op} record in {self.vec_dir}")
        kw, out = vectors.load_record(self.vec_dir, r)
        return {k: (np.asarray(v, np.int64) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}, \
            {k: np.asarray(v, np.int64) for k, v in out.items()}


def _check(name: str, rtl: np.ndarray, golden: np.ndarray):
    rtl, golden = np.asarray(rtl), np.asarray(golden)
    assert rtl.shape == golden.shape, f"{name}: RTL shape {rtl.shape} vs golden {golden.shape}"
    bad = np.argwhere(rtl != golden)
    assert not len(bad), (f"{name}: {len(bad)} of {golden.size} elements differ; first at index "
                          f"{tuple(bad[0])}: expected {golden[tuple(bad[0])]}, actual {rtl[tuple(bad[0])]}")


# ----------------------------------------------------------------------- engine steps
def mat_conv(case: str, x: np.ndarray, kw: dict, expected: np.ndarray) -> np.ndarray:
    """conv2d (generic / pointwise / grouped) on the MAT engine: x (C,H,W) RTL codes -> acc (Cout,Ho,Wo)."""
    w, b = kw["w"], kw["bias"]
    stride, pad, groups = int(kw.get("stride", 1)), int(kw.get("padding", 0)), int(kw.get("groups", 1))
    cout, cin_g, kh, kwid = w.shape
    cout_g = cout // groups
    z = np.broadcast_to(np.asarray(kw["z_x"], np.int64), (x.shape[0],))
    ops, arrays = [], {}
    for g in range(groups):
        X = im2col(x[g * cin_g:(g + 1) * cin_g], kh, kwid, stride, pad, z[g * cin_g:(g + 1) * cin_g])
        cs = slice(g * cout_g, (g + 1) * cout_g)
        plan = mat_tiles(X, w[cs].reshape(cout_g, -1), b[cs], CFG)
        name = f"g{g}"
        ops.append({"name": name, "cmds": plan.cmds})
        arrays.update({f"{name}.w": plan.w, f"{name}.x": plan.x, f"{name}.omap": plan.omap,
                       f"{name}.expected": expected[cs].reshape(cout_g, -1).T})
    _, outs = run_engine("mat_engine", CFG, ops, arrays, case, **RUN)
    Ho, Wo = expected.shape[1:]
    return np.concatenate([outs[f"g{g}"].T.reshape(cout_g, Ho, Wo) for g in range(groups)])


def rmac_dw(case: str, x: np.ndarray, kw: dict, expected: np.ndarray) -> np.ndarray:
    """Depthwise conv2d on the R-MAC engine: x (C,H,W) RTL codes -> acc (C,Ho,Wo)."""
    plan = rmac_depthwise(x, kw["w"], kw["bias"], kw["z_x"], int(kw["stride"]), int(kw["padding"]), CFG)
    ops = [{"name": "dw", "cmds": plan.cmds}]
    arrays = {"dw.w": plan.wt, "dw.x": plan.x, "dw.omap": plan.omap, "dw.expected": expected}
    _, outs = run_engine("rmac_engine", CFG, ops, arrays, case, **RUN)
    return outs["dw"]


def mat_attention_kv(case: str, k, v, z_k, z_v, kv_acc, ksum):
    """Per head: k^T v and the k-sum on the MAT engine. k, v (H,N,d) RTL codes -> (kv_acc (H,d,d), ksum (H,d))."""
    H, n, d = k.shape
    ops, arrays = [], {}
    for h in range(H):
        W = np.concatenate([v[h].T, np.zeros((1, n), np.int64)])
        plan = mat_tiles(k[h].T, W, None, CFG, relu=True, x_zero=int(z_k),
                         w_zero=np.concatenate([np.broadcast_to(z_v, (d,)), [0]]), ones=np.arange(d + 1) == d)
        name = f"h{h}"
        ops.append({"name": name, "cmds": plan.cmds})
        arrays.update({f"{name}.w": plan.w, f"{name}.x": plan.x, f"{name}.omap": plan.omap,
                       f"{name}.expected": np.concatenate([kv_acc[h], ksum[h][:, None]], axis=1)})
    _, outs = run_engine("mat_engine", CFG, ops, arrays, case, **RUN)
    return (np.stack([outs[f"h{h}"][:, :d] for h in range(H)]), np.stack([outs[f"h{h}"][:, d] for h in range(H)]))


def mat_num_den(case: str, q, z_q, kv, ks, num, den):
    """Per head: q kv and q ks on the MAT engine -> (num (H,N,d), den (H,N))."""
    H, n, d = q.shape
    ops, arrays = [], {}
    for h in range(H):
        plan = mat_tiles(q[h], np.concatenate([kv[h].T, ks[h][None, :]]), None, CFG, relu=True, x_zero=int(z_q))
        name = f"h{h}"
        ops.append({"name": name, "cmds": plan.cmds})
        arrays.update({f"{name}.w": plan.w, f"{name}.x": plan.x, f"{name}.omap": plan.omap,
                       f"{name}.expected": np.concatenate([num[h], den[h][:, None]], axis=1)})
    _, outs = run_engine("mat_engine", CFG, ops, arrays, case, **RUN)
    return (np.stack([outs[f"h{h}"][:, :d] for h in range(H)]), np.stack([outs[f"h{h}"][:, d] for h in range(H)]))


# ----------------------------------------------------------------------- normalization steps (engineer #2's units)
def requant(case: str, acc: np.ndarray, kw: dict, expected: np.ndarray) -> np.ndarray:
    res = norm_ops.requantize(CFG, case, dict(kw, acc=acc), expected, return_outputs=True, **RUN)
    return np.asarray(res["tensor"], np.int64)


def hswish(case: str, p: np.ndarray, kw: dict, expected: np.ndarray) -> np.ndarray:
    res = norm_ops.hardswish(CFG, case, dict(kw, p=p), expected, return_outputs=True, **RUN)
    return np.asarray(res["tensor"], np.int64)


def residual(case: str, a: np.ndarray, b: np.ndarray, kw: dict, expected: np.ndarray) -> np.ndarray:
    res = norm_ops.residual_add(CFG, case, dict(kw, a=a, b=b), expected, return_outputs=True, **RUN)
    return np.asarray(res["tensor"], np.int64)


# ----------------------------------------------------------------------- blocks
def run_conv_stage(blk: Block, tag: str, layer: str, x: np.ndarray) -> np.ndarray:
    """conv2d on its engine, then its output stage (requantize, or pre-activation requantize + hardswish)."""
    kw, out = blk(layer, "conv2d")
    acc_exp = out["out"][0]
    depthwise = int(kw["groups"]) == x.shape[0] == kw["w"].shape[0] and kw["w"].shape[1] == 1
    engine = rmac_dw if depthwise else mat_conv
    acc = engine(f"{tag}_{layer}", x, kw, acc_exp)
    _check(f"{blk.prefix}.{layer} conv2d", acc, acc_exp)
    kw_rq, out_rq = blk(layer, "requantize")
    y = requant(f"{tag}_{layer}_rq", acc[None], kw_rq, out_rq["out"])
    _check(f"{blk.prefix}.{layer} requantize", y, out_rq["out"])
    if (layer, "hardswish") in blk.recs:
        kw_hs, out_hs = blk(layer, "hardswish")
        y = hswish(f"{tag}_{layer}_hs", y, kw_hs, out_hs["out"])
        _check(f"{blk.prefix}.{layer} hardswish", y, out_hs["out"])
    return y[0]


def run_mbconv(blk: Block, tag: str, x0: np.ndarray) -> np.ndarray:
    y = x0
    for layer in ("expand", "dw", "project"):
        y = run_conv_stage(blk, tag, layer, y)
    kw, out = blk("add", "residual_add")
    return residual(f"{tag}_add", y[None], x0[None], kw, out["out"])


def run_core(blk: Block, tag: str, branch: str, t: np.ndarray) -> np.ndarray:
    """One attention branch, all heads, from the (C,h,w) RTL tensor t -> (H, N, d) output codes.
    The q/k/v split is golden/execute.run_core's layout (a reshape, no arithmetic)."""
    kw_kv, out_kv = blk(branch, "attention_kv")
    H, n, d = out_kv["kv_acc"].shape[1], kw_kv["k"].shape[2], kw_kv["k"].shape[3]
    C, hh, ww = t.shape
    tt = t.reshape(H, 3 * d, hh * ww).transpose(0, 2, 1)
    q, k, v = tt[..., :d], tt[..., d:2 * d], tt[..., 2 * d:]
    kv_acc, ksum = mat_attention_kv(f"{tag}_{branch}_kv", k, v, kw_kv["z_k"], kw_kv["z_v"],
                                    out_kv["kv_acc"][0], out_kv["ksum"][0])
    _check(f"{blk.prefix}.{branch} attention_kv", kv_acc, out_kv["kv_acc"][0])
    kw_rk, out_rk = blk(branch, "attention_requant_kv")
    # kv per (head, column j) and ks per head on the requantizer: rows i, channels (h, j) / h
    kv = requant(f"{tag}_{branch}_rqkv", kv_acc.transpose(1, 0, 2).reshape(d, H * d),
                 {"M": kw_rk["M_kv"].reshape(H * d), "n": kw_rk["n_kv"].reshape(H * d), "z_out": 0,
                  "lo": -127, "hi": 127, "axis": 1},
                 out_rk["kv"][0].transpose(1, 0, 2).reshape(d, H * d)).reshape(d, H, d).transpose(1, 0, 2)
    ks = requant(f"{tag}_{branch}_rqks", ksum.T,
                 {"M": kw_rk["M_ks"].reshape(H), "n": kw_rk["n_ks"].reshape(H), "z_out": 0, "lo": 0, "hi": 255,
                  "axis": 1}, out_rk["ks"][0].T).T
    _check(f"{blk.prefix}.{branch} attention_requant_kv kv", kv, out_rk["kv"][0])
    _check(f"{blk.prefix}.{branch} attention_requant_kv ks", ks, out_rk["ks"][0])
    kw_nd, out_nd = blk(branch, "attention_num_den")
    num, den = mat_num_den(f"{tag}_{branch}_nd", q, kw_nd["z_q"], kv, ks, out_nd["num"][0], out_nd["den"][0])
    _check(f"{blk.prefix}.{branch} attention_num_den", num, out_nd["num"][0])
    kw_code, out_code = blk(branch, "log2_code")
    kw_div, out_div = blk(branch, "attention_divide")
    outs = []
    for h in range(H):
        res = norm_ops.attention_divide(
            CFG, f"{tag}_{branch}_div_h{h}", dict(kw_code, den=den[h]), {"code": out_code["code"][0, h]},
            dict(kw_div, num=num[h], M_o=kw_div["M_o"][h].reshape(d), n_o=kw_div["n_o"][h].reshape(d)),
            out_div["out"][0, h], return_outputs=True, **RUN)
        outs.append(np.asarray(res["tensor"], np.int64))
    o = np.stack(outs)
    _check(f"{blk.prefix}.{branch} attention_divide", o, out_div["out"][0])
    return o


def run_lite_mla(blk: Block, tag: str, x0: np.ndarray) -> np.ndarray:
    qkv = run_conv_stage(blk, tag, "qkv", x0)
    agg = run_conv_stage(blk, tag, "agg_pw", run_conv_stage(blk, tag, "agg_dw", qkv))
    outs = [run_core(blk, tag, br, t) for br, t in (("attn0", qkv), ("attn1", agg))]
    o = np.concatenate(outs, axis=0)                                  # (2H, N, d)
    H2, n, d = o.shape
    o = o.transpose(0, 2, 1).reshape(H2 * d, x0.shape[1], x0.shape[2])
    y = run_conv_stage(blk, tag, "proj", o)
    kw, out = blk("add", "residual_add")
    return residual(f"{tag}_add", y[None], x0[None], kw, out["out"])


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.assets
def test_mbconv_block_stage0_block1():
    """MBConv with residual, stage 0 block 1 (16 -> 64 -> 16 channels, 56x56).

    Filter-wise shifting moves the depthwise hardswish's per-channel output
    zero points outside [0, 255] in later stages; the requantizer's z_out
    table is `zero_point_bits` (16) wide, signed, for them (rtl/requant.py)."""
    blk = Block(vector_dir(), "stages.0.blocks.1")
    kw, _ = blk("expand", "conv2d")
    x0 = kw["x"][0]
    y = run_mbconv(blk, "s0b1", x0)
    _, out = blk("add", "residual_add")
    _check("stages.0.blocks.1 block output", y, out["out"])


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.assets
def test_attention_block_stage2_context():
    """LiteMLA of the first EfficientViT block of stage 2 (64 channels, 14x14, 4 heads x 2 branches, residual)."""
    blk = Block(vector_dir(), "stages.2.blocks.1.context")
    kw, _ = blk("qkv", "conv2d")
    x0 = kw["x"][0]
    y = run_lite_mla(blk, "s2b1ctx", x0)
    _, out = blk("add", "residual_add")
    _check("stages.2.blocks.1.context block output", y, out["out"])
