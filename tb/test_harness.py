"""Self-test of tb/harness.py + tb/cocotb_kit.py on a tiny registered stream unit:
out = 3 * in + 1, with random valid gaps and backpressure, checked bit-exactly."""
import pytest
from amaranth import Module, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from tb.harness import run_cocotb


class AffineStream(wiring.Component):
    """One-deep registered stream stage: ``o = 3 * i + 1`` (signed 8 -> signed 12)."""
    i: In(stream.Signature(signed(8)))
    o: Out(stream.Signature(signed(12)))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload * 3 + 1)]
        return m


@pytest.mark.sim
@pytest.mark.parametrize("gap,bp", [(0.0, 0.0), (0.3, 0.4)])
def test_harness_affine_stream(gap, bp):
    import numpy as np
    rng = np.random.default_rng(5)
    x = np.concatenate([[-128, 127, 0, -1], rng.integers(-128, 128, 300)])
    res = run_cocotb(unit="harness_affine", make=AffineStream, config=None,
                     module="tb.harness_cocotb", case=f"gap{gap}_bp{bp}",
                     params={"gap": gap, "backpressure": bp}, arrays={"x": x, "expected": 3 * x + 1})
    assert res["beats"] == len(x)
    if gap == 0 and bp == 0:
        assert res["cycles"] == len(x) + 1  # one beat per cycle plus the register's latency


@pytest.mark.sim
def test_waves_write_fst_where_lz4_is_installed():
    """WAVES=1: dump.fst (dump.vcd only where the compiler lacks lz4.h, with a warning)."""
    import warnings

    from tb.harness import REPO, fst_supported
    x = [1, -2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_cocotb(unit="harness_affine", make=AffineStream, config=None, module="tb.harness_cocotb",
                   case="waves", params={"gap": 0.0, "backpressure": 0.0},
                   arrays={"x": x, "expected": [3 * v + 1 for v in x]}, waves=True)
    runs = list((REPO / "build" / "sim").glob("harness_affine-*-waves/runs/waves"))
    assert len(runs) == 1, runs
    want = "dump.fst" if fst_supported() else "dump.vcd"
    assert (runs[0] / want).stat().st_size > 0
