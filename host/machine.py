"""Host driver, DRAM side: lay out the DRAM image, run the program, read the logits back.

:class:`AsyncMachine` joins the register driver (host/driver.py) with a memory backend that writes
and reads the DRAM the accelerator's AXI master sees::

    mem.write(addr, data: bytes)        # or async
    mem.read(addr, length) -> bytes     # or async

(byte addresses on the AXI bus). Backends: cocotbext-axi's ``AxiRam`` in the testbench
(tb/machine_cocotb.py, it has exactly these two methods), :class:`DevMemBuffer` on a board (a
physically contiguous buffer reserved for the accelerator, e.g. a ``reserved-memory`` node, mapped
through /dev/mem), or PYNQ's ``allocate`` buffer through :class:`PynqBuffer`. Board paths cannot be
tested here.

The DRAM image is golden/'s (golden/program.py ``dram_image``: the binary program at its address,
the weights and every parameter table in its element format), so the host and the reference model
cannot disagree about where anything lies::

    prog = compile_ir(ir, cfg); image = golden.program.dram_image(prog, convert.from_ir(ir))
    m = AsyncMachine(AsyncRegisters(mmio), mem, base=0x7000_0000)
    await m.load(prog, image)                 # once per model
    logits = await m.infer(prog, pixels)      # per image: input in, start, wait, logits out
"""
from __future__ import annotations

import inspect
import mmap
import os

import numpy as np

from arch import formats
from arch.program import Program

from .driver import AsyncRegisters, DriverError, DevMemError, _run_sync


async def _maybe(v):
    return await v if inspect.isawaitable(v) else v


class AsyncMachine:
    """One accelerator and its DRAM image at byte address ``base`` of the bus."""

    def __init__(self, regs: AsyncRegisters, mem, base: int):
        if base < 0 or base % 64:
            raise ValueError(f"the DRAM image's base {base:#x} must be a non-negative multiple of 64 "
                             "(the program's alignment)")
        self.regs, self.mem, self.base = regs, mem, base
        self.program: Program | None = None

    async def load(self, program: Program, image: np.ndarray) -> None:
        """Write the DRAM image (program, weights, tables) and check the hardware runs this configuration."""
        image = np.asarray(image, np.uint8)
        if image.size != program.dram_bytes:
            raise ValueError(f"the DRAM image has {image.size} bytes, the program lays out {program.dram_bytes}")
        await self.regs.check_config(program.config)
        await _maybe(self.mem.write(self.base, image.tobytes()))
        self.program = program

    def _loaded(self) -> Program:
        if self.program is None:
            raise DriverError("no program loaded: call load(program, image) first")
        return self.program

    async def write_tensor(self, name: str, value) -> None:
        p = self._loaded()
        t = p.tensors[name]
        if t.space != "dram":
            raise ValueError(f"tensor {name!r} lives in the {t.space} space, not in DRAM")
        value = np.asarray(value)
        if value.shape != tuple(t.shape):
            raise ValueError(f"tensor {name!r} has shape {tuple(t.shape)}, got {value.shape}")
        raw = formats.tensor_format(t.bits, t.signed).pack(value, f"tensor {name}")
        await _maybe(self.mem.write(self.base + t.addr, raw.tobytes()))

    async def read_tensor(self, name: str) -> np.ndarray:
        p = self._loaded()
        t = p.tensors[name]
        if t.space != "dram":
            raise ValueError(f"tensor {name!r} lives in the {t.space} space; only DRAM tensors can be read back")
        fmt = formats.tensor_format(t.bits, t.signed)
        n = int(np.prod(t.shape))
        raw = await _maybe(self.mem.read(self.base + t.addr, n * fmt.numpy_dtype.itemsize))
        return fmt.unpack(raw, n).reshape(t.shape)

    async def start(self, irq: bool = True) -> None:
        p = self._loaded()
        await self.regs.start(program_base=self.base + p.program_addr, ops=len(p.ops), dram_base=self.base, irq=irq)

    async def infer(self, pixels, timeout_s: float = 10.0) -> tuple[np.ndarray, dict]:
        """Logits ``(1, classes)`` of one uint8 image ``(3, H, W)`` and the run's counters."""
        p = self._loaded()
        await self.write_tensor(p.input, pixels)
        await self.start()
        await self.regs.wait_done(timeout_s)
        counters = await self.regs.counters()
        await self.regs.acknowledge()
        return (await self.read_tensor(p.output))[None], counters


class Machine:
    """:class:`AsyncMachine` over synchronous register and memory backends (a board)."""

    def __init__(self, regs_mmio, mem, base: int):
        from .driver import _SyncAsAsync
        self._m = AsyncMachine(AsyncRegisters(_SyncAsAsync(regs_mmio)), mem, base)

    def load(self, program: Program, image) -> None:
        _run_sync(self._m.load(program, image))

    def infer(self, pixels, timeout_s: float = 10.0):
        return _run_sync(self._m.infer(pixels, timeout_s))


class DevMemBuffer:
    """A physically contiguous DRAM buffer through /dev/mem (root; the range reserved for the
    accelerator so Linux does not use it). ``write`` / ``read`` take bus addresses inside it."""

    def __init__(self, phys: int, size: int, path: str = "/dev/mem"):
        self.phys, self.size = phys, size
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_SYNC)
        except OSError as e:
            raise DevMemError(f"cannot open {path} ({e.strerror}): needs root, and a kernel that lets "
                              "/dev/mem map the reserved DRAM range") from e
        self._mm = mmap.mmap(self._fd, size, offset=phys)

    def _range(self, addr: int, n: int) -> int:
        off = addr - self.phys
        if off < 0 or off + n > self.size:
            raise ValueError(f"bytes {addr:#x}..{addr + n:#x} lie outside the buffer {self.phys:#x} + {self.size:#x}")
        return off

    def write(self, addr: int, data: bytes) -> None:
        off = self._range(addr, len(data))
        self._mm[off:off + len(data)] = data

    def read(self, addr: int, n: int) -> bytes:
        off = self._range(addr, n)
        return bytes(self._mm[off:off + n])


class PynqBuffer:
    """A ``pynq.allocate`` buffer (uint8): bus addresses from its ``physical_address``."""

    def __init__(self, buf):
        self.buf, self.phys = buf, int(buf.physical_address)

    def write(self, addr: int, data: bytes) -> None:
        off = addr - self.phys
        self.buf[off:off + len(data)] = np.frombuffer(data, np.uint8)
        self.buf.flush()

    def read(self, addr: int, n: int) -> bytes:
        off = addr - self.phys
        self.buf.invalidate()
        return bytes(self.buf[off:off + n])
