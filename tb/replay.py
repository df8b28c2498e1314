"""Golden DRAM states of a program, and one-operation programs to replay an operation on the RTL.

With the compiler's ``on_chip=False`` placement every tensor lives in DRAM, so golden/program.py's
memory model gives the whole DRAM image before and after every operation. ``single_op_image``
turns the state before operation ``k`` into an image whose program is that one operation (index 0):
the machine runs it, and the DRAM it leaves must equal golden's state after ``k`` byte for byte,
outside the program bytes (tb/test_executors.py, tb/run_network.py).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from arch import encoding, formats
from arch.compiler import compile_ir
from arch.program import Group, Program


def dram_program(ir, cfg, resolution: int | None = None) -> tuple[Program, dict, np.ndarray]:
    """The program of ``ir`` (at ``resolution``, default the model's) with every tensor in DRAM, the
    integer model, and its DRAM image."""
    from golden import convert, program
    prog = compile_ir(ir, cfg, resolution=resolution, on_chip=False)
    model = convert.from_ir(ir)
    return prog, model, program.dram_image(prog, model)


def with_input(prog: Program, image: np.ndarray, pixels) -> np.ndarray:
    t = prog.tensors[prog.input]
    out = np.array(image, np.uint8, copy=True)
    raw = formats.tensor_format(t.bits, t.signed).pack(np.asarray(pixels), "input image")
    out[t.addr:t.addr + raw.size] = raw
    return out


def golden_states(prog: Program, image: np.ndarray, pixels) -> list[np.ndarray]:
    """DRAM before operation 0 (the input written), then after every operation."""
    from golden import program
    states = [with_input(prog, image, pixels)]
    program.run(prog, image, pixels, trace=lambda op, mem: states.append(mem.dram.copy()))
    return states


def golden_final(prog: Program, image: np.ndarray, pixels) -> np.ndarray:
    """DRAM after the whole program: with every tensor at its own DRAM address it holds every
    intermediate result too."""
    from golden import program
    last = {}
    program.run(prog, image, pixels, trace=lambda op, mem: last.__setitem__("dram", mem.dram))
    return last["dram"].copy()


def first_bad_op(prog: Program, got: np.ndarray, want: np.ndarray) -> int | None:
    """The first operation (in program order) whose output channels differ between two final images."""
    for op in prog.ops:
        for name in op.outputs:
            t = prog.tensors[name]
            if t.space == "dram" and not np.array_equal(got[t.addr:t.addr + t.bytes], want[t.addr:t.addr + t.bytes]):
                return op.index
    return None


def single_op_program(prog: Program, k: int) -> Program:
    op = dataclasses.replace(prog.ops[k], index=0, group=0)
    return dataclasses.replace(prog, ops=[op], groups=[Group(0, [0], prog.groups[prog.ops[k].group].bands)])


def single_op_image(prog: Program, k: int, before: np.ndarray) -> np.ndarray:
    """``before`` with operation ``k`` alone as the program (at the program's address)."""
    binary = np.frombuffer(encoding.encode(single_op_program(prog, k)), np.uint8)
    out = np.array(before, np.uint8, copy=True)
    out[prog.program_addr:prog.program_addr + binary.size] = binary
    return out


def program_span(prog: Program) -> slice:
    """The bytes of the (whole) binary program in the image."""
    return slice(prog.program_addr, prog.program_addr + encoding.program_bytes(len(prog.ops)))


def first_difference(prog: Program, got: np.ndarray, want: np.ndarray) -> str | None:
    """None when the images agree outside the program; else which tensor (or region) differs first."""
    diff = np.flatnonzero(got != want)
    span = program_span(prog)
    diff = diff[(diff < span.start) | (diff >= span.stop)]
    if diff.size == 0:
        return None
    a = int(diff[0])
    for t in prog.tensors.values():
        if t.space == "dram" and t.addr <= a < t.addr + t.bytes:
            return f"tensor {t.name} (byte {a - t.addr} of {t.bytes}; {diff.size} bytes differ in the image)"
    return f"byte {a:#x} outside every tensor ({diff.size} bytes differ)"
