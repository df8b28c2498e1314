"""Attention divisor: log2 code of the denominator and the shift-based division
(golden/SPEC.md section 5, steps 4 and 5).

    e[n]      = clamp(round_log2(den[n]), e_lo, e_lo + 2^code_bits - 1)     (round_log2(0) = e_lo)
    code[n]   = e[n] - e_lo                                                   (the 4-bit code)
    out[n, j] = clamp(z_out + rshift_round(num[n, j] * M_o[j], n_o[j] + e[n]), lo, hi)

``round_log2(x) = p + (x*x >= 2^(2p+1))`` with ``p = floor(log2 x)``: the
hardware finds ``p`` with a priority encoder and replaces the square by a
comparison of ``x`` with the constant ``T_p = ceil(2^(p + 1/2))`` (the least
integer whose square reaches ``2^(2p+1)``), which is exact for every ``x``.
A negative ``den`` (impossible: ``qr``, ``ks`` >= 0) is treated as 0, and a
negative total shift ``n_o + e`` as 0.

Streams: ``i`` beats carry ``lanes`` numerators ``num`` of columns
``group * lanes + lane`` of one token and that token's ``den``; ``o`` beats
carry ``q`` and ``tag`` = the token's code. ``prm`` writes ``M_o``, ``n_o``,
``z_out`` per column (see :class:`rtl.requant.Requant`). ``e_lo`` is signed
(``shift_bits`` bits).

Timing: 3 front stages (priority encoder; threshold compare; clamp) then
the requantizer's 8: ``LATENCY`` = 11, one beat (``lanes`` columns) per cycle.
"""
from __future__ import annotations

import math

from amaranth import Module, Signal, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from arch import timing
from arch.config import AccelConfig
from rtl.requant import Requant


def sqrt2_thresholds(bits: int) -> list[int]:
    """T_p = least integer x with x*x >= 2^(2p+1), for p = 0 .. bits-1."""
    return [math.isqrt((1 << (2 * p + 1)) - 1) + 1 for p in range(bits)]


class Log2Divider(wiring.Component):
    FRONT = timing.DIVIDER_FRONT
    LATENCY = timing.DIVIDER_LATENCY

    def __init__(self, config: AccelConfig, *, lanes: int | None = None):
        self.config = config
        self.lanes = lanes or config.mat_lanes
        self.code_bits = config.log2_code_bits
        self.rq = Requant(config, lanes=self.lanes, out_shape=unsigned(config.act_bits), extra_shift=True,
                          tag_shape=unsigned(self.code_bits))
        self.in_layout = data.StructLayout({
            "num": data.ArrayLayout(signed(config.acc_bits), self.lanes),
            "den": signed(config.acc_bits),
            "group": unsigned(self.rq.group_bits),
        })
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.rq.out_layout)),
            "prm": In(stream.Signature(self.rq.prm_layout)),
            "e_lo": In(signed(config.shift_bits)),
            "lo": In(self.rq.out_shape),
            "hi": In(self.rq.out_shape),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        db = cfg.acc_bits - 1  # magnitude bits of a non-negative den
        m.submodules.rq = rq = self.rq
        connect(m, flipped(self.prm), rq.prm)
        connect(m, rq.o, flipped(self.o))
        m.d.comb += [rq.lo.eq(self.lo), rq.hi.eq(self.hi)]

        adv = Signal()
        v = Signal(self.FRONT)
        m.d.comb += [adv.eq(~rq.i.valid | rq.i.ready), self.i.ready.eq(adv), rq.i.valid.eq(v[-1])]
        with m.If(adv):
            m.d.sync += v.eq(v << 1 | self.i.valid)

        # Stage 1: floor(log2 den) by priority encoder; zero (or negative) flagged.
        den = self.i.payload.den
        mag = Signal(db)
        m.d.comb += mag.eq(Mux(den < 0, 0, den[:db]))
        p = Signal(range(db))
        for b in range(db):              # last assignment wins: highest set bit
            with m.If(mag[b]):
                m.d.comb += p.eq(b)
        mag1, p1, zero1 = Signal(db), Signal(range(db)), Signal()
        num1 = Signal.like(self.i.payload.num)
        g1 = Signal.like(self.i.payload.group)
        with m.If(adv):
            m.d.sync += [mag1.eq(mag), p1.eq(p), zero1.eq(mag == 0),
                         num1.eq(self.i.payload.num), g1.eq(self.i.payload.group)]

        # Stage 2: round to nearest exponent with the sqrt(2) thresholds (a compare, then the mux by p).
        up = Signal()
        with m.Switch(p1):
            for b, t in enumerate(sqrt2_thresholds(db)):
                with m.Case(b):
                    m.d.comb += up.eq(mag1 >= t)
        up2, p2, zero2 = Signal(), Signal.like(p1), Signal()
        num2, g2 = Signal.like(num1), Signal.like(g1)
        with m.If(adv):
            m.d.sync += [up2.eq(up), p2.eq(p1), zero2.eq(zero1), num2.eq(num1), g2.eq(g1)]

        # Stage 3: clamp to the code range (its own stage: adds and compares behind the mux above
        # held the divider to 61 MHz on the ECP5).
        e_raw = Signal(signed(7))
        e_hi = Signal(signed(cfg.shift_bits + 1))
        e = Signal(signed(cfg.shift_bits + 2))
        m.d.comb += [e_raw.eq(p2 + up2), e_hi.eq(self.e_lo + (2 ** self.code_bits - 1)),
                     e.eq(Mux(zero2 | (e_raw < self.e_lo), self.e_lo, Mux(e_raw > e_hi, e_hi, e_raw)))]
        with m.If(adv):
            m.d.sync += [rq.i.payload.acc.eq(num2), rq.i.payload.group.eq(g2),
                         rq.i.payload.shift.eq(e), rq.i.payload.tag.eq((e - self.e_lo)[:self.code_bits])]
        return m
