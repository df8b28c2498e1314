"""The engines' weight-buffer read, registered before the multipliers.

A BRAM's clock-to-out feeding a multiplier straight away limited both engines'
Fmax on the ECP5 (about 5.8 ns of a 10 ns budget before the multiplier's own
delay). The read is therefore issued a cycle ahead, at the address of the beat
the next cycle issues, and its word is held in a fabric register at the issue
stage: the same word reaches the products in the same cycle as before, so the
cycle behaviour (arch/cost.py) is unchanged.
"""
from __future__ import annotations

from amaranth import Mux, Signal


def prefetched_word(m, rd, wr, shape, next_addr, en, name: str = "wa"):
    """The word at ``next_addr`` one cycle later, registered when ``en`` (the issue stage advances).

    ``rd``/``wr``: the buffer's synchronous read port (not transparent) and its write port. A word
    written in the cycle it is read (a tile promoted with its last weight beat) comes from a copy of
    the write, taken instead of the read's old data; that choice ahead of the register also keeps
    Yosys from folding the register into the BRAM, whose clock-to-out it is there to avoid.
    """
    hit, kept, word = Signal(name=f"{name}_hit"), Signal(shape, name=f"{name}_kept"), Signal(shape, name=name)
    m.d.comb += rd.addr.eq(next_addr)
    m.d.sync += [hit.eq(wr.en & (wr.addr == next_addr)), kept.eq(wr.data)]
    with m.If(en):
        m.d.sync += word.eq(Mux(hit, kept, rd.data))
    return word
