"""Global average pooling (golden/SPEC.md section 6).

    out[c] = requantize(sum_hw (x[hw, c] - z_x), M, n, z_out)

Input order is pixel-major (as a convolution produces it): for each pixel,
the channel groups ``0 .. G-1`` of ``lanes`` channels each. The beat of the
first pixel of a group carries ``first`` (its sum starts from zero), the beat
of the last pixel carries ``last`` (its sum goes to the requantizer). Per-group
partial sums live in a ``lanes x acc_bits`` wide memory (``lib.memory``,
read port transparent to the write port so back-to-back beats of one group
see each other's sums). ``M``, ``n``, ``z_out`` are per tensor.

Streams: ``i`` beats carry ``x`` (``lanes`` codes), ``group``, ``first``,
``last``; ``o`` beats carry ``q`` for one group, in the order the ``last``
beats arrived, with ``tag`` = the group.

Timing: 2 accumulation stages (memory read; add and write back) then the
requantizer's 4. An input beat is accepted every cycle (``HW * G`` beats per
tensor); output beat for group g appears ``LATENCY`` = 6 cycles after its
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
        rp = acc.read_port(transparent_for=(wp,))

        # Stage 2 only blocks when it holds a `last` beat the requantizer does not take.
        v1, v2, last2 = Signal(), Signal(), Signal()
        adv = Signal()
        m.d.comb += [adv.eq(~(v2 & last2) | rq.i.ready), self.i.ready.eq(adv),
                     rq.i.valid.eq(v2 & last2)]

        # Stage 1: read the group's partial sums, remove the zero point.
        d1 = Signal(data.ArrayLayout(signed(ab + 1), L))
        g1, first1, last1 = Signal.like(self.i.payload.group), Signal(), Signal()
        m.d.comb += [rp.addr.eq(self.i.payload.group), rp.en.eq(adv)]
        with m.If(adv):
            m.d.sync += [v1.eq(self.i.valid), g1.eq(self.i.payload.group),
                         first1.eq(self.i.payload.first), last1.eq(self.i.payload.last)]
            for k in range(L):
                m.d.sync += d1[k].eq(self.i.payload.x[k] - self.z_x)

        # Stage 2: add, write back; a `last` beat's sums go on to the requantizer.
        new = Signal(sums)
        for k in range(L):
            m.d.comb += new[k].eq(Mux(first1, 0, rp.data[k]) + d1[k])
        m.d.comb += [wp.addr.eq(g1), wp.data.eq(new), wp.en.eq(adv & v1)]
        with m.If(adv):
            m.d.sync += [v2.eq(v1), last2.eq(last1), rq.i.payload.acc.eq(new), rq.i.payload.tag.eq(g1)]
        return m
