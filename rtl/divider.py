"""Attention divisor: log2 code of the denominator and the shift-based division
(golden/SPEC.md section 5, steps 4 and 5).

    h[n]      = clamp(round_log2(den[n], b), 2^b e_lo, 2^b e_lo + 2^(code_bits + b) - 1)  (den 0: the low end)
    e[n], f[n] = h[n] >> b, h[n] & (2^b - 1)                                  (b = frac: 0 or 1)
    code[n]   = h[n] - 2^b e_lo                                               (code_bits + b bits)
    out[n, j] = clamp(z_out + rshift_round(num[n, j] * M_f[j], n_f[j] + e[n]), lo, hi)

``round_log2(x, b)`` is the divisor step nearest ``x`` in log2: ``p = floor(log2 x)``
from a priority encoder, then comparisons of ``x`` with the constants of
arch.formats.log2_thresholds for ``p`` (``ceil(sqrt(2) 2^p)`` when ``b = 0``; the
divisor's mantissa bit, ``b = 1``, adds the step (4/3) 2^p and compares with
``ceil(sqrt(4/3) 2^p)`` and ``ceil(sqrt(8/3) 2^p)``), exact for every ``x``.
``f = 1`` reads the parameter row ``group + f_rows`` (the multiplier of 3/4 the
divisor's, ``M_o1``). A negative ``den`` (impossible: ``qr``, ``ks`` >= 0) is
treated as 0, and a negative total shift ``n + e`` as 0.

Streams: ``i`` beats carry ``lanes`` numerators ``num`` of columns
``group * lanes + lane`` of one token and that token's ``den``; ``o`` beats
carry ``q`` and ``tag`` = the token's code. ``prm`` writes ``M_o``, ``n_o``,
``z_out`` per column (see :class:`rtl.requant.Requant`), ``M_o1``, ``n_o1`` ``f_rows``
rows further. ``e_lo`` is signed (``shift_bits`` bits); ``frac`` is ``b``.

Timing: 3 front stages (priority encoder; threshold compare; clamp) then
the requantizer's 8: ``LATENCY`` = 11, one beat (``lanes`` columns) per cycle.
"""
from __future__ import annotations


from amaranth import Cat, Module, Signal, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from arch import timing
from arch.config import AccelConfig
from arch.formats import LOG2_FRAC_BITS_MAX, log2_thresholds
from rtl.requant import Requant


class Log2Divider(wiring.Component):
    FRONT = timing.DIVIDER_FRONT
    LATENCY = timing.DIVIDER_LATENCY

    def __init__(self, config: AccelConfig, *, lanes: int | None = None):
        self.config = config
        self.lanes = lanes or config.mat_lanes
        self.code_bits = config.log2_code_bits
        self.rq = Requant(config, lanes=self.lanes, out_shape=unsigned(config.act_bits), extra_shift=True,
                          tag_shape=unsigned(self.code_bits + LOG2_FRAC_BITS_MAX))
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
            "frac": In(1),                               # the divisor's mantissa bit is on
            "f_rows": In(unsigned(self.rq.group_bits)),  # where the rows of f = 1 start
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

        # Stage 2: the nearest step, by the thresholds of p (compares, then the mux by p): ``up`` for
        # powers of two (sqrt(2) 2^p), ``ge`` for the steps of the mantissa bit.
        t0, t1 = log2_thresholds(0, db), log2_thresholds(1, db)
        up, ge = Signal(), Signal(2)
        with m.Switch(p1):
            for b in range(db):
                with m.Case(b):
                    m.d.comb += [up.eq(mag1 >= t0[b][0]), ge.eq(Cat(mag1 >= t1[b][0], mag1 >= t1[b][1]))]
        up2, ge2, p2, zero2 = Signal(), Signal(2), Signal.like(p1), Signal()
        num2, g2, gf2 = Signal.like(num1), Signal.like(g1), Signal.like(g1)
        with m.If(adv):   # gf2: the row of f = 1, added here so that stage 3 only chooses (82.9 -> MHz)
            m.d.sync += [up2.eq(up), ge2.eq(ge), p2.eq(p1), zero2.eq(zero1), num2.eq(num1), g2.eq(g1),
                         gf2.eq(g1 + self.f_rows)]

        # Stage 3: clamp the step h to the code range (its own stage: adds and compares behind the
        # mux above held the divider to 61 MHz on the ECP5); e = h >> frac, f its low bit.
        h_raw = Signal(signed(8))
        h_lo = Signal(signed(cfg.shift_bits + 2))
        h_hi = Signal(signed(cfg.shift_bits + 3))
        h = Signal(signed(cfg.shift_bits + 3))
        f = Signal()
        m.d.comb += [h_raw.eq(Mux(self.frac, (p2 << 1) + ge2[0] + ge2[1], p2 + up2)),
                     h_lo.eq(Mux(self.frac, self.e_lo << 1, self.e_lo)),
                     h_hi.eq(h_lo + Mux(self.frac, 2 ** (self.code_bits + 1) - 1, 2 ** self.code_bits - 1)),
                     h.eq(Mux(zero2 | (h_raw < h_lo), h_lo, Mux(h_raw > h_hi, h_hi, h_raw))),
                     f.eq(self.frac & h[0])]
        with m.If(adv):
            m.d.sync += [rq.i.payload.acc.eq(num2), rq.i.payload.group.eq(Mux(f, gf2, g2)),
                         rq.i.payload.shift.eq(Mux(self.frac, h >> 1, h)),
                         rq.i.payload.tag.eq((h - h_lo)[:self.code_bits + LOG2_FRAC_BITS_MAX])]
        return m
