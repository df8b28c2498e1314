"""Cocotb side of tb/test_harness.py."""
import cocotb
from amaranth import signed

from tb.cocotb_kit import TB, assert_equal, load_case, write_result


@cocotb.test()
async def affine_stream(dut):
    p, a = load_case()
    tb = TB(dut, seed=p["seed"])
    await tb.reset()
    src = tb.source("i", signed(8), gap=p["gap"])
    snk = tb.sink("o", signed(12), backpressure=p["backpressure"])
    for v in a["x"]:
        src.send(int(v))
    await snk.wait_beats(len(a["x"]))
    assert_equal(snk.beats, a["expected"], f"{p['case']} affine")
    write_result({"beats": len(snk.beats), "cycles": snk.fire_cycles[-1] - src.fire_cycles[0] + 1})
