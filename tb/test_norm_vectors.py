"""Replay golden vector folders (golden/vectors.py, SPEC 11) through the normalization units.

Every record of an op these units implement (requantize, hardswish,
residual_add, log2_code + attention_divide, global_avgpool, layernorm,
logits_requant) is fed to its RTL unit through the same adapters the random
testbenches use (tb/norm_ops.py) and compared bit-exactly with the record's
stored output; the mismatch report names the record's layer.

* ``test_norm_vectors_synthetic``: a folder written here with golden's own
  ``Recorder`` from random tensors in the real layouts (NCHW maps, token
  vectors, per-head attention) -- checks the whole vector -> RTL path.
* ``test_norm_vectors_proxy``: the real proxy model's vectors, from
  ``$TRIOVIT_VECTORS`` or ``build/golden/vectors`` (``make golden`` writes
  them). Elementwise ops (requantize, hardswish, residual_add, the divider)
  are checked on ``MAX_ROWS`` pixels / tokens per record (every layer,
  evenly spaced rows) to keep the simulation short; pooling and LayerNorm on
  whole tensors. ``TB_VECTOR_OPS=op1,op2`` limits the replay to those ops.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from golden import ops, vectors
from tb import norm_ops
from tb.norm_cases import CONFIGS

REPO = Path(__file__).resolve().parents[1]
UNIT_OPS = ("requantize", "hardswish", "residual_add", "attention_divide", "global_avgpool", "layernorm",
            "logits_requant")
MAX_ROWS = int(os.environ.get("TB_VECTOR_ROWS", "64"))


def _subsample(kw: dict, out, keys: tuple[str, ...], axis: int, rows: int):
    """Keep ``rows`` evenly spaced positions of every non-channel axis product (channels on ``axis``)."""
    x0 = np.asarray(kw[keys[0]])
    ax = 0 if x0.ndim == 1 else axis % x0.ndim

    def flat(a):
        a = np.moveaxis(np.asarray(a), ax, -1)
        return a.reshape(-1, a.shape[-1])

    n = flat(x0).shape[0]
    if n <= rows:
        return kw, out, axis
    idx = np.linspace(0, n - 1, rows).round().astype(int)
    kw = dict(kw)
    for k in keys:
        kw[k] = flat(kw[k])[idx]
    return kw, flat(out)[idx], 1


def replay_record(cfg, vec_dir: Path, rec: dict, by_index: dict, max_rows: int | None, **run) -> dict:
    """Run one record on its unit. With ``return_outputs=True`` in ``run`` also checks that the
    tensor rebuilt from the unit's beats (what a chained unit would receive) equals the record's output."""
    kw, exp = vectors.load_record(vec_dir, rec)
    case = f"{rec['index']:04d}_{rec['layer']}_{rec['op']}".replace("/", "_")[:90]
    op = rec["op"]
    out = exp.get("out")
    if op in ("requantize", "hardswish", "residual_add"):
        keys = {"requantize": ("acc",), "hardswish": ("p",), "residual_add": ("a", "b")}[op]
        if max_rows:
            kw, out, axis = _subsample(kw, out, keys, kw.get("axis", 1), max_rows)
            kw["axis"] = axis
        res = getattr(norm_ops, op)(cfg, case, kw, out, **run)
    elif op == "attention_divide":
        prev = [r for i, r in sorted(by_index.items()) if i < rec["index"] and r["op"] == "log2_code"
                and r["layer"] == rec["layer"]]
        if not prev:
            raise AssertionError(f"{case}: no log2_code record of layer {rec['layer']} precedes it")
        kw_code, code_out = vectors.load_record(vec_dir, prev[-1])
        num, den, code = kw["num"], np.asarray(kw_code["den"]), np.asarray(code_out["code"])
        d = num.shape[-1]
        lead = num.shape[:-2]                          # (batch, heads): M_o, n_o, z_out may differ per head
        heads = int(np.prod(lead)) if lead else 1
        num, out = num.reshape(heads, -1, d), np.asarray(out).reshape(heads, -1, d)
        den, code = den.reshape(heads, -1), code.reshape(heads, -1)

        def per_head(v, h):
            a = np.asarray(v)
            return a.reshape(heads, -1)[h].reshape(-1) if a.ndim > 1 else a

        for h in range(heads):
            nh, oh, dh, ch = num[h], out[h], den[h], code[h]
            if max_rows and nh.shape[0] > max_rows:
                idx = np.linspace(0, nh.shape[0] - 1, max_rows).round().astype(int)
                nh, oh, dh, ch = nh[idx], oh[idx], dh[idx], ch[idx]
            # (f, the mantissa bit's row choice, the divider computes from den itself)
            kw_h = dict({k: v for k, v in kw.items() if k != "f"}, num=nh,
                        **{k: per_head(kw[k], h) for k in ("M_o", "n_o", "z_out", "M_o1", "n_o1") if k in kw})
            res = norm_ops.attention_divide(cfg, f"{case}_h{h}", dict(kw_code, den=dh), {"code": ch}, kw_h, oh,
                                            **run)
            if "tensor" in res:
                np.testing.assert_array_equal(res["tensor"], oh, err_msg=f"{case} head {h}: RTL output")
        return res
    elif op in ("logits_requant", "global_avgpool", "layernorm"):
        res = getattr(norm_ops, op)(cfg, case, kw, out, **run)
    else:
        raise KeyError(op)
    if "tensor" in res:
        np.testing.assert_array_equal(res["tensor"], out, err_msg=f"{case}: RTL output rebuilt from its beats")
    return res


def replay_folder(cfg, vec_dir: Path, max_rows: int | None, ops_wanted=UNIT_OPS, **run) -> dict:
    manifest = vectors.read_manifest(vec_dir)
    by_index = {r["index"]: r for r in manifest["records"]}
    done: dict[str, int] = {}
    for rec in manifest["records"]:
        if rec["op"] in ops_wanted:
            replay_record(cfg, vec_dir, rec, by_index, max_rows, **run)
            done[rec["op"]] = done.get(rec["op"], 0) + 1
    return done


def write_synthetic(vec_dir: Path, seed: int = 7) -> None:
    """Random tensors in the real layouts, recorded by golden's own Recorder."""
    rng = np.random.default_rng(seed)
    rec = vectors.Recorder()
    C, H, W = 6, 3, 4
    M, n = ops.quantize_multipliers(rng.uniform(2e-5, 4e-4, C))
    acc = rng.integers(-(1 << 19), 1 << 19, (1, C, H, W))
    p = rec.call("stage1.conv.pre", "requantize", acc=acc, M=M, n=n, z_out=np.int64(120), lo=0, hi=255)
    Mh, nh = ops.quantize_multipliers(rng.uniform(2e-4, 1e-3, C))
    y = rec.call("stage1.conv", "hardswish", p=p, z_p=np.int64(120), t3=np.int64(40), M=Mh, n=nh,
                 z_out=rng.integers(0, 30, C))
    # a shortcut with per-channel scales (as the stem's output has): a multiplier pair and z_a per channel
    Ma, Mb, ns = (np.array(v, dtype=np.int64)
                  for v in zip(*(ops.quantize_multiplier_pair(r, 0.45) for r in np.linspace(0.2, 1.6, C))))
    rec.call("stage1.add", "residual_add", a=y, z_a=np.arange(10, 10 + 5 * C, 5), Ma=Ma, b=p, z_b=np.int64(120),
             Mb=Mb, n=ns, z_out=np.int64(60))
    heads, N, d = 2, 5, 4
    den = rng.integers(0, 1 << 20, (heads, N))
    e, code = rec.call("stage2.attn", "log2_code", den=den, e_lo=np.int64(-6), code_bits=4)
    Mo, no = ops.quantize_multipliers(rng.uniform(0.5, 2.0, d))
    rec.call("stage2.attn", "attention_divide", num=rng.integers(-(1 << 22), 1 << 22, (heads, N, d)), e=e,
             M_o=Mo, n_o=no + 12, z_out=np.int64(128))
    Mp, npool = ops.quantize_multiplier(0.8 / (H * W))
    v = rec.call("head.pool", "global_avgpool", x=y, z_x=np.int64(10), M=np.int64(Mp), n=np.int64(npool),
                 z_out=np.int64(100))
    eps_int, G, B, ng = ops.layernorm_params(rng.uniform(0.5, 2, C), rng.uniform(-1, 1, C), 0.05, 0.1, 1e-5)
    rec.call("head.ln", "layernorm", x=v, z_x=np.int64(100), eps_int=eps_int, G=G, B=B, n_g=ng, z_out=np.int64(128))
    Ml, nl = ops.quantize_multipliers(rng.uniform(1e-4, 1e-3, 10))
    rec.call("head.fc2", "logits_requant", acc=rng.integers(-(1 << 24), 1 << 24, (1, 10)), M=Ml, n=nl, bits=16)
    vectors.write(rec, vec_dir, model={"name": "synthetic"}, image="random")


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_norm_vectors_synthetic(cfg, tmp_path):
    write_synthetic(tmp_path)
    done = replay_folder(cfg, tmp_path, max_rows=None, gap=0.2, backpressure=0.2, return_outputs=True)
    assert done == {op: 1 for op in UNIT_OPS}, done


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.assets
@pytest.mark.parametrize("cfg", [CONFIGS["small"]], ids=["small"])
def test_norm_vectors_proxy(cfg):
    from tests.assets import assets_dir
    assets_dir()
    vec_dir = Path(os.environ.get("TRIOVIT_VECTORS", REPO / "build" / "golden" / "vectors"))
    if not (vec_dir / vectors.MANIFEST).is_file():
        pytest.skip(f"no golden vectors at {vec_dir}: run `make golden` (or set TRIOVIT_VECTORS)")
    wanted = tuple(os.environ.get("TB_VECTOR_OPS", ",".join(UNIT_OPS)).split(","))
    done = replay_folder(cfg, vec_dir, max_rows=MAX_ROWS, ops_wanted=wanted, gap=0.1, backpressure=0.1)
    assert done, f"{vec_dir} holds no record of {UNIT_OPS}"
