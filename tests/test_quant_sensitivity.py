"""quant.sensitivity: one group of quantizers on at a time, the model left as it was."""
import math

import pytest
import torch

from quant.engine import quantize
from quant.export import save_quantized
from quant.qmodel import QLiteMLA
from quant.sensitivity import main, sensitivity
from tests.test_quant_engine import small_case


@pytest.fixture(scope="module")
def quantized_small():
    model, x, cfg = small_case()
    cfg.iters_w = cfg.iters_a = 0
    qm, rep = quantize(model, [x[:8], x[8:]], cfg, progress=False)
    return qm, x, cfg, rep


def test_rows_cover_every_block_and_divisor_and_leave_the_model_as_it_was(quantized_small):
    qm, x, _, _ = quantized_small
    with torch.no_grad():
        before = qm(x[:4])
    rows, whole = sensitivity(qm, [x[:4]], "block", progress=False)
    with torch.no_grad():
        torch.testing.assert_close(qm(x[:4]), before, rtol=0, atol=0)   # every switch restored
    groups = {r["group"] for r in rows}
    mlas = [m.name for m in qm.modules() if isinstance(m, QLiteMLA)]
    assert groups == {"weights", qm.input_q.name} | {b.name for b in qm.blocks} | {f"{n} divisors" for n in mlas}
    assert [r["sqnr_db"] for r in rows] == sorted(r["sqnr_db"] for r in rows)
    assert all(r["sqnr_db"] > 0 for r in rows)
    assert whole < min(r["sqnr_db"] for r in rows)   # everything on is noisier than any one group
    assert math.isclose(sum(r["share"] for r in rows if r["kind"] != "log2 divisors"), 1.0)
    divs = [r for r in rows if r["kind"] == "log2 divisors"]
    assert divs and all(math.isfinite(r["sqnr_db"]) for r in divs)   # the divisors do add noise
    per_q, _ = sensitivity(qm, [x[:4]], "quantizer", progress=False)
    assert len([r for r in per_q if r["kind"] in ("activation", "input pixels")]) == sum(
        q.enabled for q in qm.act_quantizers())


def test_cli_names_a_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--quantized", str(tmp_path / "nope.pt"), "--data_path", str(tmp_path)])
    assert "no such file" in capsys.readouterr().err


def test_cli_rejects_a_bad_count(tmp_path, capsys, quantized_small):
    qm, _, cfg, rep = quantized_small
    path = save_quantized(tmp_path / "quantized.pt", qm, "b0-r224", cfg, rep)
    with pytest.raises(SystemExit):
        main(["--quantized", str(path), "--data_path", str(tmp_path), "--max_val", "0"])
    assert "--max_val and --batch_size must be >= 1" in capsys.readouterr().err
