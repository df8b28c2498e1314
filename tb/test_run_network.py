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


def test_profile_spreads_each_interval_over_the_operations_that_ended_in_it():
    """tb/run_network.py's ``op_profile``: samples ``[CYCLES, OPS_DONE]`` every N cycles become per-operation
    cycles that add up to the run's total, with pysim's price of each operation beside them."""
    from arch.config import PRESETS
    from tb import replay
    from tb.run_network import op_profile, profile_table
    from tests.test_golden_model import tiny_ir
    prog, _, _ = replay.dram_program(tiny_ir(), PRESETS["tiny"])
    n = len(prog.ops)
    # op 0 ends in the first interval, ops 1..3 in the second, the rest after the last sample
    samples = [[100, 1], [200, 4], [300, 4]]
    p = op_profile(prog, samples, 1000, 100)
    cyc = [o["cycles"] for o in p["ops"]]
    assert len(cyc) == n and sum(cyc) == 1000
    assert cyc[0] == 100 and cyc[1:4] == [33, 34, 33]
    assert cyc[4:] and sum(cyc[4:]) == 800
    assert all(o["pysim"] > 0 for o in p["ops"] if o["opcode"] != "UNIT.POOL") and p["every"] == 100
    by = p["by_opcode"]
    assert sum(b["ops"] for b in by.values()) == n and sum(b["cycles"] for b in by.values()) == 1000
    table = profile_table(p)
    assert table.splitlines()[0].split()[:2] == ["opcode", "ops"] and "within 100 cycles" in table
