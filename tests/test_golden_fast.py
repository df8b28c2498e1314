"""golden/fast.py (torch executor) against golden/execute.py + golden/ops.py: bit for bit, every tensor.

The small network of tests/test_golden_model.py has every node type; its intermediate tensors,
logits, accumulator maxima and MAC counts must be identical under both executors. The output
stages fast.py implements on its own (requant with the bias in the rounding constant, the tabulated
hardswish, the log2 rounding) are also compared with golden/ops.py over their whole input range.
The real proxy closes the file (assets).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from golden import convert, execute, fast, ops
from tests.test_golden_model import images, tiny_ir

RNG = np.random.default_rng(99)


def assert_same_run(model, x):
    """Every tensor, the logits and the statistics of fast.run equal those of execute.run."""
    st_want, st_got = execute.Stats(), execute.Stats()
    want, got = execute.run(model, x, keep=True, stats=st_want), fast.run(model, x, keep=True, stats=st_got)
    assert want.keys() == got.keys()
    for name in want:
        assert got[name].dtype == np.int64 and got[name].shape == want[name].shape, name
        diff = got[name] != want[name]
        assert not diff.any(), f"{name}: {int(diff.sum())} of {diff.size} codes differ"
    assert st_got.max_abs == st_want.max_abs and st_got.where == st_want.where and st_got.macs == st_want.macs
    # without stats the bias rides in the rounding constant: every tensor again
    got = fast.run(model, x, keep=True)
    assert all(np.array_equal(got[name], want[name]) for name in want)
    logits = want[model["graph_output"]]
    out = fast.run(model, x)                      # without keep: tensors are freed on the way
    assert out.dtype == np.int64 and np.array_equal(out, logits)
    return logits


@pytest.mark.parametrize("stem_per_channel", [False, True])
@pytest.mark.parametrize("n", [1, 5])
def test_every_tensor_matches_execute(stem_per_channel, n):
    model = convert.from_ir(tiny_ir(stem_per_channel=stem_per_channel))
    assert_same_run(model, images(n))


@pytest.mark.parametrize("value", [0, 255])
def test_extreme_images_match(value):
    model = convert.from_ir(tiny_ir())
    x = np.full((3, 3, 16, 16), value, np.uint8)
    x[1, :, ::3] = 255 - value                    # one image half-saturated the other way
    assert_same_run(model, x)


def test_single_image_without_batch_axis():
    model = convert.from_ir(tiny_ir())
    x = images(1)
    assert np.array_equal(fast.run(model, x[0]), execute.run(model, x[0]))
    assert fast.run(model, x[0]).shape == (1, 5)


def test_dead_channel_matches():
    # t3 = 3,000,000 (22 bits) and M = 0 on one hardswish channel (see test_golden_model)
    ir = tiny_ir()
    s = ir["tensors"]["mb.expand.pre"]["scale"].clone()
    s[3] = 1e-6
    ir["tensors"]["mb.expand.pre"]["scale"] = s
    model = convert.from_ir(ir)
    assert model["nodes"][1]["hswish"]["M"][3] == 0
    assert_same_run(model, images(2))


def test_refuses_what_execute_refuses():
    model = convert.from_ir(tiny_ir())
    with pytest.raises(TypeError, match="uint8"):
        fast.run(model, images(1).astype(np.float32))
    with pytest.raises(ValueError, match="16x16"):
        fast.run(model, images(1, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        fast.run(model, images(1)[:, :2])


# --------------------------------------------------------------------------- output stages vs golden/ops.py
def test_requant_matches_ops_including_shift_0_and_63():
    C = 64
    acc = np.concatenate([RNG.integers(-2 ** 31, 2 ** 31, (200, C)), RNG.integers(-1000, 1000, (200, C))])
    acc[:4] = [[-2 ** 31], [2 ** 31 - 1], [0], [-1]]
    M = RNG.integers(2 ** 30, 2 ** 31, C)
    M[:2] = [0, 2 ** 31 - 1]
    n = RNG.integers(0, 64, C)
    n[:4] = [0, 63, 1, 62]
    M[6:9], n[6:9] = 2 ** 30, [31, 32, 33]           # acc / 2, / 4, / 8: exact halves, both signs
    z = RNG.integers(-300, 600, C)
    want = ops.requantize(acc, M, n, z, 0, 255)
    got = fast.Requant(M, n, z, 0, 255, ndim=2)(torch.as_tensor(acc))
    assert np.array_equal(got.numpy(), want)
    # the folded bias carried in the rounding constant: (acc + b) M
    b = RNG.integers(-2 ** 30, 2 ** 30, C)
    part = np.clip(acc // 2, -2 ** 30, 2 ** 30 - 1)
    got = fast.Requant(M, n, z, -7, 1000, ndim=2, bias=b)(torch.as_tensor(part))
    assert np.array_equal(got.numpy(), ops.requantize(part + b, M, n, z, -7, 1000))


def test_hardswish_table_matches_ops_on_every_code():
    C = 40
    t3 = RNG.integers(1, 600, C)
    t3[:3] = [1, 2 ** 22 - 1, 3_000_000]
    hs = dict(z_p=RNG.integers(0, 256, C), t3=t3, M=RNG.integers(2 ** 30, 2 ** 31, C), n=RNG.integers(30, 48, C),
              z_out=RNG.integers(0, 400, C), lo=0, hi=255)
    hs["M"][5] = 0
    p = np.tile(np.arange(256), (C, 1)).T                   # (codes, C): every code of every channel
    want = ops.hardswish(p, hs["z_p"], hs["t3"], hs["M"], hs["n"], hs["z_out"], 0, 255)
    got = fast.Hswish(hs, 0, 255, C)(torch.as_tensor(p))
    assert np.array_equal(got.numpy(), want)


def test_round_log2_matches_ops_at_every_threshold():
    p = np.arange(31)
    thr = np.floor(np.sqrt(2) * 2.0 ** p).astype(np.int64)
    x = np.concatenate([2 ** p, 2 ** p + 1, 2 ** p - 1, thr - 1, thr, thr + 1, [2 ** 31 - 1],
                        RNG.integers(1, 2 ** 31, 1000)])
    x = x[(x >= 1) & (x < 2 ** 31)]
    assert np.array_equal(fast.round_log2(torch.as_tensor(x)).numpy(), ops.round_log2(x))
    from arch.formats import log2_thresholds           # and the divisor's mantissa bit's thresholds
    t = np.array(log2_thresholds(1)).reshape(-1)
    xm = np.concatenate([x, t - 1, t, t + 1])
    xm = xm[(xm >= 1) & (xm < 2 ** 31)]
    assert np.array_equal(fast.round_log2(torch.as_tensor(xm), 1).numpy(), ops.round_log2(xm, 1))


# --------------------------------------------------------------------------- golden eval and the real proxy
def test_evaluate_fast_and_reference_ops_agree(tmp_path, synthetic_folder):
    """`python -m golden eval` reports the same figures with either executor (only the seconds differ)."""
    from golden.evaluate import evaluate
    path = tmp_path / "tiny.pt"
    torch.save(tiny_ir(), path)
    a = evaluate(path, synthetic_folder, progress=False, batch_size=6)
    b = evaluate(path, synthetic_folder, progress=False, batch_size=6, reference_ops=True)
    assert a["num_images"] == 16
    assert (a.pop("integer_executor"), b.pop("integer_executor")) == ("golden.fast", "golden.execute (golden/ops.py)")
    a.pop("seconds"), b.pop("seconds")
    assert a == b


@pytest.mark.assets
def test_fast_matches_execute_on_real_proxy():
    """The real proxy quantized without reconstruction: 8 val images across the classes, every tensor."""
    from golden.images import pixel_folder
    from quant.config import QuantConfig
    from quant.data import calibration_subset, image_folder
    from quant.engine import quantize
    from quant.export import to_ir
    from quant.models import build_model, get_spec
    from tests.assets import IMAGENETTE, PROXY_MODEL, assets_dir
    assets = assets_dir()
    spec = get_spec("b0-r224")
    model = build_model("b0-r224", str(assets / PROXY_MODEL))
    ds = calibration_subset(image_folder(assets / IMAGENETTE, "train", spec.input_size, spec.crop_ratio), 16, 0)
    calib = torch.stack([ds[i][0] for i in range(len(ds))])
    qm, _ = quantize(model, [calib], QuantConfig(iters_w=0, iters_a=0, batch_size=16), progress=False)
    int_model = convert.from_ir(to_ir(qm, "b0-r224", with_state=False))
    val = pixel_folder(assets / IMAGENETTE, "val", spec.input_size, spec.crop_ratio)
    idx = np.linspace(0, len(val) - 1, 8).astype(int)
    x = np.stack([np.asarray(val[i][0]) for i in idx]).astype(np.uint8)
    logits = assert_same_run(int_model, x)
    assert logits.shape == (8, 10)
