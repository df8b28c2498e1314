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

Timing: stall pipeline of ``LATENCY`` = 5 stages (table read; zero-point
removal and products; sum; rounding shift; zero point + clamp); one beat
(``lanes`` elements) per cycle, holds while ``o`` is back-pressured.
"""
from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from arch import timing
from arch.config import AccelConfig
from rtl.requant import clamp, group_bits, param_layout, rshift_round, table_depth


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
        cfg, L, ab = self.config, self.lanes, self.config.act_bits
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
        row = rp.data

        pw = ab + 1 + cfg.mult_bits + 1       # one product, signed
        sw = pw + 1                           # their sum
        # Stage 1: latch both operands while the row is read.
        xa1, xb1 = Signal.like(self.a.payload.x), Signal.like(self.b.payload.x)
        q5 = Signal(self.out_layout)
        with m.If(adv):
            m.d.sync += [xa1.eq(self.a.payload.x), xb1.eq(self.b.payload.x)]
            for k in range(L):
                # Stage 2: zero points off, products (the DSP's pre-adder form (x - z) * M), so the
                # table read costs no extra stage; n and z_out ride along to where they are used.
                da = Signal(signed(ab + 1), name=f"da_{k}")
                db = Signal(signed(ab + 1), name=f"db_{k}")
                pa = Signal(signed(pw), name=f"pa_{k}")
                pb = Signal(signed(pw), name=f"pb_{k}")
                n2, n3 = (Signal(unsigned(cfg.shift_bits), name=f"n{s}_{k}") for s in (2, 3))
                z2, z3, z4 = (Signal(signed(cfg.zero_point_bits), name=f"z{s}_{k}") for s in (2, 3, 4))
                s3 = Signal(signed(sw), name=f"s3_{k}")
                r4 = Signal(signed(sw), name=f"r4_{k}")
                z = Signal(signed(max(sw, cfg.zero_point_bits) + 1), name=f"zsum_{k}")
                m.d.comb += [da.eq(xa1[k] - row.za[k]), db.eq(xb1[k] - row.zb[k]), z.eq(r4 + z4)]
                m.d.sync += [
                    pa.eq(da * row.ma[k]), pb.eq(db * row.mb[k]), n2.eq(row.n[k]), z2.eq(row.z[k]),
                    s3.eq(pa + pb), n3.eq(n2), z3.eq(z2),                             # stage 3
                    r4.eq(rshift_round(s3, n3, cfg.shift_bits)), z4.eq(z3),            # stage 4
                    q5.q[k].eq(clamp(z, self.lo, self.hi)),                            # stage 5
                ]
        m.d.comb += self.o.payload.eq(q5)
        return m
