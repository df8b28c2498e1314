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

Timing: 6 front stages (table read; the row registered; ``k``; the clamped
factor; the product's partial products and their sum, rtl/requant.py's
helpers) then the requantizer's 8, so ``LATENCY`` = 14 cycles
(arch/timing.py), one beat (``lanes`` elements) per cycle, stalls while ``o``
is back-pressured.
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from arch import timing
from arch.config import AccelConfig
from arch.formats import formats
from rtl.requant import Requant, StallPipe, param_layout, product_terms, sum_terms


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

        pipe = StallPipe(m, adv)
        # Stage 1: the group's zp / t3 are read; stage 2: registered before any arithmetic.
        m.d.comb += [pr.addr.eq(self.i.payload.group), pr.en.eq(adv)]
        beat1 = pipe.reg(self.i.payload, "beat1", shape=self.in_layout)
        pre2 = pipe.reg(pr.data, "pre2", shape=self.pre_layout)
        beat2 = pipe.reg(beat1, "beat2", shape=self.in_layout)
        t3_3 = pipe.reg(pre2.t3, "t3_3", shape=pre2.t3.shape())
        h = Signal(data.ArrayLayout(signed(self.config.acc_bits), L))
        for j in range(L):
            # Stage 3: k = p - zp.
            k3 = pipe.reg(beat2.p[j] - pre2.zp[j], f"k3_{j}", shape=signed(a + 1))
            # Stage 4: the factor clamp(k + t3, 0, 2 t3); k + t3 > 2 t3 is k > t3, a compare beside the add.
            t3 = t3_3[j]
            s = k3 + t3
            k4 = pipe.reg(k3, f"k4_{j}")
            f4 = pipe.reg(Mux(s < 0, 0, Mux(k3 > t3, t3 << 1, s)), f"f4_{j}", shape=unsigned(self.t3_bits + 1))
            # Stages 5, 6: h = k * factor, partial products then their sum (fits acc_bits, arch/formats.py).
            m.d.comb += h[j].eq(sum_terms(pipe, product_terms(pipe, k4, f4, f"h_{j}"), self.FRONT - 5, f"h_{j}"))
        m.d.comb += [rq.i.payload.acc.eq(h),
                     rq.i.payload.group.eq(pipe.delay(beat2.group, self.FRONT - 2, "group"))]
        if self.tag_shape is not None:
            m.d.comb += rq.i.payload.tag.eq(pipe.delay(beat2.tag, self.FRONT - 2, "tag"))
        return m
