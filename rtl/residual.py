"""Residual add with rescale (golden/SPEC.md section 4).

    out = clamp(z_out + rshift_round(Ma * (a - z_a) + Mb * (b - z_b), n), lo, hi)

One shared shift, one rounding. ``Ma``, ``Mb`` are unsigned ``mult_bits``-bit
multipliers, ``n`` a ``shift_bits``-bit shift, all per tensor (configuration
ports), as are the zero points and the saturation bounds.

Streams: ``a`` (the block input, the shortcut) and ``b`` (the block output)
each carry ``lanes`` codes per beat; a beat is consumed from both at once (a
join: neither is accepted without the other). ``o`` carries ``q``.

Timing: stall pipeline of ``LATENCY`` = 5 stages (zero-point removal,
products, sum, rounding shift, zero point + clamp); one beat (``lanes``
elements) per cycle, holds while ``o`` is back-pressured.
"""
from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl import timing
from rtl.config import AccelConfig
from rtl.requant import rshift_round, clamp


class ResidualAdd(wiring.Component):
    LATENCY = timing.RESIDUAL_LATENCY

    def __init__(self, config: AccelConfig, *, lanes: int | None = None):
        self.config = config
        self.lanes = lanes or config.mat_lanes
        a = unsigned(config.act_bits)
        self.in_layout = data.StructLayout({"x": data.ArrayLayout(a, self.lanes)})
        self.out_layout = data.StructLayout({"q": data.ArrayLayout(a, self.lanes)})
        super().__init__({
            "a": In(stream.Signature(self.in_layout)),
            "b": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "z_a": In(a), "z_b": In(a), "lo": In(a), "hi": In(a),
            "z_out": In(signed(config.zero_point_bits)),
            "ma": In(unsigned(config.mult_bits)), "mb": In(unsigned(config.mult_bits)),
            "n": In(unsigned(config.shift_bits)),
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

        pw = ab + 1 + cfg.mult_bits + 1       # one product, signed
        sw = pw + 1                           # their sum
        q5 = Signal(self.out_layout)
        with m.If(adv):
            for k in range(L):
                da = Signal(signed(ab + 1), name=f"da_{k}")
                db = Signal(signed(ab + 1), name=f"db_{k}")
                pa = Signal(signed(pw), name=f"pa_{k}")
                pb = Signal(signed(pw), name=f"pb_{k}")
                s3 = Signal(signed(sw), name=f"s3_{k}")
                r4 = Signal(signed(sw), name=f"r4_{k}")
                z = Signal(signed(sw + 1), name=f"z_{k}")
                m.d.sync += [
                    da.eq(self.a.payload.x[k] - self.z_a),
                    db.eq(self.b.payload.x[k] - self.z_b),
                    pa.eq(da * self.ma),
                    pb.eq(db * self.mb),
                    s3.eq(pa + pb),
                    r4.eq(rshift_round(s3, self.n, cfg.shift_bits)),
                    q5.q[k].eq(clamp(z, self.lo, self.hi)),
                ]
                m.d.comb += z.eq(r4 + self.z_out)
        m.d.comb += self.o.payload.eq(q5)
        return m
