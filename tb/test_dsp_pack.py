"""rtl/dsp_pack.py: two products per multiplier, checked on the RTL under Verilator.

The DUT is ``2^a_bits`` packed multipliers side by side, lane ``i`` fed
``x_lo = i``; each cycle drives one ``(x_hi, w)`` pair to every lane, so one
cycle checks every ``x_lo`` for that pair (tb/dsp_pack_cocotb.py compares
every lane's ``lo`` and ``hi`` with Python's ``x_lo * w``, ``x_hi * w``).

* ``test_pack_exhaustive``: every ``x_hi`` x every ``w`` of the signed
  range each engine multiplies by, on an instance of that width: the MAT
  engine's 10-bit ``w - w_zero`` ([-512, 511], 256 x 256 x 1024 operand
  triples, 262,144 cycles, about 20 s of simulation on a 2-core machine) and
  the R-MAC engine's int8 weights (8-bit instance, 65,536 cycles). Fast
  enough for the default set, so there is no sampled variant.
* ``test_pack_check_catches_a_dropped_borrow``: the same check on a DUT that
  omits the borrow correction must fail (the check is real).
* ``test_engines_multiplier_count_is_config_dsps``: the engines' generated
  Verilog holds ``AccelConfig.dsps`` multiplications.
"""
import re

import numpy as np
import pytest
from amaranth import Module, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from arch.config import PRESETS
from rtl.dsp_pack import PACK_SHIFT, PackedMul, packable
from tb.harness import run_cocotb

A_BITS = 8
MAT_W_BITS = max(A_BITS, 8) + 2      # rtl/mat_engine.py: wint_bits (w - w_zero), [-512, 511]
RMAC_W_BITS = 8                      # rtl/rmac_engine.py: int8 weights
ODD = PRESETS["tiny"].replace(name="tiny_odd", replicas=3, rmac_rows=3)   # L = S = 3: a pair and a plain one


class PackedMulArray(wiring.Component):
    """``2^a_bits`` :class:`PackedMul` lanes sharing ``x_hi`` and ``w``; ``P`` registered as in the
    engines, ``lo`` / ``hi`` read from the register. ``bug="no_borrow"`` drops the correction."""

    def __init__(self, a_bits: int, w_bits: int, bug: str | None = None):
        self.a_bits, self.w_bits, self.bug = a_bits, w_bits, bug
        self.lanes = 1 << a_bits
        super().__init__({
            "x_lo": In(data.ArrayLayout(unsigned(a_bits), self.lanes)),
            "x_hi": In(unsigned(a_bits)),
            "w": In(signed(w_bits)),
            "lo": Out(data.ArrayLayout(signed(PACK_SHIFT), self.lanes)),
            "hi": Out(data.ArrayLayout(signed(a_bits + w_bits + 1), self.lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        for i in range(self.lanes):
            pk = PackedMul(self.a_bits, self.w_bits, name=f"pk{i}")
            m.d.sync += pk.p.eq(pk.product(self.x_lo[i], self.x_hi, self.w))
            hi = pk.hi_raw if self.bug == "no_borrow" else pk.hi
            m.d.comb += [self.lo[i].eq(pk.lo), self.hi[i].eq(hi)]
        return m


def _run(case, w_bits, x_hi, w, bug=None):
    x_hi, w = np.asarray(x_hi, dtype=np.int32), np.asarray(w, dtype=np.int32)
    return run_cocotb(unit="dsp_pack", make=lambda: PackedMulArray(A_BITS, w_bits, bug), config=None,
                      module="tb.dsp_pack_cocotb", case=case, gen={"w_bits": w_bits, "bug": bug},
                      params={"a_bits": A_BITS, "w_bits": w_bits, "lo_width": PACK_SHIFT,
                              "hi_width": A_BITS + w_bits + 1},
                      arrays={"x_hi": x_hi, "w": w})


def _sweep(weights):
    """Every x_hi for each weight (weight-major)."""
    weights = np.asarray(weights)
    xh = np.arange(1 << A_BITS)
    return np.tile(xh, len(weights)), np.repeat(weights, len(xh))


def test_packable_widths():
    assert packable(8, 10) and packable(8, 8) and packable(2, 2)
    assert not packable(8, 11) and not packable(9, 8)      # low product or packed operand too wide
    with pytest.raises(ValueError):
        PackedMul(9, 11)


@pytest.mark.sim
def test_pack_check_catches_a_dropped_borrow():
    """Without the borrow, hi is x_hi * w - 1 whenever x_lo * w < 0: the same check must fail."""
    x_hi, w = _sweep([-1, 1])
    with pytest.raises(AssertionError, match="MISMATCH"):
        _run("no_borrow", MAT_W_BITS, x_hi, w, bug="no_borrow")


@pytest.mark.sim
@pytest.mark.parametrize("w_bits", [MAT_W_BITS, RMAC_W_BITS])
def test_pack_exhaustive(w_bits):
    """Every (x_lo, x_hi, w) in [0, 255]^2 x [-2^(w_bits-1), 2^(w_bits-1) - 1]: the MAT instance
    (10-bit w - w_zero) 2^26 operand triples in 262,144 cycles (about 20 s of simulation), the R-MAC
    instance (int8 weights) 65,536 cycles."""
    lo, hi = -(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1
    x_hi, w = _sweep(np.arange(lo, hi + 1))
    res = _run(f"exhaustive_w{w_bits}", w_bits, x_hi, w)
    assert res["cycles"] == 256 << w_bits and res["products"] == 2 * 256 * (256 << w_bits)


def _count_multiplications(unit, cfg, tmp_path):
    from rtl.build import _sources_digest, generate
    v, _ = generate(unit, cfg, tmp_path / cfg.name, _sources_digest())
    return len(re.findall(r"^\s*assign .* \* ", v.read_text(), re.M))


@pytest.mark.parametrize("cfg", [
    PRESETS["tiny"], PRESETS["small"],
    ODD,                                                       # one pair + one plain replica / pixel
    PRESETS["tiny"].replace(name="wide", act_bits=9),          # no packing: one multiplier per product
], ids=lambda c: c.name)
def test_engines_multiplier_count_is_config_dsps(cfg, tmp_path):
    """One ``*`` is one DSP48E2 (rtl/synth_baseline.json): the engines' Verilog holds cfg.dsps of them."""
    n = _count_multiplications("mat_engine", cfg, tmp_path) + _count_multiplications("rmac_engine", cfg, tmp_path)
    assert n == cfg.dsps, (cfg.name, n, cfg.dsps)


@pytest.mark.sim
@pytest.mark.parametrize("unit,cfg", [
    ("mat_engine", ODD),                                                   # replicas (0, 1) packed, 2 plain
    ("mat_engine", ODD.replace(name="tiny_odd_comb", tree_pipeline=False)),  # borrows through a combinational tree
    ("rmac_engine", ODD),                                                  # pixels (0, 1) packed, 2 plain
], ids=["mat", "mat_comb_tree", "rmac"])
def test_engines_bit_exact_with_unpaired_multipliers(unit, cfg):
    """The presets pair every replica / pixel (tiny's single MAT replica pairs none): an odd L and S
    mix packed and plain multipliers, and an unpipelined tree takes the borrows combinationally.
    The engines' own testbench ops (tb/test_mat_engine.py, tb/test_rmac_engine.py), bit-exact
    against golden/ops.py, cycles equal to the formulas (records not kept: no baseline)."""
    from tb.engines import run_engine
    if unit == "mat_engine":
        from rtl.mat_engine import MatEngine
        from tb.test_mat_engine import build_ops
        cycles = lambda op: MatEngine.op_cycles(cfg, op["tiles"])  # noqa: E731
    else:
        from rtl.rmac_engine import RmacEngine
        from tb.test_rmac_engine import build_ops
        cycles = lambda op: RmacEngine.op_cycles(op["geometry"])  # noqa: E731
    ops_list, arrays = build_ops(cfg, seed=5, full=False)
    for op in ops_list:
        op["record"] = None
    res, _ = run_engine(unit, cfg, ops_list, arrays, f"{cfg.name}_pack", seed=5)
    for op in ops_list:
        assert res["cycles"][op["name"]] == cycles(op), op["name"]


@pytest.mark.sim
@pytest.mark.slow
def test_rmac_engine_paper_packed():
    """The paper preset's R-MAC engine ((8 x 8) x 16 PEs on 512 packed multipliers; the MAT side has
    tb/test_mat_engine.py::test_mat_engine_paper_pointwise): depthwise layers bit-exact against
    golden/ops.py, one with every low product negative (every borrow set), cycles equal to the formula."""
    from rtl.rmac_engine import RmacEngine
    from tb.engines import run_engine
    from tb.test_rmac_engine import depthwise
    cfg = PRESETS["paper"]
    rng = np.random.default_rng(3)
    ops_list, arrays = [], {}
    depthwise(ops_list, arrays, cfg, rng, 16, 20, 19, 3, 1)
    depthwise(ops_list, arrays, cfg, rng, 8, 17, 18, 5, 2, extreme="min")
    for op in ops_list:
        op["record"] = None
    res, _ = run_engine("rmac_engine", cfg, ops_list, arrays, "paper_packed", gap=0.2, backpressure=0.2, seed=3)
    for op in ops_list:
        g = op["geometry"]
        assert res["cycles"][op["name"]] == RmacEngine.op_cycles(g), op["name"]
