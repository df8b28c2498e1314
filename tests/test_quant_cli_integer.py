"""main_imagenet.py reports the integer model's accuracy (what the hardware computes), bit for bit
golden/fast.py on the quantized.pt it writes, beside the float32 fake-quant figures."""
import contextlib
import io
import json

import numpy as np
import pytest
import torch

from golden import convert, fast
from golden.images import pixel_folder
from quant.cli import main
from quant.data import image_folder
from quant.evaluate import _top5, predict_integer, sqnr_db
from quant.models import build_model
from quant.report import format_report
from tests.test_quant_cli import FAST

MAX_VAL = 12          # two evaluation batches of FAST's 8, the second one short
CROP = 0.95           # MIT's B0 crop


def _run(args) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(args)
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def w8a8(synthetic_folder, seeded_b0_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("w8a8") / "out"
    rc, text = _run(FAST + ["--data_path", str(synthetic_folder), "--weight_url", str(seeded_b0_ckpt),
                            "--iters_w", "0", "--iters_a", "0", "--max_val", str(MAX_VAL), "--output", str(out)])
    assert rc == 0
    return out, json.loads((out / "results.json").read_text()), text


def test_w8a8_results_are_the_integer_models_bit_for_bit(w8a8, synthetic_folder, seeded_b0_ckpt):
    out, r, _ = w8a8
    for key in ("quant_top1", "quant_top5", "quant_agreement", "fakequant_top1", "fakequant_top5",
                "fakequant_agreement", "agreement_int_vs_float", "agreement_int_vs_fakequant", "int_logit_sqnr_db",
                "wq_top1", "fp_top1"):
        assert key in r, key
    assert r["integer_model"] is True and r["n_val"] == MAX_VAL and r["timing"]["integer_eval_s"] > 0
    # independently: the quantized.pt on disk, converted and run by golden.fast on the hardware's pixels
    ir = convert.read_ir(out / "quantized.pt")
    int_model = convert.from_ir(ir)
    pix = pixel_folder(synthetic_folder, "val", 224, CROP)
    u8 = np.stack([pix[i][0] for i in range(MAX_VAL)])
    labels = np.array([pix[i][1] for i in range(MAX_VAL)])
    codes = fast.run(int_model, u8)
    top1 = codes.argmax(1)
    assert r["quant_top1"] == 100.0 * float(np.mean(top1 == labels))
    top5 = np.argsort(-codes, axis=1, kind="stable")[:, :5]
    assert r["quant_top5"] == 100.0 * float(np.mean((top5 == labels[:, None]).any(1)))
    # against the float model on the same images (ToTensor + Normalize of the same pixels)
    model = build_model("b0-r224", str(seeded_b0_ckpt)).eval()
    val = image_folder(synthetic_folder, "val", 224, CROP)
    with torch.no_grad():
        f = model(torch.stack([val[i][0] for i in range(MAX_VAL)])).double().numpy()
    agree = 100.0 * float(np.mean(f.argmax(1) == top1))
    assert r["agreement_int_vs_float"] == pytest.approx(agree) and r["quant_agreement"] == r["agreement_int_vs_float"]
    scale = float(np.abs(np.asarray(ir["tensors"][ir["graph_output"]]["scale"], dtype=np.float64)).reshape(-1)[0])
    want = 10 * np.log10((f ** 2).sum() / ((f - codes * scale) ** 2).sum())
    assert r["int_logit_sqnr_db"] == pytest.approx(want, rel=1e-4)


def test_w8a8_figures_are_plausible_and_the_report_leads_with_the_integer_model(w8a8):
    _, r, text = w8a8
    assert 50 <= r["agreement_int_vs_float"] <= 100 and 50 <= r["agreement_int_vs_fakequant"] <= 100
    assert 10 < r["int_logit_sqnr_db"] < 80
    assert abs(r["quant_top1"] - r["fakequant_top1"]) <= 100 * 2 / MAX_VAL
    lines = text.splitlines()
    row = next(i for i, l in enumerate(lines) if l.startswith("quantized W8A8 (integer, the hardware)"))
    assert f"{r['quant_top1']:.2f}" in lines[row]
    assert lines[row + 1].startswith("float32 fake-quant W8A8") and f"{r['fakequant_top1']:.2f}" in lines[row + 1]
    assert any("integer logit SQNR vs float" in l and f"{r['int_logit_sqnr_db']:.2f} dB" in l for l in lines)
    assert "(integer model)" in next(l for l in lines if l.startswith("top-1 drop vs float"))
    assert "accuracies above are float32 fake-quant" not in text
    assert "integer_eval_s" in text


def test_weight_only_run_evaluates_no_integer_model(synthetic_folder, seeded_b0_ckpt, tmp_path):
    out = tmp_path / "wo"
    args = [x for x in FAST if x != "--act_quant"]
    rc, text = _run(args + ["--data_path", str(synthetic_folder), "--weight_url", str(seeded_b0_ckpt),
                            "--iters_w", "0", "--iters_a", "0", "--max_val", "4", "--output", str(out)])
    assert rc == 0
    r = json.loads((out / "results.json").read_text())
    assert r["integer_model"] is False and "--act_quant" in r["integer_model_reason"]
    assert "agreement_int_vs_float" not in r and "integer_eval_s" not in r["timing"]
    assert r["quant_top1"] == r["fakequant_top1"]          # no integer model: quant_* stay the fake-quant's
    assert "quantized W8A32 (float32 fake-quant)" in text and "not evaluated" in text


def test_top5_breaks_ties_like_argmax():
    codes = torch.tensor([[3, 7, 7, 1, 7, 0], [5, 5, 5, 5, 5, 5], [0, 1, 2, 3, 4, 5]])
    t5 = _top5(codes)
    assert t5[:, 0].tolist() == codes.numpy().argmax(1).tolist()
    assert t5.tolist() == [[1, 2, 4, 0, 3], [0, 1, 2, 3, 4], [5, 4, 3, 2, 1]]


def test_predict_integer_gathers_codes_labels_and_top5(monkeypatch):
    """predict_integer over a loader of pixels: the codes of golden.fast.run, in dataset order."""
    int_model = {"marker": 1}
    calls = []

    def fake_run(model, x):
        assert model is int_model and x.dtype == np.uint8
        calls.append(len(x))
        return x.reshape(len(x), -1)[:, :4].astype(np.int64)

    pix = [(np.full((3, 2, 2), i, np.uint8) + np.arange(4, dtype=np.uint8).reshape(1, 2, 2), i % 2)
           for i in range(5)]
    loader = torch.utils.data.DataLoader(pix, batch_size=2)
    monkeypatch.setattr(fast, "run", fake_run)
    threads = torch.get_num_threads()
    p = predict_integer(int_model, loader, progress=False)
    assert torch.get_num_threads() == threads        # one thread while it runs, then torch's setting again
    assert calls == [2, 2, 1] and p["labels"].tolist() == [0, 1, 0, 1, 0]
    assert predict_integer(int_model, torch.utils.data.DataLoader(pix, batch_size=5), progress=False,
                           chunk=2)["logits"].tolist() == p["logits"].tolist() and calls[3:] == [2, 2, 1]
    assert p["logits"].shape == (5, 4) and p["logits"][3].tolist() == [3, 4, 5, 6] and p["top5"][0, 0] == 3


def test_sqnr_db():
    f = np.array([[3.0, 4.0]])
    assert sqnr_db(f, f) == float("inf")
    assert sqnr_db(f, f + np.array([[0.0, 0.5]])) == pytest.approx(10 * np.log10(25 / 0.25))
    with pytest.raises(ValueError):
        sqnr_db(f, f[:, :1])


def test_report_without_integer_model_says_why():
    r = dict(model="b0-r224", n_bits_w=8, n_bits_a=8, act_quant=True, recipe="hardware", techniques=[],
             fp_top1=80.0, fp_top5=95.0, quant_top1=40.0, quant_top5=70.0, quant_agreement=41.0,
             fakequant_top1=40.0, fakequant_top5=70.0, fakequant_agreement=41.0, integer_model=False,
             integer_model_reason="the quantized model has no integer model: x: the divisor is not log2-quantized")
    text = format_report(r)
    assert "hardware-free corrections" not in text   # a results.json from before they were recorded
    assert "hardware-free corrections: bias correction\n" in format_report(dict(r, corrections=["bias correction"]))
    assert "quantized W8A8 (float32 fake-quant)" in text and "integer, the hardware" not in text
    assert "not evaluated: the quantized model has no integer model" in text
    assert "top-1 drop vs float: 40.00 points (float32 fake-quant)" in text
