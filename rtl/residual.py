"""Residual add with rescale (golden/SPEC.md section 4).

    out[c] = clamp(z_out[c] + rshift_round(Ma[c] * (a - z_a[c]) + Mb[c] * (b - z_b[c]), n[c]), lo, hi)

One shared shift, one rounding. ``Ma``, ``Mb`` are unsigned ``mult_bits``-bit
multipliers, ``n`` a ``shift_bits``-bit shift, ``z_a``, ``z_b`` ``act_bits``
codes and ``z_out`` a signed ``zero_point_bits`` zero point, all per channel
(a parameter table of ``table_depth`` rows, one per lane group): an operand
with per-channel scales (the stem's output) makes the multiplier pair per
channel. A per-tensor add writes the same values into every row. The
saturation bounds ``lo``, ``hi`` are configuration ports.

Streams: ``a`` (the block input, the shortcut) and ``b`` (the block output)
each carry ``lanes`` codes ``x`` of channels ``group * lanes + lane`` and the
``group``; a beat is consumed from both at once (a join: neither is accepted
without the other). The producers deliver both tensors in the same order, so
the parameters are read with ``a``'s group; ``b``'s is not looked at (nor
checked). ``o`` carries ``q``. ``prm`` writes one group's row (``za``, ``zb``,
``ma``, ``mb``, ``n``, ``z`` of its ``lanes`` channels); always ready, to be
written while no tensor streams.

Timing: stall pipeline of ``LATENCY`` = 9 stages (arch/timing.py: table read;
the row registered; zero points off; partial products of both products and
their sum in two adder levels; variable shift; rounding constant + zero point;
saturation, with rtl/requant.py's helpers); one beat (``lanes`` elements) per
cycle, holds while ``o`` is back-pressured.
"""
from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from arch import timing
from arch.config import AccelConfig
from rtl.requant import StallPipe, group_bits, param_layout, product_terms, round_clamp, sum_terms, table_depth


class ResidualAdd(wiring.Component):
    LATENCY = timing.RESIDUAL_LATENCY

    def __init__(self, config: AccelConfig, *, lanes: int | None = None):
        self.config = config
        self.lanes = lanes or config.mat_lanes
        L = self.lanes
        a = unsigned(config.act_bits)
        self.depth = table_depth(config, L)
        self.group_bits = group_bits(self.depth)
        self.in_layout = data.StructLayout({"x": data.ArrayLayout(a, L), "group": unsigned(self.group_bits)})
        self.out_layout = data.StructLayout({"q": data.ArrayLayout(a, L)})
        rq = param_layout(config, L, a)  # the requantizer's M, n, z widths
        self.row_layout = data.StructLayout({
            "za": data.ArrayLayout(a, L), "zb": data.ArrayLayout(a, L),
            "ma": rq["m"].shape, "mb": rq["m"].shape, "n": rq["n"].shape, "z": rq["z"].shape,
        })
        self.prm_layout = data.StructLayout({"group": unsigned(self.group_bits), "row": self.row_layout})
        super().__init__({
            "a": In(stream.Signature(self.in_layout)),
            "b": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "prm": In(stream.Signature(self.prm_layout)),
            "lo": In(a), "hi": In(a),
        })

    def elaborate(self, platform):
        m = Module()
        L, ab = self.lanes, self.config.act_bits
        adv = Signal()
        v = Signal(self.LATENCY)
        both = self.a.valid & self.b.valid
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.o.valid.eq(v[-1]),
                     self.a.ready.eq(adv & self.b.valid), self.b.ready.eq(adv & self.a.valid)]
        with m.If(adv):
            m.d.sync += v.eq(v << 1 | both)

        m.submodules.table = table = memory.Memory(shape=self.row_layout, depth=self.depth, init=[])
        wp, rp = table.write_port(), table.read_port()
        m.d.comb += [self.prm.ready.eq(1), wp.en.eq(self.prm.valid), wp.addr.eq(self.prm.payload.group),
                     wp.data.eq(self.prm.payload.row),
                     rp.addr.eq(self.a.payload.group), rp.en.eq(adv)]
        pipe = StallPipe(m, adv)
        # Stage 1: both operands wait beside the row read; stage 2: the row registered.
        xa1, xb1 = pipe.reg(self.a.payload.x, "xa1"), pipe.reg(self.b.payload.x, "xb1")
        row2 = pipe.reg(rp.data, "row2", shape=self.row_layout)
        xa2, xb2 = pipe.reg(xa1, "xa2"), pipe.reg(xb1, "xb2")
        row3 = pipe.reg(row2, "row3", shape=self.row_layout)
        for k in range(L):
            # Stage 3: zero points off; stages 4..6: Ma (a - z_a) + Mb (b - z_b), one adder tree
            # over the partial products of both; stages 7..9: rounding shift, zero point, saturation.
            da = pipe.reg(xa2[k] - row2.za[k], f"da_{k}", shape=signed(ab + 1))
            db = pipe.reg(xb2[k] - row2.zb[k], f"db_{k}", shape=signed(ab + 1))
            terms = product_terms(pipe, da, row3.ma[k], f"pa_{k}") + product_terms(pipe, db, row3.mb[k], f"pb_{k}")
            s = sum_terms(pipe, terms, timing.PRODUCT_STAGES - 1, f"s_{k}")
            n, z = (pipe.delay(row3[f][k], timing.PRODUCT_STAGES, f"{f}_{k}") for f in ("n", "z"))
            q = round_clamp(pipe, s, n, z, self.lo, self.hi, unsigned(ab), f"rq_{k}")
            m.d.comb += self.o.payload.q[k].eq(q)
        return m
