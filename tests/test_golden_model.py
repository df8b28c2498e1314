"""golden/convert.py + execute.py + vectors.py on a small hand-built quantized.pt graph (every op type).

Each integer node is compared with a float64 emulation of the graph's real
semantics (docs/quantized_format.md) applied to the same integer inputs: the
integer model may differ only where the SPEC's integer rounding (multiplier
precision 2^-31, LayerNorm's integer reciprocal square root) moves a value
across a rounding boundary.  The real proxy and a seeded B1 go through the
same path in the slow tests at the end.
"""
from __future__ import annotations

import functools
import json
import math
import os

import numpy as np
import pytest
import torch

from arch import ir as arch_ir
from golden import convert, execute, ops, vectors

RNG = np.random.default_rng(1234)


def t(a, dtype=torch.float64):
    return torch.tensor(np.asarray(a), dtype=dtype)


def act(scale, zp, bits=8, signed=False):
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    zp = np.broadcast_to(np.atleast_1d(np.asarray(zp)), scale.shape).astype(np.int32)
    return dict(bits=bits, signed=signed, scale=t(scale), zero_point=torch.tensor(zp), per_channel=scale.size > 1,
                channels=None, enabled=True)


def mac(name, op, inp, out, cout, cin_g, k, stride=1, padding=0, groups=1, act_=None, pre=None, out_div=None,
        acc_grid=None, w_bits=8):
    wmax = 2 ** (w_bits - 1) - 1
    w = RNG.integers(-wmax, wmax + 1, (cout, cin_g, k, k) if op != "linear" else (cout, cin_g))
    s_w = RNG.uniform(0.002, 0.02, cout) * 127 / wmax
    bias = RNG.normal(0, 0.5, cout)
    if acc_grid is not None:   # a bias on the accumulator grid, like the hardware's int32 bias
        bias = np.round(bias / (acc_grid * s_w)) * acc_grid * s_w
    n = dict(op=op, name=name, input=inp, output=out, act=act_, weight_codes=torch.tensor(w, dtype=torch.int32),
             weight_scale=t(s_w), weight_zero_point=torch.zeros(cout, dtype=torch.int32), weight_bits=w_bits,
             weight_symmetric=True, weight_shape=tuple(w.shape), bias=t(bias), out_div=None if out_div is None else t(out_div))
    if op != "linear":
        n.update(stride=stride, padding=padding, groups=groups)
    if pre is not None:
        n["pre"] = pre
    return n


def tiny_ir(stem_per_channel: bool = False, w_bits: int = 8, a_bits: int = 8) -> dict:
    """A 16x16 network with every node type of EfficientViT (B0 layout, one head of dim 4), with
    ``w_bits`` weights and ``a_bits`` activations (the image stays 8-bit, the logits 16-bit)."""
    s_in = np.array([0.0171, 0.0175, 0.0174]) if stem_per_channel else np.full(3, 1 / 255)
    T = {"input": act(s_in, [124, 116, 104])}
    N = []
    g = (2 ** a_bits - 1) / 255          # the 8-bit design's ranges on an a_bits grid
    wmac = functools.partial(mac, w_bits=w_bits)

    def A(name, s, z, bits=a_bits, **kw):
        # irregular scales: "nice" ratios (5/8, 7/8) put exact ties everywhere, which no model has
        r = g if bits == a_bits else 1.0
        z = np.asarray(z) if kw.get("signed") or bits != a_bits else np.round(np.asarray(z) * r).astype(np.int64)
        T[name] = act(np.asarray(s) * RNG.uniform(0.9, 1.1) / r, z, bits=bits, **kw)
        return name

    # stem: generic 3x3 stride 2 with hardswish (pre-activation tensor)
    N.append(wmac("stem", "conv", "input", A("stem.out", 0.05, 60), 8, 3, 3, 2, 1, act_="hswish",
                 pre=A("stem.pre", 0.05, 128), acc_grid=s_in.max()))
    # MBConv: expand (migration out_div) -> depthwise (shift: per-channel zero points) -> project -> add
    N.append(wmac("mb.expand", "pointwise", "stem.out", A("mb.expand.out", 0.03, 40), 16, 8, 1, act_="hswish",
                 pre=A("mb.expand.pre", RNG.uniform(0.03, 0.05, 16), RNG.integers(100, 140, 16)),
                 out_div=RNG.uniform(0.5, 2.0, 16), acc_grid=0.05))   # per-channel pre-activation
    zc = RNG.integers(-300, 300, 16)
    N.append(wmac("mb.dw", "depthwise", "mb.expand.out", A("mb.dw.out", np.full(16, 0.03), zc), 16, 1, 3, 1, 1, 16,
                 act_="hswish", pre=A("mb.dw.pre", 0.04, 110), acc_grid=0.03))
    N.append(wmac("mb.project", "pointwise", "mb.dw.out", A("mb.project.out", 0.06, 128), 8, 16, 1, acc_grid=0.03))
    N.append(dict(op="add", name="mb.add", inputs=["mb.project.out", "stem.out"], output=A("mb.add.out", 0.07, 100)))
    # LiteMLA: qkv (q/k/v groups) -> 5x5 depthwise -> grouped 1x1 -> two attention branches -> proj -> add
    H, d = 1, 4
    grp = lambda s3, z3: (np.repeat(np.array(s3), d), np.repeat(np.array(z3), d))  # noqa: E731
    s3, z3 = grp([0.05, 0.04, 0.06], [100, 90, 128])
    N.append(wmac("mla.qkv", "pointwise", "mb.add.out", A("mla.qkv.out", s3, z3), 12, 8, 1, acc_grid=0.07))
    s3b, z3b = grp([0.045, 0.05, 0.055], [110, 95, 120])
    N.append(wmac("mla.agg_dw", "depthwise", "mla.qkv.out", A("mla.agg_dw.out", s3b, z3b), 12, 1, 5, 1, 2, 12))
    s3c, z3c = grp([0.05, 0.05, 0.06], [105, 100, 125])
    N.append(wmac("mla.agg_pw", "grouped", "mla.agg_dw.out", A("mla.agg_pw.out", s3c, z3c), 12, 4, 1, groups=3))
    A("mla.attn_out", 0.03, 128)
    for i, src in enumerate(("mla.qkv.out", "mla.agg_pw.out")):
        T[f"mla.attn{i}.kv"] = act(RNG.uniform(0.5, 2.0, (H, d)) * 127 / (2 ** (a_bits - 1) - 1), 0, bits=a_bits,
                                   signed=True)
        T[f"mla.attn{i}.kv"]["scale"] = T[f"mla.attn{i}.kv"]["scale"].view(H, d)
        T[f"mla.attn{i}.ks"] = act(np.full(H, 0.6) / g, 0, bits=a_bits)
        N.append(dict(op="attention", name=f"mla.attn{i}", input=src, output="mla.attn_out",
                      out_channel_offset=i * H * d, heads=H, dim=d, kv=f"mla.attn{i}.kv", ks=f"mla.attn{i}.ks",
                      log2=True, log2_bits=4, log2_frac=i, e_lo=4, eps=1e-15))   # the mantissa bit on branch 1
    T["mla.attn_out"]["channels"] = 2 * H * d
    N.append(wmac("mla.proj", "pointwise", "mla.attn_out", A("mla.proj.out", 0.05, 128), 8, 8, 1, acc_grid=0.03))
    N.append(dict(op="add", name="mla.add", inputs=["mla.proj.out", "mb.add.out"], output=A("mla.add.out", 0.08, 110)))
    # head: 1x1 + hardswish, pool, fc1, LayerNorm + hardswish, fc2 (int16 logits)
    N.append(wmac("head.in_conv", "pointwise", "mla.add.out", A("head.in_conv.out", 0.04, 20), 32, 8, 1,
                 act_="hswish", pre=A("head.in_conv.pre", 0.05, 100), acc_grid=0.08))
    N.append(dict(op="avgpool", name="head.pool", input="head.in_conv.out", output=A("head.pool.out", 0.02, 30)))
    N.append(wmac("head.fc1", "linear", "head.pool.out", A("head.fc1.out", 0.03, 128), 24, 32, 0, acc_grid=0.02))
    N.append(dict(op="layernorm_hswish", name="head.ln", input="head.fc1.out", output=A("head.ln.out", 0.03, 20),
                  pre=A("head.ln.pre", RNG.uniform(0.02, 0.04, 24), RNG.integers(110, 140, 24)), weight=t(RNG.uniform(0.5, 1.5, 24)), bias=t(RNG.normal(0, 0.3, 24)),
                  eps=1e-5))
    N.append(wmac("head.fc2", "linear", "head.ln.out", A("head.fc2.out", 0.002, 0, bits=16, signed=True), 5, 24, 0,
                 acc_grid=0.03))
    for n in N:   # biases on the accumulator grid s_x s_w[c], like the hardware's int32 bias
        if n["op"] in convert.MAC_OPS:
            s_x = np.abs(T[n["input"]]["scale"].numpy()).reshape(-1)
            cout, groups = len(n["weight_scale"]), n.get("groups", 1)
            per_group = np.broadcast_to(s_x, (n["weight_codes"].shape[1] * groups,)).reshape(groups, -1)
            if np.all(per_group == per_group[:, :1]):      # one input scale per filter (not the stem's)
                s_acc = np.repeat(per_group[:, 0], cout // groups) * n["weight_scale"].numpy()
                n["bias"] = t(np.round(n["bias"].numpy() / s_acc) * s_acc)
    return dict(format="triovit-quantized", version=arch_ir.VERSION, model="b0-r224", num_classes=5, input_size=16, crop_ratio=1.0,
                recipe="hardware", tensors=T, nodes=N, graph_input="input", graph_output="head.fc2.out")


# --------------------------------------------------------------------------- float64 emulation of the IR semantics
def deq(codes, e, C=None):
    s, z = np.abs(e["scale"].numpy()).reshape(-1), e["zero_point"].numpy().reshape(-1)
    shape = (1, -1, 1, 1) if codes.ndim == 4 else (1, -1)
    return (codes - z.reshape(shape)) * s.reshape(shape)


def quant(x, e):
    s, z = np.abs(e["scale"].numpy()).reshape(-1), e["zero_point"].numpy().reshape(-1)
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    b = e["bits"]
    lo, hi = (-(2 ** (b - 1) - 1), 2 ** (b - 1) - 1) if e["signed"] else (0, 2 ** b - 1)
    return np.clip(np.floor(x / s.reshape(shape) + 0.5) + z.reshape(shape), lo, hi)


def hsw_knee(y, e):
    s = np.abs(e["scale"].numpy()).reshape(-1)
    t3 = (np.maximum(1.0, np.floor(3 / s + 0.5)) * s).reshape((1, -1, 1, 1) if y.ndim == 4 else (1, -1))
    return y * np.clip(y + t3, 0, 2 * t3) / (2 * t3)


def emulate(node, ir, env):
    T = ir["tensors"]
    op = node["op"]
    if op in convert.MAC_OPS:
        x = deq(env[node["input"]], T[node["input"]])
        w = node["weight_codes"].double() * node["weight_scale"].view(-1, *([1] * (node["weight_codes"].dim() - 1)))
        if op == "linear":
            y = (torch.tensor(x) @ w.T + node["bias"]).numpy()
        else:
            y = torch.nn.functional.conv2d(torch.tensor(x), w, node["bias"], node["stride"], node["padding"], 1,
                                           node["groups"]).numpy()
        if node["act"] == "hswish":
            y = hsw_knee(deq(quant(y, T[node["pre"]]), T[node["pre"]]), T[node["pre"]])
        if node["out_div"] is not None:
            y = y / node["out_div"].numpy().reshape(1, -1, 1, 1)
        return quant(y, T[node["output"]])
    if op == "add":
        a, b = (deq(env[i], T[i]) for i in node["inputs"])
        return quant(a + b, T[node["output"]])
    if op == "avgpool":
        return quant(deq(env[node["input"]], T[node["input"]]).mean(axis=(2, 3)), T[node["output"]])
    if op == "layernorm_hswish":
        x = torch.tensor(deq(env[node["input"]], T[node["input"]]))
        y = torch.nn.functional.layer_norm(x, x.shape[-1:], node["weight"], node["bias"], node["eps"]).numpy()
        pre = T[node["pre"]]
        return quant(hsw_knee(deq(quant(y, pre), pre), pre), T[node["output"]])
    raise AssertionError(op)


def emulate_attention(node, ir, env):
    T = ir["tensors"]
    src = env[node["input"]]
    B, C, h, w = src.shape
    H, d = node["heads"], node["dim"]
    x = deq(src, T[node["input"]]).reshape(B, H, 3 * d, h * w).transpose(0, 1, 3, 2)
    q, k, v = np.maximum(x[..., :d], 0), np.maximum(x[..., d:2 * d], 0), x[..., 2 * d:]
    s_kv = np.abs(T[node["kv"]]["scale"].numpy()).reshape(1, H, 1, d)
    kmax = 2 ** (T[node["kv"]]["bits"] - 1) - 1
    kv = np.clip(np.floor(np.swapaxes(k, -1, -2) @ v / s_kv + 0.5), -kmax, kmax) * s_kv
    s_ks = np.abs(T[node["ks"]]["scale"].numpy()).reshape(1, H, 1)
    ks = np.clip(np.floor(k.sum(axis=2) / s_ks + 0.5), 0, 2 ** T[node["ks"]]["bits"] - 1) * s_ks
    num = q @ kv
    den = (q * ks[:, :, None, :]).sum(-1)
    s_q = float(np.abs(T[node["input"]]["scale"].numpy()).reshape(-1)[0])
    unit = s_q * s_ks
    dint = np.floor(den / unit + 0.5)
    # the divisor: the value of the code window nearest dint in log2 (brute force over the window)
    steps = (1.0, 4 / 3) if node.get("log2_frac", 0) else (1.0,)
    cand = np.array([2.0 ** e * s for e in range(node["e_lo"], node["e_lo"] + 16) for s in steps])
    pick = np.abs(np.log2(np.maximum(dint, 1))[..., None] - np.log2(cand)).argmin(-1)
    div = np.where(dint > 0, cand[pick], 2.0 ** node["e_lo"])
    out = num / (div * unit)[..., None]
    return quant(out.transpose(0, 1, 3, 2).reshape(B, H * d, h, w), T[node["output"]])


def images(n=2, size=16):
    return RNG.integers(0, 256, (n, 3, size, size)).astype(np.uint8)


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("w_bits,a_bits", [(8, 8), (6, 6), (4, 8)])
def test_every_node_matches_float_semantics_of_the_graph(w_bits, a_bits):
    ir = tiny_ir(w_bits=w_bits, a_bits=a_bits)
    model = convert.from_ir(ir)
    assert model["notes"] == []                  # a uniform stem input scale converts exactly
    env = execute.run(model, images(3), keep=True)
    worst = {}
    for node in ir["nodes"]:
        if node["op"] == "attention":
            want = emulate_attention(node, ir, env)
            o = node["out_channel_offset"]
            got = env[node["output"]][:, o:o + node["heads"] * node["dim"]]
        else:
            want = emulate(node, ir, env)
            got = env[node["output"]]
        diff = np.abs(got - want)
        worst[node["name"]] = (int(diff.max()), float((diff > 0).mean()))
    for name, (mx, frac) in worst.items():
        # exact except a rare rounding-boundary case; a hardswish knee turns one pre-activation LSB into <= 2
        assert mx <= 2 and frac <= 0.02, (name, mx, frac, worst)
    assert sum(f for _, f in worst.values()) < 0.05, worst


def test_logits_are_int16_and_deterministic():
    model = convert.from_ir(tiny_ir())
    x = images(2)
    a, b = execute.run(model, x), execute.run(model, x)
    assert a.shape == (2, 5) and np.array_equal(a, b)
    assert a.min() >= -32768 and a.max() <= 32767


def test_stem_per_channel_scale_is_folded_and_noted():
    model = convert.from_ir(tiny_ir(stem_per_channel=True))
    assert any("stem" in n and "re-rounded" in n for n in model["notes"])
    stem = model["nodes"][0]
    assert np.abs(stem["w"]).max() <= 127
    execute.run(model, images(1))


def test_dead_channel_gets_zero_multiplier_and_wide_knee():
    # a pre-activation channel with a tiny scale (a dead channel): t3 beyond 16 bits, factors below 2^-33
    ir = tiny_ir()
    pre = ir["tensors"]["mb.expand.pre"]
    s = pre["scale"].clone()
    s[3] = 1e-6
    pre["scale"] = s
    model = convert.from_ir(ir)
    node = model["nodes"][1]
    assert node["hswish"]["t3"][3] == 3_000_000 and node["hswish"]["M"][3] == 0
    execute.run(model, images(1))


def test_integer_model_holds_no_float():
    model = convert.from_ir(tiny_ir())

    def walk(v, path):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{path}.{k}")
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(x, f"{path}[{i}]")
        elif isinstance(v, np.ndarray):
            assert v.dtype.kind in "iu", path
        else:
            assert not isinstance(v, float), path
    walk(model, "model")


def test_executor_refuses_float_images_and_wrong_size():
    model = convert.from_ir(tiny_ir())
    with pytest.raises(TypeError, match="uint8"):
        execute.run(model, images(1).astype(np.float32))
    with pytest.raises(ValueError, match="16x16"):
        execute.run(model, images(1, 32))


@pytest.mark.parametrize("mutate, message", [
    (lambda ir: ir.update(version=arch_ir.VERSION + 1), "version"),
    (lambda ir: ir.update(format="other"), "not a triovit-quantized"),
    (lambda ir: ir.pop("tensors"), "missing field 'tensors'"),
    (lambda ir: ir["nodes"][1].pop("weight_scale"), "missing field 'weight_scale'"),
    (lambda ir: ir["nodes"][6].pop("groups"), "missing field 'groups'"),
    (lambda ir: ir["tensors"]["stem.out"].pop("zero_point"), "tensor 'stem.out' is missing field 'zero_point'"),
    (lambda ir: ir.update(recipe="reference"), "hardware recipe"),
    (lambda ir: ir["nodes"][0].update(op="fancy"), "does not know"),
])
def test_reader_names_what_is_wrong(mutate, message):
    ir = tiny_ir()
    mutate(ir)
    with pytest.raises(ValueError, match=message):
        convert.from_ir(ir)


def test_conversion_refuses_unsupported_models():
    ir = tiny_ir()
    ir["nodes"][8]["log2"] = False                           # float divisor (the first attention node)
    with pytest.raises(ValueError, match="log2"):
        convert.from_ir(ir)
    ir = tiny_ir()
    ir["nodes"][1]["weight_zero_point"] = torch.ones(16, dtype=torch.int32)
    with pytest.raises(ValueError, match="asymmetric"):
        convert.from_ir(ir)
    ir = tiny_ir()
    ir["tensors"]["mb.add.out"]["enabled"] = False
    with pytest.raises(ValueError, match="not quantized"):
        convert.from_ir(ir)


def test_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="--output"):
        convert.from_ir(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a torch file")
    with pytest.raises(ValueError, match="not a readable"):
        convert.from_ir(bad)


# --------------------------------------------------------------------------- vectors
def dump_tiny(tmp_path, layers=None):
    model = convert.from_ir(tiny_ir())
    rec = vectors.Recorder(layers=layers)
    execute.run(model, images(1), rec=rec)
    vectors.write(rec, tmp_path, dict(name="tiny"), "random")
    return rec


def test_vectors_dump_reload_and_replay_every_op(tmp_path):
    rec = dump_tiny(tmp_path)
    m = vectors.read_manifest(tmp_path)
    assert m["version"] == vectors.VERSION and m["num_records"] == len(rec.records)
    assert set(m["ops"]) == {"conv2d", "requantize", "hardswish", "residual_add", "attention_kv",
                             "attention_requant_kv", "attention_num_den", "log2_code", "attention_divide",
                             "global_avgpool", "linear", "layernorm", "logits_requant"}
    for r in m["records"]:
        kwargs, expected = vectors.load_record(tmp_path, r)
        assert vectors.replay(tmp_path, r) == []
        for k, desc in r["inputs"].items():
            assert list(kwargs[k].shape) == desc["shape"]
    # a corrupted expected output is caught by the replay
    r = m["records"][0]
    kwargs, expected = vectors.load_record(tmp_path, r)
    arrays = {f"in.{k}" if k in r["inputs"] else f"param.{k}": v for k, v in kwargs.items() if k not in r["scalars"]}
    out = dict(expected)
    key = next(iter(out))
    out[key] = out[key].copy()
    out[key].flat[0] += 1
    np.savez(tmp_path / r["file"], **arrays, **{f"out.{k}": v for k, v in out.items()})
    assert vectors.replay(tmp_path, r) == [key]


def test_vectors_layer_filter(tmp_path):
    rec = dump_tiny(tmp_path, layers=("mla.attn0",))
    assert {r["layer"] for r in rec.records} == {"mla.attn0"}
    with pytest.raises(ValueError, match="--layer"):
        vectors.write(vectors.Recorder(layers=("nothing",)), tmp_path / "x", {}, "")


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.update(version=99), "version 99 is not supported"),
    (lambda m: m.update(format="x"), "format is 'x'"),
    (lambda m: m.pop("records"), "missing field 'records'"),
    (lambda m: m["records"][0].pop("outputs"), "record 0: missing field 'outputs'"),
    (lambda m: m["records"][0].update(op="nope"), "unknown op"),
])
def test_vector_reader_names_what_is_wrong(tmp_path, mutate, message):
    dump_tiny(tmp_path, layers=("stem",))
    p = tmp_path / vectors.MANIFEST
    m = json.loads(p.read_text())
    mutate(m)
    p.write_text(json.dumps(m))
    with pytest.raises(vectors.VectorFormatError, match=message):
        vectors.read_manifest(tmp_path)


def test_vector_shape_mismatch_is_reported(tmp_path):
    dump_tiny(tmp_path, layers=("stem",))
    m = vectors.read_manifest(tmp_path)
    r = m["records"][0]
    r["inputs"]["x"]["shape"] = [9, 9]
    with pytest.raises(vectors.VectorFormatError, match="manifest says"):
        vectors.load_record(tmp_path, r)
    with pytest.raises(FileNotFoundError, match="not a golden vector folder"):
        vectors.read_manifest(tmp_path / "missing")


# --------------------------------------------------------------------------- real models (slow)
def _calibrated_vectors(tmp_path, model_name: str, weight_path, num_classes: int, seed=None):
    """Quantize (hardware recipe, all techniques, no reconstruction, 8 train images), convert through
    quant/'s exporter, dump every layer's vectors for one val image, reload and replay them."""
    from quant.config import QuantConfig
    from quant.data import calibration_subset, image_folder
    from quant.engine import quantize
    from quant.models import build_model, get_spec
    from quant.export import to_ir
    from tests.assets import IMAGENETTE, assets_dir
    from golden.images import load_image
    assets = assets_dir()
    spec = get_spec(model_name)
    model = build_model(model_name, None if weight_path is None else str(assets / weight_path),
                        num_classes=num_classes, seed=seed)
    ds = calibration_subset(image_folder(assets / IMAGENETTE, "train", spec.input_size, spec.crop_ratio), 8, 0)
    calib = torch.stack([ds[i][0] for i in range(len(ds))])
    qm, _ = quantize(model, [calib], QuantConfig(iters_w=0, iters_a=0, batch_size=8), progress=False)
    int_model = convert.from_ir(to_ir(qm, model_name, with_state=False))
    img = sorted((assets / IMAGENETTE / "val").rglob("*.JPEG"))[0]
    u8 = load_image(img, spec.input_size, spec.crop_ratio)
    rec = vectors.Recorder()
    logits = execute.run(int_model, u8, rec=rec)
    vectors.write(rec, tmp_path, dict(name=model_name), str(img))
    m = vectors.read_manifest(tmp_path)
    assert all(vectors.replay(tmp_path, r) == [] for r in m["records"])
    kinds = {execute.mac_kind(n) for n in int_model["nodes"] if n["op"] in ("conv", "linear")}
    assert kinds == {"generic conv", "pointwise conv", "depthwise conv", "grouped conv", "linear"}
    assert {"attention_kv", "attention_divide", "layernorm", "global_avgpool", "residual_add",
            "hardswish", "logits_requant"} <= set(m["ops"])
    return logits, m


@pytest.mark.slow
@pytest.mark.assets
def test_vectors_real_proxy_b0(tmp_path):
    from tests.assets import PROXY_MODEL
    logits, m = _calibrated_vectors(tmp_path, "b0-r224", PROXY_MODEL, 10)
    assert logits.shape == (1, 10)


@pytest.mark.slow
@pytest.mark.assets
def test_vectors_seeded_b1_r224(tmp_path):
    logits, m = _calibrated_vectors(tmp_path, "b1-r224", None, 1000, seed=0)
    assert logits.shape == (1, 1000)


@pytest.mark.assets
def test_golden_eval_agrees_with_fakequant_on_real_proxy(tmp_path):
    """`python -m golden eval` end to end on the real proxy: quantized.pt (default hardware recipe,
    bias correction and all techniques on) -> integer model vs its fake-quant reference."""
    from golden.evaluate import evaluate
    from quant.config import QuantConfig
    from quant.data import calibration_subset, image_folder
    from quant.engine import quantize
    from quant.export import save_quantized
    from quant.models import build_model, get_spec
    from tests.assets import IMAGENETTE, PROXY_MODEL, assets_dir
    assets = assets_dir()
    spec = get_spec("b0-r224")
    model = build_model("b0-r224", str(assets / PROXY_MODEL))
    ds = calibration_subset(image_folder(assets / IMAGENETTE, "train", spec.input_size, spec.crop_ratio), 16, 0)
    calib = torch.stack([ds[i][0] for i in range(len(ds))])
    cfg = QuantConfig(iters_w=0, iters_a=0, batch_size=16)
    qm, rep = quantize(model, [calib], cfg, progress=False)
    path = save_quantized(tmp_path / "quantized.pt", qm, "b0-r224", cfg, rep)
    r = evaluate(path, assets / IMAGENETTE, every=98, progress=False)    # 21 images across the classes
    assert r["num_images"] == 21
    assert r["agreement"] >= 20 / 21, r
    assert abs(r["int_top1"] - r["fakequant_top1"]) <= 100 / 21 + 1e-9, r
