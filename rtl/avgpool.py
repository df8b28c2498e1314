"""Global average pooling (golden/SPEC.md section 6).

    out[c] = requantize(sum_hw (x[hw, c] - z_x), M, n, z_out)

Input order is pixel-major (as a convolution produces it): for each pixel,
the channel groups ``0 .. G-1`` of ``lanes`` channels each. The beat of the
first pixel of a group carries ``first`` (its sum starts from zero), the beat
of the last pixel carries ``last`` (its sum goes to the requantizer). Per-group
partial sums live in a ``lanes x acc_bits`` wide memory (``lib.memory``); the
sums of the two beats ahead, not yet in what a read returns, are forwarded
when they are of the same group, so back-to-back beats of one group see each
other's sums. ``M``, ``n``, ``z_out`` are per tensor.

Streams: ``i`` beats carry ``x`` (``lanes`` codes), ``group``, ``first``,
``last``; ``o`` beats carry ``q`` for one group, in the order the ``last``
beats arrived, with ``tag`` = the group.

Timing: 3 accumulation stages (memory read; the sums registered; add and
write back) then the requantizer's 8. An input beat is accepted every cycle (``HW * G`` beats per
tensor); output beat for group g appears ``LATENCY`` = 11 cycles after its
``last`` beat was accepted. The input stalls only while a finished group's
sums wait for the requantizer (``o`` back-pressured).
"""
from __future__ import annotations

from amaranth import Module, Signal, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring, memory
from amaranth.lib.wiring import In, Out, connect, flipped

from arch import timing
from arch.config import AccelConfig
from rtl.requant import Requant, group_bits, table_depth


class GlobalAvgPool(wiring.Component):
    FRONT = timing.AVGPOOL_FRONT
    LATENCY = timing.AVGPOOL_LATENCY

    def __init__(self, config: AccelConfig, *, lanes: int | None = None):
        self.config = config
        self.lanes = lanes or config.mat_lanes
        self.depth = table_depth(config, self.lanes)
        gb = group_bits(self.depth)
        self.rq = Requant(config, lanes=self.lanes, per_channel=False, tag_shape=unsigned(gb))
        a = unsigned(config.act_bits)
        self.in_layout = data.StructLayout({
            "x": data.ArrayLayout(a, self.lanes), "group": unsigned(gb), "first": 1, "last": 1})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.rq.out_layout)),
            "z_x": In(a),
            "m": In(unsigned(config.mult_bits)), "n": In(unsigned(config.shift_bits)),
            "z_out": In(signed(config.zero_point_bits)), "lo": In(a), "hi": In(a),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, L, ab = self.config, self.lanes, self.config.act_bits
        sums = data.ArrayLayout(signed(cfg.acc_bits), L)
        m.submodules.rq = rq = self.rq
        connect(m, rq.o, flipped(self.o))
        m.d.comb += [rq.lo.eq(self.lo), rq.hi.eq(self.hi), rq.m.eq(self.m), rq.n.eq(self.n),
                     rq.z.eq(self.z_out)]
        m.submodules.acc = acc = memory.Memory(shape=sums, depth=self.depth, init=[])
        wp = acc.write_port()
        rp = acc.read_port()   # not transparent: the two sums in flight are forwarded instead

        # Stage 3 only blocks when it holds a `last` beat the requantizer does not take.
        v1, v2, v3, v4, last3 = Signal(), Signal(), Signal(), Signal(), Signal()
        adv = Signal()
        m.d.comb += [adv.eq(~(v3 & last3) | rq.i.ready), self.i.ready.eq(adv),
                     rq.i.valid.eq(v3 & last3)]

        # Stage 1: read the group's partial sums, remove the zero point.
        d1 = Signal(data.ArrayLayout(signed(ab + 1), L))
        g1, first1, last1 = Signal.like(self.i.payload.group), Signal(), Signal()
        m.d.comb += [rp.addr.eq(self.i.payload.group), rp.en.eq(adv)]
        # Stage 2: the sums registered off the memory (its clock-to-out leaves no time for an adder);
        # the read missed the writes of the two beats ahead, so their sums are taken instead when
        # the group is the same (flags compared a stage early, so the adder's mux has registered selects).
        rd2, d2 = Signal(sums), Signal.like(d1)
        g2, g3, g4 = (Signal.like(g1, name=f"g{s}") for s in (2, 3, 4))
        first2, last2, fwd3, fwd4 = Signal(), Signal(), Signal(), Signal()
        # Stage 3: add, write back; a `last` beat's sums go on to the requantizer.
        s3, s4 = Signal(sums), Signal(sums)
        with m.If(adv):
            m.d.sync += [v1.eq(self.i.valid), g1.eq(self.i.payload.group),
                         first1.eq(self.i.payload.first), last1.eq(self.i.payload.last)]
            for k in range(L):
                m.d.sync += d1[k].eq(self.i.payload.x[k] - self.z_x)
            m.d.sync += [v2.eq(v1), g2.eq(g1), first2.eq(first1), last2.eq(last1), d2.eq(d1), rd2.eq(rp.data),
                         fwd3.eq(v2 & (g2 == g1)), fwd4.eq(v3 & (g3 == g1))]
            m.d.sync += [v3.eq(v2), g3.eq(g2), last3.eq(last2), v4.eq(v3), g4.eq(g3), s4.eq(s3)]
        new = Signal(sums)
        for k in range(L):
            base = Mux(first2, 0, Mux(fwd3, s3[k], Mux(fwd4, s4[k], rd2[k])))
            m.d.comb += new[k].eq(base + d2[k])
        m.d.comb += [wp.addr.eq(g2), wp.data.eq(new), wp.en.eq(adv & v2)]
        with m.If(adv):
            m.d.sync += s3.eq(new)
        m.d.comb += [rq.i.payload.acc.eq(s3), rq.i.payload.tag.eq(g3)]
        return m
