"""The whole-network run on the RTL machine (tb/run_network.py): tests/test_golden_model.py's every-op
16x16 network, the tiny preset, one image, random AXI pauses. Until every opcode has an executor the
run must stop cleanly and say which operation has none; once all do, the logits must be bit-exact
with golden's and every intermediate tensor read back from DRAM must match."""
from __future__ import annotations

import pytest

from arch.config import PRESETS


@pytest.mark.sim
def test_whole_network_on_the_rtl_machine():
    from rtl.executors import EXECUTORS
    from tb.run_network import run_network
    from tests.test_golden_model import images, tiny_ir
    r = run_network(tiny_ir(), images(1)[0], PRESETS["tiny"], case="network-test", pauses=0.2, seed=7)
    missing = [op for op in ("MAT.CONV", "RMAC.DW", "RMAC.PW", "MAT.ATTN_KV", "MAT.ATTN_QKV", "UNIT.ADD",
                             "UNIT.POOL", "MAT.LINEAR", "UNIT.LNORM") if op not in EXECUTORS]
    if missing:
        assert not r["bit_exact"] and "no executor for" in r["first_difference"], r
        assert r["layers"] < r["ops"], r
    else:
        assert r["bit_exact"], r["first_difference"]
        assert r["logits"] == r["golden_logits"] and r["layers"] == r["ops"], r
        assert r["cycles"] > 0 and all(v > 0 for v in r["busy"].values()), r


def test_run_network_refuses_bad_input(tmp_path, capsys):
    from tb.run_network import main
    assert main(["--quantized", str(tmp_path / "nope.pt"), "--image", "x.png"]) == 2
    assert "no such file" in capsys.readouterr().err


# The paper's engine shape (8 x 8 MAT lanes x multipliers, an 8 x 8 R-MAC array) with 2 replicas
# instead of 16: every engine replicated as in `paper`, small enough for Verilator.
PAPER_SHAPE = PRESETS["paper"].replace(name="paper_r2", replicas=2, act_buffer_kib=64)


@pytest.mark.sim
@pytest.mark.slow
def test_whole_network_at_the_papers_engine_shape():
    from tb.run_network import run_network
    from tests.test_golden_model import images, tiny_ir
    r = run_network(tiny_ir(), images(1)[0], PAPER_SHAPE, case="network-paper-r2", pauses=0.2, seed=11)
    assert r["bit_exact"], r["first_difference"]
    assert r["layers"] == r["ops"], r
