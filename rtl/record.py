"""Fields of an operation's 128-byte record (arch/encoding.py) as Amaranth expressions.

Every position is computed at elaboration time from arch/encoding.py's own tables (``GEOM_FIELDS``
and its packing rule, ``OPERAND_WORDS``) and parameter tables from arch/program.py's ``PARAMS``, so
the hardware cannot read a field where the encoder did not put it.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth import Mux, Signal, Value

from arch import encoding
from arch.config import AccelConfig
from arch.formats import formats
from arch.program import ALIGN, PARAMS


def word(record: Value, i: int) -> Value:
    return record[32 * i:32 * i + 32]


def _geom_positions() -> dict[str, tuple[int, int, int, bool]]:
    """name -> (word, lsb, bits, signed), packed as arch.encoding._pack_bits packs them (from word 3)."""
    out, wi, used = {}, 3, 0
    for name, bits, signed in encoding.GEOM_FIELDS:
        if used + bits > 32:
            wi, used = wi + 1, 0
        out[name] = (wi, used, bits, signed)
        used += bits
    return out


GEOM = _geom_positions()


def geom(record: Value, name: str) -> Value:
    wi, lsb, bits, signed = GEOM[name]
    v = word(record, wi)[lsb:lsb + bits]
    return v.as_signed() if signed else v


def opcode(record: Value) -> Value:
    return word(record, 0)[0:8]


def epilogue_id(record: Value) -> Value:
    """The record's epilogue (word 0, bits 8..15: arch/encoding.py ``EPILOGUE_IDS``)."""
    return word(record, 0)[8:16]


def n_inputs(record: Value) -> Value:
    return word(record, 0)[16:20]


def n_outputs(record: Value) -> Value:
    return word(record, 0)[20:24]


def oc0(record: Value) -> Value:
    return word(record, 2)[0:16]


def oc1(record: Value) -> Value:
    return word(record, 2)[16:32]


def weights_addr(record: Value) -> Value:
    return word(record, 13)


def weights_bytes(record: Value) -> Value:
    return word(record, 14)


def params_addr(record: Value) -> Value:
    return word(record, 15)


def params_bytes(record: Value) -> Value:
    return word(record, 16)


@dataclass
class Operand:
    """Operand ``k`` (inputs first, then outputs): space, element bits, signedness, shape, address."""
    space: Value
    bits: Value
    signed: Value
    d0: Value
    d1: Value
    d2: Value
    addr: Value

    @property
    def elem_bytes(self) -> Value:
        return (self.bits + 7) >> 3

    @property
    def plane(self) -> Value:
        """Elements per channel (``H W`` of a ``(C, H, W)`` map; 1 for a vector)."""
        return self.d1 * self.d2

    @property
    def size(self) -> Value:
        return self.d0 * self.d1 * self.d2 * self.elem_bytes


def operand(record: Value, k: int) -> Operand:
    head = word(record, encoding.OPERAND_WORDS + 3 * k)
    dims = word(record, encoding.OPERAND_WORDS + 3 * k + 2)
    return Operand(space=head[0:2], bits=head[2:7], signed=head[7], d0=head[16:32], d1=dims[0:16],
                   d2=dims[16:32], addr=word(record, encoding.OPERAND_WORDS + 3 * k + 1))


def align(v: Value) -> Value:
    """Rounded up to the program's table alignment (arch/program.py ``ALIGN``)."""
    return (v + ALIGN - 1) & ~(ALIGN - 1)


def param_offsets(m, record: Value, epilogue: str, cfg: AccelConfig) -> dict[str, Signal]:
    """Byte offset of each parameter table of ``epilogue`` inside the operation's parameter block:
    the tables follow each other in ``PARAMS`` order, each on an ``ALIGN`` boundary (as
    arch/program.py lays them out), with lengths from the record's channel range and geometry."""
    F = formats(cfg)
    hd = geom(record, "heads") * geom(record, "dim")
    sizes = {"C": oc1(record) - oc0(record), "CIN": geom(record, "cin"), "HD": hd, "H": geom(record, "heads"),
             "HDF": Mux(geom(record, "div_frac") != 0, hd, 0), 1: 1}
    out, off = {}, 0
    for name, fmt, count in PARAMS[epilogue]:
        s = Signal(32, name=f"poff_{epilogue}_{name}")
        m.d.comb += s.eq(off)
        out[name] = s
        off = align(s + sizes[count] * getattr(F, fmt).numpy_dtype.itemsize)
    return out


def param_bytes(cfg: AccelConfig, fmt: str) -> int:
    """Bytes of one stored entry of a parameter table of element format ``fmt``."""
    return getattr(formats(cfg), fmt).numpy_dtype.itemsize


def param_fields(cfg: AccelConfig, epilogue: str, names=None) -> list[tuple[str, int, bool]]:
    """``(name, entry bytes, signed)`` of the tables of ``epilogue`` (all, or ``names`` in that order):
    what :class:`rtl.staged.ScalarFetch` takes."""
    F = formats(cfg)
    fmts = {name: fmt for name, fmt, _ in PARAMS[epilogue]}
    unknown = set(names or ()) - set(fmts)
    if unknown:
        raise ValueError(f"epilogue {epilogue!r} has no tables {sorted(unknown)}")
    return [(n, param_bytes(cfg, fmts[n]), getattr(F, fmts[n]).signed) for n in (names or fmts)]
