"""The program in binary, as the machine fetches it from DRAM (docs/program_format.md, "Binary form").

A header of :data:`HEADER_BYTES` at the program's address, then one record of
:data:`RECORD_BYTES` per operation: little-endian 32-bit words with every field
the machine needs to run the operation (opcode, epilogue, channel range,
geometry, operand widths, code ranges, the addresses of its weights and of its
parameter block, and a descriptor of each operand: space, element format,
address, shape). Names are not encoded: the machine addresses tensors by
placement. :func:`decode` rebuilds a :class:`~arch.program.Program` from the
bytes alone; golden/program.py executes that and must get the same bits
(tests), which is what shows the encoding carries everything.

Parameter tables are not listed one by one: an operation's tables lie one after
the other from its parameter block's address, each starting on a 64-byte
boundary, in the order and lengths :data:`arch.program.PARAMS` gives for its
epilogue (the compiler lays them out that way).
"""
from __future__ import annotations

import struct

import numpy as np

from .config import AccelConfig
from .program import OPCODES, PARAMS, Group, Op, Program, Tensor, align, param_tables

MAGIC = b"TVPG"
BINARY_VERSION = 1
HEADER_BYTES = 64
HEADER_DRAM_BYTES = 44                 # byte offset of the DRAM image's size in the header
RECORD_BYTES = 128
NONE = 0xFFFFFFFF                      # an absent address
MAX_OPERANDS = 5                       # 3 inputs + 2 outputs
OPERAND_WORDS = 17                     # record word of the first operand descriptor (3 words each)
OPCODE_IDS = {name: i + 1 for i, name in enumerate(OPCODES)}       # 0 is never a valid opcode
EPILOGUE_IDS = {"": 0, **{name: i + 1 for i, name in enumerate(PARAMS)}}
SPACE_IDS = {"act": 0, "dram": 1, "line": 2}
GEOM_FIELDS = (                        # (name, bits, signed): packed into words 3..12, in order
    ("cin", 16, False), ("cout", 16, False), ("h", 16, False), ("w", 16, False), ("oh", 16, False),
    ("ow", 16, False), ("k", 8, False), ("stride", 8, False), ("pad", 8, False), ("x_bits", 8, False),
    ("groups", 16, False), ("w_bits", 8, False), ("kv_bits", 8, False), ("heads", 16, False), ("dim", 16, False),
    ("out_offset", 16, False), ("code_bits", 8, False), ("frac_bits", 8, False), ("recip_bits", 8, False),
    ("bands", 16, False), ("div_frac", 8, False), ("lo", 16, True), ("hi", 16, True), ("pre_lo", 16, True),
    ("pre_hi", 16, True))


def _check(v: int, bits: int, signed: bool, what: str) -> int:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= v <= hi:
        raise ValueError(f"{what} = {v} does not fit its {bits}-bit field of the binary program")
    return v & ((1 << bits) - 1)


def _pack_bits(values: list[tuple[int, int]]) -> list[int]:
    """(value, bits) pairs packed LSB first into 32-bit words (a field never straddles a word)."""
    words, cur, used = [], 0, 0
    for v, bits in values:
        if used + bits > 32:
            words.append(cur)
            cur, used = 0, 0
        cur |= v << used
        used += bits
    words.append(cur)
    return words


def _unpack_bits(words: list[int], fields) -> dict:
    out, wi, used = {}, 0, 0
    for name, bits, signed in fields:
        if used + bits > 32:
            wi, used = wi + 1, 0
        v = (words[wi] >> used) & ((1 << bits) - 1)
        if signed and v >> (bits - 1):
            v -= 1 << bits
        out[name] = v
        used += bits
    return out


def _operand(t: Tensor, line_id: int = 0) -> list[int]:
    """Space, element format, shape and address of an operand; a line tensor has no address, its
    address field holds the id of its stream between two engines."""
    shape = list(t.shape) + [1] * (3 - len(t.shape))
    head = (SPACE_IDS[t.space] | _check(t.bits, 5, False, f"{t.name} bits") << 2 | int(t.signed) << 7
            | len(t.shape) << 8 | _check(shape[0], 16, False, f"{t.name} dim 0") << 16)
    addr = line_id if t.space == "line" else _check(t.addr, 32, False, f"{t.name} address")
    return [head, addr, _check(shape[1], 16, False, f"{t.name} dim 1") | _check(shape[2], 16, False, f"{t.name} dim 2") << 16]


def line_ids(program: Program) -> dict[str, int]:
    return {n: i for i, n in enumerate(n for n, t in program.tensors.items() if t.space == "line")}


def encode_op(op: Op, program: Program, lines: dict[str, int] | None = None) -> bytes:
    g = dict(op.geom, bands=program.groups[op.group].bands, lo=op.lo, hi=op.hi)
    g.setdefault("div_frac", 0)
    operands = op.inputs + op.outputs
    if len(op.inputs) > 3 or len(op.outputs) > 2:
        raise ValueError(f"op {op.index}: {len(op.inputs)} inputs / {len(op.outputs)} outputs exceed the record")
    words = [OPCODE_IDS[op.opcode] | EPILOGUE_IDS[op.epilogue] << 8 | len(op.inputs) << 16 | len(op.outputs) << 20,
             _check(op.index, 16, False, "op index") | _check(op.group, 16, False, "group") << 16,
             _check(op.oc0, 16, False, "oc0") | _check(op.oc1, 16, False, "oc1") << 16]
    geom = _pack_bits([(_check(int(g.get(n, 0)), b, s, f"op {op.index} {n}"), b) for n, b, s in GEOM_FIELDS])
    words += geom + [0] * (10 - len(geom))
    words += [NONE if op.weights < 0 else op.weights, op.weight_bytes,
              op.params[0].addr if op.params else NONE, op.param_span]
    lines = line_ids(program) if lines is None else lines
    for name in operands:
        words += _operand(program.tensors[name], lines.get(name, 0))
    words += [0] * (RECORD_BYTES // 4 - len(words))
    return struct.pack(f"<{RECORD_BYTES // 4}I", *words)


def encode(program: Program) -> bytes:
    """Header + one record per operation."""
    t_in, t_out = program.tensors[program.input], program.tensors[program.output]
    header = struct.pack("<4sIIII", MAGIC, BINARY_VERSION, len(program.ops), len(program.groups),
                         int(program.config.key()[:8], 16))
    header += b"".join(struct.pack("<3I", *_operand(t)) for t in (t_in, t_out))
    header += struct.pack("<I", _check(program.dram_bytes, 32, False, "dram_bytes"))
    header += bytes(HEADER_BYTES - len(header))
    lines = line_ids(program)
    return header + b"".join(encode_op(op, program, lines) for op in program.ops)


def program_bytes(n_ops: int) -> int:
    return align(HEADER_BYTES + n_ops * RECORD_BYTES)


# --------------------------------------------------------------------------- decoding
def _decode_operand(words, tensors: dict) -> str:
    head, addr, dims = words
    space = {v: k for k, v in SPACE_IDS.items()}.get(head & 3)
    if space is None:
        raise ValueError(f"operand descriptor with unknown space {head & 3}")
    ndim = (head >> 8) & 0xFF
    shape = ((head >> 16) & 0xFFFF, dims & 0xFFFF, dims >> 16)[:ndim]
    bits, signed = (head >> 2) & 0x1F, bool((head >> 7) & 1)
    # names are placements; one address may hold tensors of different shapes at different times
    name = f"line#{addr}" if space == "line" else f"{space}@{addr:#x}:{'x'.join(map(str, shape))}:{bits}{'s' * signed}"
    if name not in tensors:
        n = int(np.prod(shape))
        tensors[name] = Tensor(name, tuple(shape), bits, signed, space, -1 if space == "line" else addr,
                               n * -(-bits // 8))
    return name


def decode(buf: bytes | np.ndarray, base: int, config: AccelConfig) -> Program:
    """The program at ``base`` of a DRAM image, rebuilt from its bytes alone (names are placements)."""
    raw = bytes(np.asarray(buf, dtype=np.uint8)[base:base + HEADER_BYTES]) if isinstance(buf, np.ndarray) \
        else bytes(buf[base:base + HEADER_BYTES])
    magic, version, n_ops, n_groups, key = struct.unpack_from("<4sIIII", raw)
    if magic != MAGIC:
        raise ValueError(f"no program at {base:#x} (magic {magic!r}, expected {MAGIC!r})")
    if version != BINARY_VERSION:
        raise ValueError(f"binary program version {version}; this decoder reads {BINARY_VERSION}")
    if key != int(config.key()[:8], 16):
        raise ValueError(f"the program was compiled for configuration {key:08x}, not {config.name} "
                         f"({config.key()[:8]})")
    tensors: dict[str, Tensor] = {}
    hw = struct.unpack_from("<6I", raw, 20)
    t_in, t_out = _decode_operand(hw[0:3], tensors), _decode_operand(hw[3:6], tensors)
    (dram_bytes,) = struct.unpack_from("<I", raw, HEADER_DRAM_BYTES)
    body = np.asarray(buf, dtype=np.uint8)[base + HEADER_BYTES:base + HEADER_BYTES + n_ops * RECORD_BYTES]
    words_all = np.frombuffer(bytes(body), dtype="<u4").reshape(n_ops, RECORD_BYTES // 4)
    opcodes = {v: k for k, v in OPCODE_IDS.items()}
    epilogues = {v: k for k, v in EPILOGUE_IDS.items()}
    ops, bands = [], {}
    for words in words_all.tolist():
        code = words[0] & 0xFF
        if code not in opcodes:
            raise ValueError(f"op record {len(ops)}: unknown opcode {code}")
        opcode, epilogue = opcodes[code], epilogues.get((words[0] >> 8) & 0xFF)
        if epilogue is None:
            raise ValueError(f"op record {len(ops)}: unknown epilogue {(words[0] >> 8) & 0xFF}")
        n_in, n_out = (words[0] >> 16) & 0xF, (words[0] >> 20) & 0xF
        g = _unpack_bits(words[3:13], GEOM_FIELDS)
        bands[words[1] >> 16] = g.pop("bands")
        lo, hi = g.pop("lo"), g.pop("hi")
        if not g["div_frac"]:      # only a divisor with a mantissa bit carries it (Op.geom leaves it out otherwise)
            g.pop("div_frac")
        names = [_decode_operand(words[OPERAND_WORDS + 3 * i:OPERAND_WORDS + 3 * i + 3], tensors)
                 for i in range(n_in + n_out)]
        op = Op(words[1] & 0xFFFF, opcode, f"op{len(ops)}", words[1] >> 16, names[:n_in], names[n_in:], epilogue,
                words[2] & 0xFFFF, words[2] >> 16, {k: v for k, v in g.items()}, lo, hi,
                -1 if words[13] == NONE else words[13], words[14])
        addr = words[15]
        for p in param_tables(op, config):
            p.addr, addr = addr, align(addr + p.bytes)
            op.params.append(p)
        if op.param_span != words[16]:
            raise ValueError(f"op record {op.index}: parameter block of {words[16]} bytes, the schema gives "
                             f"{op.param_span}")
        ops.append(op)
    for op in ops:
        for name in op.outputs:
            tensors[name].first = op.index if tensors[name].first < 0 else tensors[name].first
    prog = Program("(binary)", tensors[t_in].shape[-1], tensors[t_out].shape[0], config, tensors, ops,
                   [Group(i, [op.index for op in ops if op.group == i], bands.get(i, 1)) for i in range(n_groups)],
                   dram_bytes, t_in, t_out)
    return prog
