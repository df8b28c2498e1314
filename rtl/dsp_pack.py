"""Two products that share a weight from one multiplier (one DSP48E2), exactly (Xilinx WP486).

Two unsigned activations ``x_lo``, ``x_hi`` (``a_bits`` each) that meet the same
signed weight ``w`` (``w_bits``) go through ONE ``*``::

    P = (x_hi * 2^K + x_lo) * w = p_hi * 2^K + p_lo,     K = 18,  p_lo = x_lo * w,  p_hi = x_hi * w

The packed operand ``x_hi * 2^K + x_lo`` is the wiring ``Cat(x_lo, 0..0, x_hi)``:
non-negative and below ``2^(a_bits + K) <= 2^26``, so it is a 27-bit signed
A (or A:D) operand of the DSP48E2; ``w`` (at most 18 bits) is B; ``P`` fits
``K + a_bits + w_bits`` bits signed (36 for 8 x 10). Yosys (and Vivado) map the
``*`` to one DSP48E2.

Why the two halves are exact (:func:`packable` holds):

* ``|p_lo| <= (2^a_bits - 1) * 2^(w_bits - 1) < 2^(K-1)`` because
  ``a_bits + w_bits <= K`` (MAT: 8-bit codes x 10-bit ``w - w_zero``, 8 + 10 = 18;
  R-MAC: 8 x 8). ``P = p_lo (mod 2^K)`` and ``p_lo`` is the only number in
  ``[-2^(K-1), 2^(K-1))`` with that residue, so ``p_lo = P[K-1:0]`` read as a
  K-bit signed number (:attr:`PackedMul.lo`): no correction.
* ``P - p_lo = p_hi * 2^K``. Reading ``P[K-1:0]`` as signed subtracts
  ``P[K-1] * 2^K`` from its unsigned value, and ``P = (P >> K) * 2^K + P[K-1:0]``
  (arithmetic shift), so ``p_hi = (P >> K) + P[K-1]``. The high bits alone
  (:attr:`PackedMul.hi_raw`) are one less than ``p_hi`` exactly when
  ``p_lo < 0``: the low product's sign borrows 1 from the high half, and
  :attr:`PackedMul.borrow` ``= P[K-1]`` (the sign bit of ``p_lo``) gives it back.
  Splitting without it (as some packed-int8 designs do) is off by one for
  every negative low product.

Where the correction goes: :attr:`PackedMul.hi` adds it per pair (``hi_raw +
borrow``, an incrementer per pair). The engines defer it instead: they pass
``hi_raw`` on and add ``borrow`` as the carry-in of an adder that exists
anyway. A MAT lane's adder tree has ``N - 1`` adders for ``N`` borrows: each
adder takes one (``a + b + c`` with a one-bit ``c`` is the same carry chain
as ``a + b`` in synthesis) and the accumulator the last; an R-MAC PE's
accumulator takes its pair's. The accumulators use :func:`add_carry` (the
carry as an extra low bit of both operands) so that their bias/accumulator
multiplexer stays in the adder's LUTs. The correction thus costs one carry
bit per accumulator and the flip-flops that carry pending borrows along a
pipelined tree, no adder. Sums stay exact by associativity: every borrow is
added exactly once, into the sum that holds its ``hi_raw``.

The engines register ``P`` (:attr:`PackedMul.p`) where they registered the two
products before (the DSP's P register), so no cycle count changes.
tb/test_dsp_pack.py checks this RTL under Verilator on every ``x_lo, x_hi`` in
``[0, 255]`` and every ``w`` of the engines' widths (10-bit signed for the MAT
engine, 8-bit for the R-MAC engine).
"""
from __future__ import annotations

from amaranth import Cat, Const, Signal, Value, signed

PACK_SHIFT = 18        # K: the high activation sits at bit 18 (WP486's layout)
DSP_A_BITS = 27        # DSP48E2 multiplier: 27-bit signed (A or A:D) x 18-bit signed (B)
DSP_B_BITS = 18


def packable(a_bits: int, w_bits: int) -> bool:
    """Whether two unsigned ``a_bits`` x signed ``w_bits`` products pack exactly into one DSP48E2:
    the low product fits K bits signed and the packed operand fits the 27-bit signed A port."""
    return a_bits + w_bits <= PACK_SHIFT and a_bits + PACK_SHIFT < DSP_A_BITS and w_bits <= DSP_B_BITS


class PackedMul:
    """One multiplier computing ``x_lo * w`` and ``x_hi * w`` (module docstring).

    ``m.d.sync += pk.p.eq(pk.product(x_lo, x_hi, w))`` emits the one ``*`` and
    registers ``P``; :attr:`lo`, :attr:`hi` (or :attr:`hi_raw` + :attr:`borrow`)
    read the two products from the register.
    """

    def __init__(self, a_bits: int, w_bits: int, name: str = "pk"):
        if not packable(a_bits, w_bits):
            raise ValueError(f"{a_bits}-bit unsigned x {w_bits}-bit signed products do not pack into one "
                             f"DSP48E2 (needs a_bits + w_bits <= {PACK_SHIFT} and a_bits <= "
                             f"{DSP_A_BITS - 1 - PACK_SHIFT})")
        self.a_bits, self.w_bits = a_bits, w_bits
        self.p = Signal(signed(PACK_SHIFT + a_bits + w_bits), name=name)

    def product(self, x_lo, x_hi, w) -> Value:
        """``(x_hi * 2^K + x_lo) * w``: the packed operand is wiring, the ``*`` is the DSP."""
        x_lo, x_hi, w = Value.cast(x_lo), Value.cast(x_hi), Value.cast(w)
        for what, v in (("x_lo", x_lo), ("x_hi", x_hi)):
            if v.shape().signed or v.shape().width > self.a_bits:
                raise TypeError(f"{what} must be unsigned with at most {self.a_bits} bits, got {v.shape()}")
        if not w.shape().signed or w.shape().width > self.w_bits:
            raise TypeError(f"w must be signed with at most {self.w_bits} bits, got {w.shape()}")
        a = Cat(x_lo, Const(0, PACK_SHIFT - x_lo.shape().width), x_hi)   # x_hi * 2^K + x_lo, < 2^26
        return a * w

    @property
    def lo(self) -> Value:
        """``x_lo * w``: ``P[K-1:0]`` as a signed number (exact, no correction)."""
        return self.p[:PACK_SHIFT].as_signed()

    @property
    def hi_raw(self) -> Value:
        """``P >> K``: ``x_hi * w - borrow`` (``a_bits + w_bits`` bits signed)."""
        return self.p[PACK_SHIFT:].as_signed()

    @property
    def borrow(self) -> Value:
        """``P[K-1]``, the sign of the low product: what ``hi_raw`` lacks of ``x_hi * w``."""
        return self.p[PACK_SHIFT - 1]

    @property
    def hi(self) -> Value:
        """``x_hi * w`` exactly: ``hi_raw + borrow`` (the per-pair correction)."""
        return self.hi_raw + self.borrow


def add_carry(a, b, cin) -> Value:
    """``a + b + cin`` (signed ``a``, ``b``; one-bit ``cin``) as ONE two-operand adder:
    ``((2a + cin) + (2b + cin)) >> 1``, exact since ``2a + 2b + 2 cin`` is even.

    For the accumulators, whose ``a`` is a multiplexer (bias on a tile's first
    beat, else the accumulator): Yosys maps ``mux + b + cin`` onto one carry
    chain too, but then keeps the multiplexer in a LUT of its own in front of the
    adder's (measured on the paper preset's R-MAC engine: +16k LUTs), while the
    two-operand form keeps it in the adder's LUT at the cost of one carry bit.
    """
    a, b, cin = Value.cast(a), Value.cast(b), Value.cast(cin)
    if not (a.shape().signed and b.shape().signed) or len(cin) != 1:
        raise TypeError(f"add_carry takes signed a, b and a one-bit carry, got {a.shape()}, {b.shape()}, "
                        f"{cin.shape()}")
    s = Cat(cin, a).as_signed() + Cat(cin, b).as_signed()
    return s[1:].as_signed()
