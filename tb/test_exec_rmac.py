"""RMAC.DW / RMAC.PW executor (rtl/exec_rmac.py).

* ``sim``: every RMAC operation of the test network (tiny preset: op 2 dw 3x3 + hswish, 6 pw
  channels 8:12 + requant, 7 dw 5x5 pad 2 + requant, 14 pw, 17 pw + hswish) replayed alone on the
  machine under Verilator from golden's DRAM state, the whole DRAM image after it bit-exact
  (tb/test_executors.py ``replay_failures``);
* without Verilator: the core's geometry check under Amaranth's simulator: the network's records
  pass it, patched records the core cannot run (kernel past KMAX, stride 3, a pointwise reduction
  longer than the weight buffer, an epilogue it has no unit for, a grouped conv as RMAC.DW) stop
  it with BAD_GEOMETRY; and the core alone at ``rmac_rows = 3`` (pointwise beats as L runs).
"""
from __future__ import annotations

import dataclasses

import pytest

from arch import encoding
from arch.config import PRESETS
from arch.regmap import ErrorCode

CFG = PRESETS["tiny"]
OPCODES = ("RMAC.DW", "RMAC.PW")


@pytest.mark.sim
@pytest.mark.slow        # each on a build of its own; tb/test_executors.py replays them together in CI
def test_rmac_operations_replay_bit_exact():
    from rtl.exec_rmac import rmac_executor
    from tb.test_executors import replay_failures
    failures = replay_failures({name: rmac_executor for name in OPCODES}, "rmac")
    assert not failures, "\n".join(failures)


def test_core_alone_with_a_row_count_that_is_not_a_power_of_two():
    """rmac_rows = 3: a pointwise row beat is then gathered as L runs of S pixels (the one-run path
    needs a power of two); the core alone (Amaranth simulator, bus-word scratch rows) on every RMAC
    operation of the test network, each output slice bit-exact with golden's."""
    import numpy as np
    from rtl.exec_rmac import RmacCore
    from tb import replay
    from tb.test_exec_attn import run_core
    from tests.test_golden_model import images, tiny_ir
    cfg = CFG.replace(name="tiny_s3", rmac_rows=3)
    prog, _, image = replay.dram_program(tiny_ir(), cfg)
    states = replay.golden_states(prog, image, images(1)[0])
    ops = [op for op in prog.ops if op.opcode in OPCODES]
    assert {op.opcode for op in ops} == set(OPCODES)
    for op in ops:
        err, cycles, slices = run_core(RmacCore, (prog, op, states[op.index], states[op.index + 1]), cfg)
        assert err is None, f"op {op.index} {op.node}: {err} after {cycles} cycles"
        for o, want, got in slices:
            assert np.array_equal(want, got), f"op {op.index} {op.node} output {o} differs"


def _program():
    from tb import replay
    from tests.test_golden_model import tiny_ir
    prog, _, _ = replay.dram_program(tiny_ir(), CFG)
    return prog


def _check_outcome(record: bytes) -> str:
    """Start the core alone on ``record``: "error <code>" or "running" a few cycles later."""
    from amaranth.sim import Simulator
    from rtl.exec_rmac import RmacCore
    core = RmacCore(CFG)
    out = {}

    async def bench(ctx):
        ctx.set(core.record, int.from_bytes(record, "little"))
        ctx.set(core.go, 1)
        await ctx.tick()
        ctx.set(core.go, 0)
        for _ in range(4):
            if ctx.get(core.error):
                out["r"] = f"error {ctx.get(core.error_code)}"
                return
            await ctx.tick()
        out["r"] = "running" if ctx.get(core.busy) else "idle"

    sim = Simulator(core)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out["r"]


def _record(prog, op) -> bytes:
    single = dataclasses.replace(prog, ops=[dataclasses.replace(op, index=0, group=0)],
                                 groups=[dataclasses.replace(prog.groups[op.group], ops=[0])])
    return encoding.encode(single)[encoding.HEADER_BYTES:encoding.HEADER_BYTES + encoding.RECORD_BYTES]


def test_geometry_check():
    prog = _program()
    ops = [op for op in prog.ops if op.opcode in OPCODES]
    assert {op.opcode for op in ops} == set(OPCODES)
    for op in ops:
        assert _check_outcome(_record(prog, op)) == "running", (op.index, op.opcode)
    dw = next(op for op in ops if op.opcode == "RMAC.DW")
    pw = next(op for op in ops if op.opcode == "RMAC.PW")
    bad = {
        "k=7": dataclasses.replace(dw, geom={**dw.geom, "k": 7}),
        "stride=3": dataclasses.replace(dw, geom={**dw.geom, "stride": 3}),
        "grouped": dataclasses.replace(dw, geom={**dw.geom, "groups": dw.geom["cin"] // 2}),
        "cin past the weight buffer": dataclasses.replace(pw, geom={**pw.geom, "cin": 4096}),
        "pw 3x3": dataclasses.replace(pw, geom={**pw.geom, "k": 3}),
        "logits epilogue": dataclasses.replace(pw, epilogue="logits"),
    }
    want = f"error {int(ErrorCode.BAD_GEOMETRY)}"
    for what, op in bad.items():
        assert _check_outcome(_record(prog, op)) == want, what
