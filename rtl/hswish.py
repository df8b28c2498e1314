"""Hardswish on the pre-activation code (golden/SPEC.md section 3).

    k = p - z_p,  h = k * clamp(k + t3, 0, 2 * t3),  out[c] = requantize(h, M[c], n[c], z_out[c])

``p`` is the producer's ``act_bits`` pre-activation code (per-tensor zero
point ``z_p``), ``t3 = round(3 / s_p)`` an unsigned integer parameter of
``t3_bits = acc_bits - act_bits - 2`` bits (so ``h`` fits the accumulator:
``|k| < 2^act_bits`` and the clamp is at most ``2 * t3``). The per-channel
requantization is a :class:`rtl.requant.Requant` submodule; its parameter port
``prm`` and saturation bounds ``lo``/``hi`` are passed through.

Streams: ``i`` beats carry ``lanes`` codes ``p`` of channels
``group * lanes + lane`` and the ``group``; ``o`` beats carry ``q``.

Timing: 2 front stages (k and the clamped factor; the product) then the
requantizer's 4, so ``LATENCY`` = 6 cycles, one beat (``lanes`` elements) per
cycle, stalls while ``o`` is back-pressured.
"""
from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from rtl.config import AccelConfig
from rtl.requant import Requant, clamp


class Hardswish(wiring.Component):
    FRONT = 2
    LATENCY = FRONT + Requant.LATENCY

    def __init__(self, config: AccelConfig, *, lanes: int | None = None, tag_shape=None):
        self.config = config
        self.lanes = lanes or config.mat_lanes
        self.t3_bits = config.acc_bits - config.act_bits - 2
        if self.t3_bits < 2:
            raise ValueError(f"Hardswish: acc_bits={config.acc_bits} leaves no room for t3 with act_bits={config.act_bits}")
        self.tag_shape = tag_shape
        self.rq = Requant(config, lanes=self.lanes, tag_shape=tag_shape)
        fields = {"p": data.ArrayLayout(unsigned(config.act_bits), self.lanes),
                  "group": unsigned(self.rq.group_bits)}
        if tag_shape is not None:
            fields["tag"] = tag_shape
        self.in_layout = data.StructLayout(fields)
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.rq.out_layout)),
            "prm": In(stream.Signature(self.rq.prm_layout)),
            "z_p": In(unsigned(config.act_bits)),
            "t3": In(unsigned(self.t3_bits)),
            "lo": In(self.rq.out_shape),
            "hi": In(self.rq.out_shape),
        })

    def elaborate(self, platform):
        m = Module()
        a, L = self.config.act_bits, self.lanes
        m.submodules.rq = rq = self.rq
        connect(m, flipped(self.prm), rq.prm)
        connect(m, rq.o, flipped(self.o))
        m.d.comb += [rq.lo.eq(self.lo), rq.hi.eq(self.hi)]

        adv = Signal()
        v = Signal(self.FRONT)
        m.d.comb += [adv.eq(~rq.i.valid | rq.i.ready), self.i.ready.eq(adv), rq.i.valid.eq(v[-1])]
        with m.If(adv):
            m.d.sync += v.eq(v << 1 | self.i.valid)

        k1 = [Signal(signed(a + 1), name=f"k1_{j}") for j in range(L)]
        f1 = [Signal(unsigned(self.t3_bits + 1), name=f"f1_{j}") for j in range(L)]
        g1, g2 = Signal.like(rq.i.payload.group), Signal.like(rq.i.payload.group)
        h2 = Signal(data.ArrayLayout(signed(self.config.acc_bits), L))
        with m.If(adv):
            for j in range(L):
                k = Signal(signed(a + 1), name=f"k_{j}")
                s = Signal(signed(self.t3_bits + 2), name=f"s_{j}")
                m.d.comb += [k.eq(self.i.payload.p[j] - self.z_p), s.eq(k + self.t3)]
                m.d.sync += [k1[j].eq(k), f1[j].eq(clamp(s, 0, self.t3 << 1))]
                m.d.sync += h2[j].eq(k1[j] * f1[j])
            m.d.sync += [g1.eq(self.i.payload.group), g2.eq(g1)]
            if self.tag_shape is not None:
                t1 = Signal(self.tag_shape)
                m.d.sync += [t1.eq(self.i.payload.tag), rq.i.payload.tag.eq(t1)]
        m.d.comb += [rq.i.payload.acc.eq(h2), rq.i.payload.group.eq(g2)]
        return m
