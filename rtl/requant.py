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

Timing: a stall pipeline of ``LATENCY`` = 8 register stages (arch/timing.py), so that
no stage holds more than one of a memory read, a multiplier, a wide carry chain and a
variable shift (the ECP5's DP16KD clock-to-out alone is 5.8 ns, a MULT18X18D 5 ns):

1. the parameter table read (the memory's own output register);
2. the row registered;
3. partial products of 18x18 multipliers (:func:`product_terms`; the total shift
   ``n + extra`` beside them);
4. 5. their sum in two adder levels (:func:`sum_terms`);
6. the variable shift, 7. the rounding constant and zero point, 8. the saturation
   (:func:`round_clamp`).

Throughput one beat (``lanes`` elements) per cycle; a beat accepted at cycle t
appears on ``o`` at cycle t + 8 when ``o`` is not back-pressured. Every stage
holds while ``o.valid & ~o.ready``.

The rounding is ``((2 x >> n) + 1) >> 1``, equal to ``(x + 2^(n-1)) >> n`` for
every integer ``x`` and ``n >= 1`` and to ``x`` for ``n = 0``, without the
wide rounding constant; shifts past the operand width give 0 as the SPEC's
int64 arithmetic does.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
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


class StallPipe:
    """Registers of a stall pipeline: every one loads when ``adv`` is high (the whole pipeline moves)."""

    def __init__(self, m: Module, adv):
        self.m, self.adv = m, adv

    def reg(self, value, name: str, shape=None) -> Signal:
        """``value`` one stage later (``shape``: default the value's own, a layout for a view)."""
        if shape is None:
            shape = value.shape() if isinstance(value, data.View) else Value.cast(value).shape()
        r = Signal(shape, name=name)
        with self.m.If(self.adv):
            self.m.d.sync += r.eq(value)
        return r

    def delay(self, value, stages: int, name: str):
        for s in range(stages):
            value = self.reg(value, f"{name}_d{s}")
        return value


DSP_BITS = 17   # unsigned chunk width: a chunk (or a signed top chunk of 18 bits) fits the ECP5's 18x18 multiplier


def _chunks(x):
    """(chunk, weight) pieces of ``x``: unsigned DSP_BITS-bit pieces, the top one keeping x's sign."""
    w, out = len(x), []
    for lo in range(0, w, DSP_BITS):
        hi = min(lo + DSP_BITS, w)
        piece = x[lo:hi]
        out.append((piece.as_signed() if hi == w and x.shape().signed else piece, lo))
    return out


def product_terms(pipe: StallPipe, a, b, name: str) -> list:
    """One stage: ``a * b`` as registered partial products (value, weight), each one 18x18 multiplier,
    so that no adder sits behind a multiplier in one stage (Yosys's mul2dsp would put its carry
    chains there). The product is ``sum value << weight`` (:func:`sum_terms`)."""
    a, b = Value.cast(a), Value.cast(b)
    return [(pipe.reg(pa * pb, f"{name}_pp{wa}_{wb}"), wa + wb)
            for pa, wa in _chunks(a) for pb, wb in _chunks(b)]


def _below(low, hi):
    """``hi << len(low) | low``, signed when ``hi`` is."""
    v = Cat(low, hi)
    return v.as_signed() if hi.shape().signed else v


def sum_terms(pipe: StallPipe, terms: list, stages: int, name: str):
    """``sum value << weight`` of ``terms`` in ``stages`` registered levels of two-input adders (plain
    registers once one term is left; the latency is fixed by arch/timing.py, whatever the widths)."""
    terms = sorted(terms, key=lambda t: t[1])
    for s in range(stages):
        nxt = []
        for j in range(0, len(terms), 2):
            if j + 1 == len(terms):
                v, w = terms[j]
            else:
                (v1, w1), (v2, w2) = terms[j], terms[j + 1]
                d = w2 - w1
                # the bits of v1 below v2's weight pass beside the adder: a shorter carry chain
                hi = (v1 >> d) + v2
                v, w = (hi if d == 0 else _below(v1[:d], hi)), w1
            nxt.append((pipe.reg(v, f"{name}_s{s}_{j // 2}"), w))
        terms = nxt
    if len(terms) != 1:
        raise ValueError(f"{name}: {len(terms)} partial sums left after {stages} adder levels")
    v, w = terms[0]
    return v if w == 0 else _below(Const(0, w), v)


def saturate(x, lo, hi, shape):
    """``clamp(x, lo, hi)`` for ``lo``, ``hi`` of ``shape`` with compares only ``shape`` wide: whether
    ``x`` (signed, wider) fits ``shape`` is an OR of its top bits, not a carry chain."""
    shape = Shape.cast(shape)
    w = shape.width
    if shape.signed:
        top = x[w - 1:]
        fits = top.all() | ~top.any()
        narrow = x[:w].as_signed()
    else:
        fits = ~x[w:].any()
        narrow = x[:w]
    return Mux(fits, clamp(narrow, lo, hi), Mux(x[-1], lo, hi))


def round_clamp(pipe: StallPipe, x, n, z, lo, hi, out_shape, name: str) -> Signal:
    """``clamp(z + rshift_round(x, n), lo, hi)`` in arch/timing.py's ROUND_STAGES registered stages: the variable shift
    ``t = 2 x >> n``; ``u = t + 2 z + 1`` (one carry chain: ``(t + 1) >> 1 + z = (t + 2 z + 1) >> 1``);
    the saturation of ``u >> 1``. ``x``, ``n`` (unsigned), ``z`` (signed) arrive together."""
    t = pipe.reg((Value.cast(x) << 1) >> n, f"{name}_t")   # n = 0: 2x, and (2x + 1) >> 1 = x
    z1 = pipe.reg(z, f"{name}_z")
    u = pipe.reg(t + Cat(Const(1, 1), z1).as_signed(), f"{name}_u")
    return pipe.reg(saturate(u >> 1, lo, hi, out_shape), f"{name}_q", shape=out_shape)


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
        pipe = StallPipe(m, adv)
        row_shape = param_layout(cfg, L, self.out_shape)

        # Stage 1: the parameter row is read; the beat waits beside it.
        beat1 = pipe.reg(self.i.payload, "beat1", shape=self.in_layout)
        if self.per_channel:
            m.submodules.table = table = memory.Memory(shape=row_shape, depth=self.depth, init=[])
            wp = table.write_port()
            rp = table.read_port()
            m.d.comb += [self.prm.ready.eq(1),
                         wp.addr.eq(self.prm.payload.group), wp.data.eq(self.prm.payload.row),
                         wp.en.eq(self.prm.valid),
                         rp.addr.eq(self.i.payload.group), rp.en.eq(adv)]
            row = rp.data
        else:
            row = Signal(row_shape)
            for k in range(L):
                m.d.comb += [row.m[k].eq(self.m), row.n[k].eq(self.n), row.z[k].eq(self.z)]
        # Stage 2: the row registered (also the per-tensor ports', so the latency is one).
        row2 = pipe.reg(row, "row2", shape=row_shape)
        beat2 = pipe.reg(beat1, "beat2", shape=self.in_layout)

        nw = cfg.shift_bits + 2  # total shift n + extra, clamped to >= 0
        for k in range(L):
            # Stages 3..5: the product (int64 in the SPEC; acc_bits + mult_bits + 1 bits here).
            prod = sum_terms(pipe, product_terms(pipe, beat2.acc[k], row2.m[k], f"prod_{k}"),
                             timing.PRODUCT_STAGES - 1, f"prod_{k}")
            if self.extra_shift:
                tot = Signal(signed(nw + 1), name=f"ntot_{k}")
                m.d.comb += tot.eq(row2.n[k] + beat2.shift)
                n = Mux(tot < 0, 0, tot[:nw])
            else:
                n = row2.n[k]
            n5 = pipe.delay(pipe.reg(n, f"n3_{k}", shape=unsigned(nw)), timing.PRODUCT_STAGES - 1, f"n3_{k}")
            z5 = pipe.delay(row2.z[k], timing.PRODUCT_STAGES, f"z2_{k}")
            # Stages 6..8: rounding shift, zero point, saturation.
            q = round_clamp(pipe, prod, n5, z5, self.lo, self.hi, self.out_shape, f"rq_{k}")
            m.d.comb += self.o.payload.q[k].eq(q)
        if self.tag_shape is not None:
            m.d.comb += self.o.payload.tag.eq(pipe.delay(beat2.tag, self.LATENCY - 2, "tag"))
        return m
