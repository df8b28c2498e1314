"""Requantization: int32 accumulator -> output code (golden/SPEC.md section 1).

    q = clamp(z_out + rshift_round(acc * M, n), lo, hi)

with ``rshift_round(x, n) = (x + 2^(n-1)) >> n`` (round half up; ``x`` for
``n = 0``), ``M`` an unsigned ``config.mult_bits``-bit multiplier, ``n`` in
``0 .. 2^shift_bits - 1``, and ``M``, ``n``, ``z_out`` either per channel (a
parameter table) or per tensor (configuration ports).

Streams (``amaranth.lib.stream``, valid/ready):

* ``i``: one beat = ``lanes`` accumulators of consecutive channels
  ``group * lanes + lane``; fields ``acc`` (array), ``group`` (per-channel
  mode), ``shift`` (``extra_shift`` mode: a signed amount added to every
  lane's ``n``, the attention divisor's exponent) and ``tag`` (optional, carried
  through unchanged, e.g. a ``last`` flag or the divisor code).
* ``o``: fields ``q`` (array of ``lanes`` codes of ``out_shape``) and ``tag``.
* ``prm`` (per-channel mode): writes one table row, i.e. the ``M``, ``n`` and
  ``z_out`` of the ``lanes`` channels of one group; always ready.

Timing: a stall pipeline of ``LATENCY`` = 4 register stages (parameter read,
product, rounding shift, zero point + clamp). Throughput one beat (``lanes``
elements) per cycle; a beat accepted at cycle t appears on ``o`` at cycle
t + 4 when ``o`` is not back-pressured. Every stage holds while ``o.valid &
~o.ready``.

The rounding shift is built as ``((x >> (n - 1)) + 1) >> 1``, equal to
``(x + 2^(n-1)) >> n`` for every integer ``x`` and ``n >= 1`` but without the
wide rounding constant; shifts past the operand width give 0 as the SPEC's
int64 arithmetic does.
"""
from __future__ import annotations

from amaranth import Module, Signal, Mux, signed, unsigned, Shape
from amaranth.lib import data, stream, wiring, memory
from amaranth.lib.wiring import In, Out

from arch import timing
from arch.config import AccelConfig


def rshift_round(x, n, n_bits):
    """Amaranth expression for SPEC's rshift_round(x, n): round half up.

    ``x`` signed, ``n`` an unsigned value of ``n_bits`` bits (0 means no shift).
    """
    nm1 = (n - 1)[:n_bits]  # garbage for n = 0, masked by the Mux below
    rounded = ((x >> nm1) + 1) >> 1
    return Mux(n == 0, x, rounded)


def clamp(x, lo, hi):
    """Saturate ``x`` to ``[lo, hi]`` (all signed-compatible values)."""
    return Mux(x < lo, lo, Mux(x > hi, hi, x))


def param_layout(config: AccelConfig, lanes: int, out_shape) -> data.StructLayout:
    """One row of the per-channel parameter table: M, n, z_out of each lane."""
    return data.StructLayout({
        "m": data.ArrayLayout(unsigned(config.mult_bits), lanes),
        "n": data.ArrayLayout(unsigned(config.shift_bits), lanes),
        "z": data.ArrayLayout(signed(config.zero_point_bits), lanes),
    })


def table_depth(config: AccelConfig, lanes: int) -> int:
    return -(-config.norm_max_channels // lanes)


def group_bits(depth: int) -> int:
    """Width of the ``group`` (table row address) of a ``depth``-row parameter table."""
    return max(1, (depth - 1).bit_length())


class Requant(wiring.Component):
    """Pipelined requantizer, ``lanes`` elements per cycle (see module docstring).

    Parameters: ``lanes`` (default ``config.mat_lanes``), ``acc_bits`` (signed
    input width, default ``config.acc_bits``), ``out_shape`` (default
    ``unsigned(config.act_bits)``), ``per_channel`` (table vs. configuration
    ports), ``extra_shift`` (signed per-beat shift of ``shift_bits + 2`` bits
    added to ``n``; a negative total shift is treated as 0), ``tag_shape``.
    """

    LATENCY = timing.REQUANT_LATENCY

    def __init__(self, config: AccelConfig, *, lanes: int | None = None, acc_bits: int | None = None,
                 out_shape=None, per_channel: bool = True, extra_shift: bool = False, tag_shape=None):
        self.config = config
        self.lanes = lanes or config.mat_lanes
        self.acc_bits = acc_bits or config.acc_bits
        self.out_shape = Shape.cast(out_shape if out_shape is not None else unsigned(config.act_bits))
        self.per_channel = per_channel
        self.extra_shift = extra_shift
        self.tag_shape = tag_shape
        self.depth = table_depth(config, self.lanes)
        self.group_bits = group_bits(self.depth)
        self.shift_in_bits = config.shift_bits + 2  # signed extra shift (attention exponent)
        if self.acc_bits + config.mult_bits + 1 > 64:
            raise ValueError(f"Requant: acc_bits={self.acc_bits} x mult_bits={config.mult_bits} exceeds the "
                             f"SPEC's int64 product; use acc_bits <= {63 - config.mult_bits}")

        in_fields = {"acc": data.ArrayLayout(signed(self.acc_bits), self.lanes)}
        if per_channel:
            in_fields["group"] = unsigned(self.group_bits)
        if extra_shift:
            in_fields["shift"] = signed(self.shift_in_bits)
        out_fields = {"q": data.ArrayLayout(self.out_shape, self.lanes)}
        if tag_shape is not None:
            in_fields["tag"] = tag_shape
            out_fields["tag"] = tag_shape
        self.in_layout = data.StructLayout(in_fields)
        self.out_layout = data.StructLayout(out_fields)
        self.prm_layout = data.StructLayout({"group": unsigned(self.group_bits),
                                             "row": param_layout(config, self.lanes, self.out_shape)})

        members = {
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "lo": In(self.out_shape),
            "hi": In(self.out_shape),
        }
        if per_channel:
            members["prm"] = In(stream.Signature(self.prm_layout))
        else:
            members["m"] = In(unsigned(config.mult_bits))
            members["n"] = In(unsigned(config.shift_bits))
            members["z"] = In(signed(config.zero_point_bits))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg, L = self.config, self.lanes
        adv = Signal()  # the whole pipeline moves one stage
        v = Signal(self.LATENCY)
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv), self.o.valid.eq(v[-1])]
        with m.If(adv):
            m.d.sync += v.eq(v << 1 | self.i.valid)

        # Stage 1: latch the accumulators, read the parameter row.
        acc1 = Signal(data.ArrayLayout(signed(self.acc_bits), L))
        shift1 = Signal(signed(self.shift_in_bits))
        tag1 = Signal(self.tag_shape) if self.tag_shape is not None else None
        row = Signal(param_layout(cfg, L, self.out_shape))
        with m.If(adv):
            m.d.sync += acc1.eq(self.i.payload.acc)
            if self.extra_shift:
                m.d.sync += shift1.eq(self.i.payload.shift)
            if tag1 is not None:
                m.d.sync += tag1.eq(self.i.payload.tag)
        if self.per_channel:
            m.submodules.table = table = memory.Memory(
                shape=param_layout(cfg, L, self.out_shape), depth=self.depth, init=[])
            wp = table.write_port()
            rp = table.read_port()
            m.d.comb += [self.prm.ready.eq(1),
                         wp.addr.eq(self.prm.payload.group), wp.data.eq(self.prm.payload.row),
                         wp.en.eq(self.prm.valid),
                         rp.addr.eq(self.i.payload.group), rp.en.eq(adv)]
            m.d.comb += row.eq(rp.data)
        else:
            for k in range(L):
                m.d.comb += [row.m[k].eq(self.m), row.n[k].eq(self.n), row.z[k].eq(self.z)]

        # Stage 2: product (int64 in the SPEC; acc_bits + mult_bits + 1 here) and total shift.
        pw = self.acc_bits + cfg.mult_bits + 1
        nw = cfg.shift_bits + 2  # total shift n + extra, clamped to >= 0
        prod2 = [Signal(signed(pw), name=f"prod2_{k}") for k in range(L)]
        n2 = [Signal(unsigned(nw), name=f"n2_{k}") for k in range(L)]
        z2 = Signal(data.ArrayLayout(signed(cfg.zero_point_bits), L))
        z3 = Signal(data.ArrayLayout(signed(cfg.zero_point_bits), L))
        tag2 = Signal(self.tag_shape) if tag1 is not None else None
        tag3 = Signal(self.tag_shape) if tag1 is not None else None
        with m.If(adv):
            for k in range(L):
                m.d.sync += prod2[k].eq(acc1[k] * row.m[k])
                if self.extra_shift:
                    tot = Signal(signed(nw + 1), name=f"ntot_{k}")
                    m.d.comb += tot.eq(row.n[k] + shift1)
                    m.d.sync += n2[k].eq(Mux(tot < 0, 0, tot[:nw]))
                else:
                    m.d.sync += n2[k].eq(row.n[k])
            m.d.sync += z2.eq(row.z)
            if tag1 is not None:
                m.d.sync += [tag2.eq(tag1), tag3.eq(tag2)]
            m.d.sync += z3.eq(z2)

        # Stage 3: rounding shift.
        sh3 = [Signal(signed(pw), name=f"sh3_{k}") for k in range(L)]
        with m.If(adv):
            for k in range(L):
                m.d.sync += sh3[k].eq(rshift_round(prod2[k], n2[k], nw))

        # Stage 4: zero point, saturation.
        q4 = Signal(self.out_layout)
        with m.If(adv):
            for k in range(L):
                s = Signal(signed(pw + 1), name=f"zsum_{k}")
                m.d.comb += s.eq(sh3[k] + z3[k])
                m.d.sync += q4.q[k].eq(clamp(s, self.lo, self.hi))
            if tag1 is not None:
                m.d.sync += q4.tag.eq(tag3)
        m.d.comb += self.o.payload.eq(q4)
        return m
