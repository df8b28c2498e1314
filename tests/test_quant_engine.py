"""The engine in one call, its export, and its configuration errors."""
import dataclasses

import numpy as np
import pytest
import torch

from quant.config import QuantConfig
from quant.data import SyntheticImages
from quant.engine import quantize
from quant.export import FORMAT_VERSION, load_quantized, read_quantized, save_quantized
from quant.models import create_model


def small_case() -> tuple[torch.nn.Module, torch.Tensor, QuantConfig]:
    """A seeded B0, 16 synthetic 96x96 images and a few reconstruction steps: the whole engine in seconds."""
    model = create_model("b0-r224", num_classes=10, seed=1)
    ds = SyntheticImages(16, 96, seed=2)
    x = torch.stack([ds[i][0] for i in range(16)])
    return model, x, QuantConfig(iters_w=4, iters_a=4, batch_size=8)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    model, x, cfg = small_case()
    qm, rep = quantize(model, [x[:8], x[8:]], cfg, progress=False)
    path = save_quantized(tmp_path_factory.mktemp("q") / "quantized.pt", qm, "b0-r224", cfg, rep)
    return model, x, qm, rep, path


def test_every_tensor_is_quantized_to_its_code_grid(quantized):
    _, x, qm, _, _ = quantized
    grids = {}

    def hook(mod, args, out):
        grids[mod.name] = (mod, out)
    hs = [q.register_forward_hook(hook) for q in qm.act_quantizers()]
    with torch.no_grad():
        qm(x[:2])
    for h in hs:
        h.remove()
    assert len(grids) == len(qm.act_quantizers())
    for name, (q, out) in grids.items():
        assert q.enabled, name
        s = q._view(q.scale.detach().abs(), out)
        codes = out / s
        assert torch.allclose(codes, codes.round(), atol=2e-3), name


def test_weights_are_symmetric_codes_and_head_stem_8bit():
    model = create_model("b0-r224", num_classes=10, seed=1)
    x = torch.stack([SyntheticImages(4, 96)[i][0] for i in range(4)])
    qm, _ = quantize(model, [x], QuantConfig(n_bits_w=4, iters_w=0, iters_a=0, batch_size=4), progress=False)
    bits = {op.name: op.wq.bits for op in qm.weight_ops()}
    assert bits["stem.in_conv"] == 8 and bits["head.fc2"] == 8 and bits["head.fc1"] == 4
    for op in qm.weight_ops():
        lo, hi = op.wq.code_range
        c = op.wq.codes(op.weight)
        assert op.wq.zero_point.abs().max() == 0 and c.min() >= lo and c.max() <= hi
    qm2, _ = quantize(model, [x], QuantConfig(n_bits_w=4, iters_w=0, iters_a=0, batch_size=4,
                                             keep_8bit_head_stem=False), progress=False)
    assert {op.name: op.wq.bits for op in qm2.weight_ops()}["stem.in_conv"] == 4


def test_report_has_block_sqnr_and_adaround_decided(quantized):
    _, _, qm, rep, _ = quantized
    assert set(rep["block_sqnr_db"]) == {b.name for b in qm.blocks}
    assert all(v > 0 for v in rep["block_sqnr_db"].values())
    assert len(rep["reconstruction_weight"]) == len(qm.blocks) == len(rep["reconstruction_act"])
    # AdaRound decides every weight of a block it kept; a block it made worse rounds to nearest
    kept = {r["block"]: r["kept"] for r in rep["reconstruction_weight"]}
    for blk in qm.blocks:
        modes = {m.wq.mode for m in blk.modules() if getattr(m, "wq", None) is not None}
        assert modes == ({"hard"} if kept[blk.name] else {"nearest"}), blk.name


def test_reconstruction_never_leaves_a_block_worse_on_calibration_data(quantized):
    _, _, _, rep, _ = quantized
    for stage in ("reconstruction_weight", "reconstruction_act"):
        for r in rep[stage]:
            assert r["rec_error"] <= r["start_error"] * (1 + 1e-5) + 1e-6, (stage, r)


def test_export_round_trip_is_exact(quantized):
    _, x, qm, _, path = quantized
    qm2, obj = load_quantized(path)
    with torch.no_grad():
        torch.testing.assert_close(qm2(x[:4]), qm(x[:4]), rtol=0, atol=0)
    kinds = {n["op"] for n in obj["nodes"]}
    assert {"conv", "depthwise", "pointwise", "grouped", "attention", "add", "avgpool", "linear",
            "layernorm_hswish"} <= kinds
    for n in obj["nodes"]:
        assert n["output"] in obj["tensors"]
        if "weight_codes" in n:
            assert n["weight_codes"].dtype == np.int32 and np.abs(n["weight_codes"]).max() <= 127
            assert tuple(n["weight_codes"].shape) == tuple(n["weight_shape"])


def test_reader_names_wrong_format_and_version(tmp_path, quantized):
    path = quantized[-1]
    obj = torch.load(path, weights_only=False)
    obj["version"] = 99
    torch.save(obj, tmp_path / "v.pt")
    with pytest.raises(ValueError, match="format version 99"):
        read_quantized(tmp_path / "v.pt")
    del obj["nodes"]
    obj["version"] = FORMAT_VERSION
    torch.save(obj, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="missing field 'nodes'"):
        read_quantized(tmp_path / "m.pt")
    torch.save({"a": 1}, tmp_path / "f.pt")
    with pytest.raises(ValueError, match="not a triovit-quantized file"):
        read_quantized(tmp_path / "f.pt")


@pytest.mark.parametrize("kw,msg", [(dict(n_bits_w=9), "n_bits_w 9"), (dict(n_bits_a=1), "n_bits_a 1"),
                                    (dict(log2_clamp=(0, 20)), "does not fit a 4-bit code"),
                                    (dict(iters_w=-1), "iters_w")])
def test_config_rejects_unsupported(kw, msg):
    with pytest.raises(ValueError, match=msg):
        QuantConfig(**kw)


def test_output_bias_takes_back_the_mean_error_and_survives_export(tmp_path):
    """--output_bias: each op's bias takes back the per-channel mean by which its output misses the float
    model's, so on the calibration images the logits' per-class means land on the float model's (the
    last op is corrected last; what remains is the bias grid and the logits' own rounding)."""
    model, x, cfg = small_case()
    cfg = dataclasses.replace(cfg, iters_w=0, iters_a=0)
    with torch.no_grad():
        ref = model(x)
    err, deltas = {}, {}
    for on in (False, True):
        qm, rep = quantize(model, [x[:8], x[8:]], dataclasses.replace(cfg, output_bias=on), progress=False)
        with torch.no_grad():
            y = qm(x)
        err[on] = (y - ref).mean(0).abs().max().item()
        deltas[on] = [op.bias_delta.numel() for op in qm.weight_ops()]
    assert not any(deltas[False]) and all(deltas[True])
    assert err[True] < err[False] / 4, err
    assert "output_bias_s" in rep["timing"]
    path = save_quantized(tmp_path / "quantized.pt", qm, "b0-r224", dataclasses.replace(cfg, output_bias=True), rep)
    qm2, _ = load_quantized(path)
    with torch.no_grad():
        torch.testing.assert_close(qm2(x), y, rtol=0, atol=0)
