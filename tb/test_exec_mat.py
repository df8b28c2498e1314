"""The MAT.CONV / MAT.LINEAR executor (rtl/exec_mat.py) replayed bit-exact against golden/
(tb/test_executors.py ``replay_failures``: the stem 3x3 stride 2 with hardswish, pointwise convs with
requant and hardswish, the grouped 1x1 ``mla.agg_pw``, both linears, requant and logits), and its
BAD_GEOMETRY check: the Python mirror on the test network and on malformed geometries, and the core
itself (Amaranth simulator) refusing a record whose groups do not divide its channels."""
from __future__ import annotations

import pytest

from arch import encoding
from arch.config import PRESETS
from arch.regmap import ErrorCode
from tb.test_executors import replay_failures

CFG = PRESETS["tiny"]


@pytest.mark.sim
@pytest.mark.slow        # each on a build of its own; tb/test_executors.py replays them together in CI
def test_mat_executor_is_bit_exact():
    from rtl.exec_mat import mat_executor
    failures = replay_failures({"MAT.CONV": mat_executor, "MAT.LINEAR": mat_executor}, "exec_mat")
    assert not failures, "\n".join(failures)


# A 32-bit bus (4-byte scratch rows) under 8 multipliers per lane and a 4 KiB scratch: a lane's weight
# taps span two or three rows, an input beat is two rows, and the stem and head.in_conv find no room to
# stage their input beats (each tile gathers its own); the R-MAC core's runs cross several rows.
NARROW = CFG.replace(name="tiny_narrow", act_buffer_kib=4, axi_data_bits=32, mat_mults=8)


@pytest.mark.sim
def test_mat_and_rmac_cores_on_narrow_rows_and_a_scratch_too_small_to_stage():
    from rtl.exec_mat import mat_executor, stages_inputs
    from rtl.exec_rmac import rmac_executor
    from tb import replay
    from tests.test_golden_model import tiny_ir
    prog, _, _ = replay.dram_program(tiny_ir(), NARROW)
    staged = {stages_inputs(NARROW, prog, op) for op in prog.ops if op.opcode in ("MAT.CONV", "MAT.LINEAR")}
    assert staged == {True, False}, "the case must run both the staged and the per-tile input path"
    failures = replay_failures({"MAT.CONV": mat_executor, "MAT.LINEAR": mat_executor, "RMAC.DW": rmac_executor,
                                "RMAC.PW": rmac_executor}, "exec_narrow", cfg=NARROW)
    assert not failures, "\n".join(failures)


def _network_ops():
    from tb import replay
    from tests.test_golden_model import tiny_ir
    prog, _, _ = replay.dram_program(tiny_ir(), CFG)
    return prog, [op for op in prog.ops if op.opcode in ("MAT.CONV", "MAT.LINEAR")]


def _ok(op, prog, **geom):
    from rtl.exec_mat import geometry_ok
    t_in, t_out = prog.tensors[op.inputs[0]], prog.tensors[op.output]
    return geometry_ok(CFG, op.opcode, op.epilogue, dict(op.geom, **geom), op.oc0, op.oc1, t_in.bits, t_out.bits)


def test_geometry_check_accepts_the_network_and_refuses_what_the_core_cannot_run():
    prog, ops = _network_ops()
    assert {op.index for op in ops} == {0, 1, 3, 5, 8, 13, 16, 19, 21}
    assert all(_ok(op, prog) for op in ops)
    conv = next(op for op in ops if op.node == "mla.agg_pw")             # cin = cout = 12, groups = 3
    assert not _ok(conv, prog, groups=5)                                   # groups must divide cin and cout
    assert not _ok(conv, prog, k=0)
    taps = CFG.mat_mults * CFG.mat_wbuf_words                              # a filter longer than the buffer
    assert _ok(conv, prog, cin=taps, groups=1) and not _ok(conv, prog, cin=taps + 1, groups=1)


def test_core_refuses_groups_that_do_not_divide_the_channels():
    """The record of ``mla.agg_pw`` with groups = 5: BAD_GEOMETRY before any byte is computed."""
    from amaranth.sim import Simulator
    from rtl import record as R
    from rtl.exec_mat import MatCore
    prog, ops = _network_ops()
    op = next(op for op in ops if op.node == "mla.agg_pw")
    rec = int.from_bytes(encoding.encode_op(op, prog), "little")
    wi, lsb, bits, _ = R.GEOM["groups"]
    pos = 32 * wi + lsb
    rec = rec & ~(((1 << bits) - 1) << pos) | 5 << pos
    core = MatCore(CFG)
    sim = Simulator(core)
    sim.add_clock(1e-8)
    seen = {}

    async def bench(ctx):
        ctx.set(core.record, rec)
        ctx.set(core.go, 1)
        await ctx.tick()
        ctx.set(core.go, 0)
        for _ in range(100):
            if ctx.get(core.error) or ctx.get(core.done) or ctx.get(core.wen):
                seen.update(error=ctx.get(core.error), code=ctx.get(core.error_code), wen=ctx.get(core.wen))
                return
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    assert seen == {"error": 1, "code": ErrorCode.BAD_GEOMETRY, "wen": 0}
