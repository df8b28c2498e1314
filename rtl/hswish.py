"""Hardswish on the pre-activation code (golden/SPEC.md section 3).

    k = p - z_p,  h = k * clamp(k + t3, 0, 2 * t3),  out[c] = requantize(h, M[c], n[c], z_out[c])

``p`` is the producer's ``act_bits`` pre-activation code with zero point
``z_p[c]``, ``t3[c] = round(3 / s_p[c])`` an unsigned integer of
``t3_bits = acc_bits - act_bits - 2`` bits (22: ``h`` then fits the
accumulator, ``|k| < 2^act_bits`` and the clamp is at most ``2 t3``). Both are
per channel (SPEC 3: the pre-activation never leaves the requant -> hardswish
pipeline, so per-channel parameters cost only table bits); a per-tensor
pre-activation writes the same value into every row. The output
requantization is a :class:`rtl.requant.Requant` submodule.

Streams: ``i`` beats carry ``lanes`` codes ``p`` of channels
``group * lanes + lane`` and the ``group``; ``o`` beats carry ``q``. ``prm``
writes one group's row of ``M``, ``n``, ``z`` (output requant, into the
requantizer's table) and ``zp``, ``t3`` (into this unit's own table).

Timing: 3 front stages (table read; k and the clamped factor; the product)
then the requantizer's 4, so ``LATENCY`` = 7 cycles, one beat (``lanes``
elements) per cycle, stalls while ``o`` is back-pressured.
"""
from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from arch import timing
from arch.config import AccelConfig
from arch.formats import formats
from rtl.requant import Requant, clamp, param_layout


class Hardswish(wiring.Component):
    FRONT = timing.HSWISH_FRONT
    LATENCY = timing.HSWISH_LATENCY

    def __init__(self, config: AccelConfig, *, lanes: int | None = None, tag_shape=None):
        self.config = config
        self.lanes = lanes or config.mat_lanes
        self.t3_bits = formats(config).t3.bits     # the knee's width (arch/formats.py): h fits the accumulator
        self.tag_shape = tag_shape
        self.rq = Requant(config, lanes=self.lanes, tag_shape=tag_shape)
        L = self.lanes
        fields = {"p": data.ArrayLayout(unsigned(config.act_bits), L), "group": unsigned(self.rq.group_bits)}
        if tag_shape is not None:
            fields["tag"] = tag_shape
        self.in_layout = data.StructLayout(fields)
        self.pre_layout = data.StructLayout({"zp": data.ArrayLayout(unsigned(config.act_bits), L),
                                             "t3": data.ArrayLayout(unsigned(self.t3_bits), L)})
        rq_row = param_layout(config, L, self.rq.out_shape)
        self.prm_layout = data.StructLayout({
            "group": unsigned(self.rq.group_bits),
            "row": data.StructLayout({**{name: f.shape for name, f in rq_row}, **{name: f.shape for name, f in self.pre_layout}}),
        })
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.rq.out_layout)),
            "prm": In(stream.Signature(self.prm_layout)),
            "lo": In(self.rq.out_shape),
            "hi": In(self.rq.out_shape),
        })

    def elaborate(self, platform):
        m = Module()
        a, L = self.config.act_bits, self.lanes
        m.submodules.rq = rq = self.rq
        connect(m, rq.o, flipped(self.o))
        m.d.comb += [rq.lo.eq(self.lo), rq.hi.eq(self.hi)]

        # one parameter write fills both tables: M, n, z in the requantizer's, zp, t3 in ours
        m.submodules.pre = pre = memory.Memory(shape=self.pre_layout, depth=self.rq.depth, init=[])
        pw, pr = pre.write_port(), pre.read_port()
        row = self.prm.payload.row
        m.d.comb += [self.prm.ready.eq(1),
                     rq.prm.valid.eq(self.prm.valid), rq.prm.payload.group.eq(self.prm.payload.group),
                     rq.prm.payload.row.m.eq(row.m), rq.prm.payload.row.n.eq(row.n), rq.prm.payload.row.z.eq(row.z),
                     pw.en.eq(self.prm.valid), pw.addr.eq(self.prm.payload.group),
                     pw.data.zp.eq(row.zp), pw.data.t3.eq(row.t3)]

        adv = Signal()
        v = Signal(self.FRONT)
        m.d.comb += [adv.eq(~rq.i.valid | rq.i.ready), self.i.ready.eq(adv), rq.i.valid.eq(v[-1])]
        with m.If(adv):
            m.d.sync += v.eq(v << 1 | self.i.valid)

        # Stage 1: latch p, read the group's zp / t3.
        p1 = Signal.like(self.i.payload.p)
        g1, g2, g3 = (Signal.like(rq.i.payload.group, name=f"g{s}") for s in (1, 2, 3))
        m.d.comb += [pr.addr.eq(self.i.payload.group), pr.en.eq(adv)]
        # Stage 2: k = p - zp and the clamped factor; stage 3: the product h.
        k2 = [Signal(signed(a + 1), name=f"k2_{j}") for j in range(L)]
        f2 = [Signal(unsigned(self.t3_bits + 1), name=f"f2_{j}") for j in range(L)]
        h3 = Signal(data.ArrayLayout(signed(self.config.acc_bits), L))
        with m.If(adv):
            m.d.sync += [p1.eq(self.i.payload.p), g1.eq(self.i.payload.group), g2.eq(g1), g3.eq(g2)]
            for j in range(L):
                k = Signal(signed(a + 1), name=f"k_{j}")
                s = Signal(signed(self.t3_bits + 2), name=f"s_{j}")
                t3 = pr.data.t3[j]
                m.d.comb += [k.eq(p1[j] - pr.data.zp[j]), s.eq(k + t3)]
                m.d.sync += [k2[j].eq(k), f2[j].eq(clamp(s, 0, t3 << 1))]
                m.d.sync += h3[j].eq(k2[j] * f2[j])
            if self.tag_shape is not None:
                t1, t2 = Signal(self.tag_shape), Signal(self.tag_shape)
                m.d.sync += [t1.eq(self.i.payload.tag), t2.eq(t1), rq.i.payload.tag.eq(t2)]
        m.d.comb += [rq.i.payload.acc.eq(h3), rq.i.payload.group.eq(g3)]
        return m
