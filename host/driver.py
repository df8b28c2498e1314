"""Host driver, register side: start the accelerator, wait for it, read its counters.

Every register and field is found by name in :mod:`arch.regmap` (the same
list rtl/regs.py and docs/register_map.md come from); nothing here hard-codes
an offset. The driver talks to a tiny MMIO backend:

* synchronous: ``read32(offset) -> int`` and ``write32(offset, value)``
  (byte offsets from the register block's base) -- :class:`DevMem` (a board
  running Linux: /dev/mem mapped at the block's base address),
  :class:`PynqMMIO` (wraps ``pynq.MMIO``), or anything with those two methods;
* asynchronous: ``async read32`` / ``async write32`` (optionally ``async
  sleep(seconds)``, ``now() -> seconds`` and ``poll_s``) --
  :class:`CocotbAxiLite` wraps cocotbext-axi's ``AxiLiteMaster`` in the
  testbench (tb/regs_cocotb.py).

:class:`AsyncRegisters` is the driver (coroutines); :class:`Registers` runs
the very same coroutines over a synchronous backend, so the testbench and a
board execute one implementation::

    # board (as root; base address from the Vivado address editor)
    from arch.config import get_preset
    from host.driver import DevMem, Registers
    regs = Registers(DevMem(0xA000_0000))
    regs.check_config(get_preset("zcu102"))
    regs.start(program_base=..., ops=..., dram_base=...)
    regs.wait_done(timeout_s=1.0)
    print(regs.counters())

    # PYNQ
    from pynq import MMIO
    regs = Registers(PynqMMIO(MMIO(0xA000_0000, 0x1000)))

Board access cannot be tested here: /dev/mem needs root and a kernel that
allows it (``CONFIG_STRICT_DEVMEM`` blocks RAM, not device ranges; some
kernels need ``iomem=relaxed``); :class:`DevMem` raises :class:`DevMemError`
saying so. The DRAM-image side (laying out the program, weights and input in
DRAM, reading the logits back) is a later piece: it will own a memory
backend beside the register backend and call :meth:`Registers.run` with the
addresses it chose.
"""
from __future__ import annotations

import functools
import mmap
import os
import time

from arch.regmap import DESIGN_ID, VERSION_MAJOR, VERSION_MINOR, WINDOW_BYTES, ErrorCode, RegisterMap, \
    config_key, register_map

MASK32 = 0xFFFF_FFFF


class DriverError(RuntimeError):
    """Base of the driver's errors."""


class BusError(DriverError):
    """The bus answered a register access with SLVERR / DECERR."""


class ConfigMismatch(DriverError):
    """The hardware is not the design, register-map version or configuration the host expects."""


class AcceleratorBusy(DriverError):
    """A start was requested while a program runs."""


class AcceleratorError(DriverError):
    """The machine stopped with STATUS.ERROR; ``code`` is the ERROR_CODE, ``op_index`` ERROR_OP."""

    def __init__(self, code: int, op_index: int):
        self.code = code
        self.op_index = op_index
        self.name = error_name(code)
        super().__init__(f"accelerator stopped with error {self.name} (code {code}) after {op_index} "
                         "completed operations")


class DevMemError(DriverError):
    """/dev/mem cannot be opened or mapped."""


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


# --- the driver ----------------------------------------------------------------------------

class AsyncRegisters:
    """The accelerator's registers over an asynchronous MMIO backend (``await mmio.read32(offset)``)."""

    def __init__(self, mmio, regmap: RegisterMap | None = None):
        self.mmio = mmio
        self.map = regmap if regmap is not None else register_map()
        self._irq_enabled = False       # CTRL.IRQ_EN as the last start() wrote it

    # time: the backend's own clock (simulated time under cocotb), else the wall clock
    def _now(self) -> float:
        now = getattr(self.mmio, "now", None)
        return now() if now is not None else time.monotonic()

    async def _sleep(self, seconds: float) -> None:
        sleep = getattr(self.mmio, "sleep", None)
        if sleep is not None:
            await sleep(seconds)
        elif seconds > 0:
            import asyncio
            await asyncio.sleep(seconds)

    # --- raw access by name ------------------------------------------------------------
    async def read(self, name: str) -> int:
        return int(await self.mmio.read32(self.map[name].offset)) & MASK32

    async def write(self, name: str, value: int) -> None:
        value = int(value)
        if not 0 <= value <= MASK32:
            raise ValueError(f"{name}: {value} does not fit 32 bits")
        await self.mmio.write32(self.map[name].offset, value)

    async def read_fields(self, name: str) -> dict[str, int]:
        return self.map.decode(name, await self.read(name))

    async def write_fields(self, name: str, **fields: int) -> None:
        """Write a register from field values; fields not named are written 0."""
        await self.write(name, self.map.encode(name, **fields))

    async def read64(self, name: str) -> int:
        """A 64-bit quantity: ``_LO`` first (which snapshots the counter's upper half), then ``_HI``."""
        lo = await self.read(f"{name}_LO")
        hi = await self.read(f"{name}_HI")
        return hi << 32 | lo

    async def write64(self, name: str, value: int) -> None:
        value = int(value)
        if not 0 <= value < 1 << 64:
            raise ValueError(f"{name}: {value} does not fit 64 bits")
        await self.write(f"{name}_LO", value & MASK32)
        await self.write(f"{name}_HI", value >> 32)

    # --- the machine -------------------------------------------------------------------------
    async def identify(self) -> dict:
        """ID's fields and CONFIG_KEY."""
        ident = await self.read_fields("ID")
        ident["CONFIG_KEY"] = await self.read("CONFIG_KEY")
        return ident

    async def check_config(self, cfg) -> dict:
        """Raise ConfigMismatch unless the hardware is this design, a compatible register-map version
        (same major, minor at least the driver's) and generated for ``cfg`` (an AccelConfig)."""
        ident = await self.identify()
        if ident["DESIGN"] != DESIGN_ID:
            raise ConfigMismatch(f"no Trio-ViT accelerator here: ID reads 0x{await self.read('ID'):08X} "
                                 f"(design 0x{ident['DESIGN']:04X}, expected 0x{DESIGN_ID:04X})")
        if ident["MAJOR"] != VERSION_MAJOR or ident["MINOR"] < VERSION_MINOR:
            raise ConfigMismatch(f"register map version {ident['MAJOR']}.{ident['MINOR']} in hardware, "
                                 f"the driver needs {VERSION_MAJOR}.{VERSION_MINOR} or a later minor")
        want = config_key(cfg)
        if ident["CONFIG_KEY"] != want:
            raise ConfigMismatch(f"the hardware was generated for configuration key "
                                 f"{ident['CONFIG_KEY']:08x}, the host compiled for {cfg.name!r} "
                                 f"({want:08x}, AccelConfig.key() {cfg.key()})")
        return ident

    async def status(self) -> dict[str, int]:
        return await self.read_fields("STATUS")

    async def start(self, program_base: int, ops: int, dram_base: int, irq: bool = False) -> None:
        """Program the addresses and the operation count, then write CTRL.START (the start clears
        DONE, ERROR and every counter). Raises AcceleratorBusy while a program runs."""
        for what, v, bits in (("program_base", program_base, 64), ("ops", ops, 32), ("dram_base", dram_base, 64)):
            if not 0 <= int(v) < 1 << bits:
                raise ValueError(f"{what} = {v} does not fit {bits} bits")
        if (await self.status())["BUSY"]:
            raise AcceleratorBusy("the accelerator is busy (STATUS.BUSY); wait_done() first")
        await self.write64("PROGRAM_BASE", program_base)
        await self.write("PROGRAM_OPS", ops)
        await self.write64("DRAM_BASE", dram_base)
        await self.write_fields("CTRL", START=1, IRQ_EN=int(bool(irq)))
        self._irq_enabled = bool(irq)

    async def wait_done(self, timeout_s: float = 10.0, poll_s: float | None = None) -> dict[str, int]:
        """Poll STATUS until DONE (returns STATUS's fields) or ERROR (raises AcceleratorError naming
        the ERROR_CODE); TimeoutError after ``timeout_s`` seconds of the backend's clock."""
        poll_s = getattr(self.mmio, "poll_s", 1e-5) if poll_s is None else poll_s
        t0 = self._now()
        wait_irq = getattr(self.mmio, "wait_irq", None)
        if wait_irq is not None and self._irq_enabled:   # a backend that sees the line sleeps on it first
            await wait_irq(timeout_s)
        while True:
            st = await self.status()
            if st["ERROR"]:
                raise AcceleratorError(await self.read("ERROR_CODE"), await self.read("ERROR_OP"))
            if st["DONE"]:
                return st
            if self._now() - t0 > timeout_s:
                raise TimeoutError(f"accelerator not done after {timeout_s} s: STATUS {st}, "
                                   f"OPS_DONE {await self.read('OPS_DONE')}")
            await self._sleep(poll_s)

    async def acknowledge(self) -> None:
        """Clear STATUS.DONE and STATUS.ERROR (and with it the interrupt line)."""
        await self.write_fields("STATUS", DONE=1, ERROR=1)

    async def counters(self) -> dict[str, int]:
        """``cycles``, ``ops_done`` and ``<engine>_busy`` of the last run (lower-case register names)."""
        out = {}
        for name in self.map.counters:
            out[name.lower()] = await self.read64(name)
        out["ops_done"] = await self.read("OPS_DONE")
        return out

    async def run(self, program_base: int, ops: int, dram_base: int, timeout_s: float = 10.0) -> dict[str, int]:
        """start + wait_done; returns the counters."""
        await self.start(program_base, ops, dram_base)
        await self.wait_done(timeout_s)
        return await self.counters()


def _run_sync(coro):
    """Run a coroutine that never suspends (its backend is synchronous) to completion."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("the MMIO backend suspended: use AsyncRegisters for an asynchronous backend")


class _SyncAsAsync:
    """A synchronous backend seen as an asynchronous one whose coroutines never suspend."""

    def __init__(self, mmio):
        self.inner = mmio
        self.poll_s = getattr(mmio, "poll_s", 1e-5)

    async def read32(self, offset: int) -> int:
        return self.inner.read32(offset)

    async def write32(self, offset: int, value: int) -> None:
        self.inner.write32(offset, value)

    def now(self) -> float:
        now = getattr(self.inner, "now", None)
        return now() if now is not None else time.monotonic()

    async def sleep(self, seconds: float) -> None:
        sleep = getattr(self.inner, "sleep", None)
        if sleep is not None:
            sleep(seconds)
        elif seconds > 0:
            time.sleep(seconds)


class Registers:
    """The accelerator's registers over a synchronous MMIO backend (``mmio.read32(offset)``): the same
    methods as :class:`AsyncRegisters`, returning their results directly."""

    def __init__(self, mmio, regmap: RegisterMap | None = None):
        self.mmio = mmio
        self._async = AsyncRegisters(_SyncAsAsync(mmio), regmap)
        self.map = self._async.map


def _sync_method(name):
    amethod = getattr(AsyncRegisters, name)

    @functools.wraps(amethod)
    def method(self, *args, **kwargs):
        return _run_sync(getattr(self._async, name)(*args, **kwargs))
    return method


for _name in ("read", "write", "read_fields", "write_fields", "read64", "write64", "identify", "check_config",
              "status", "start", "wait_done", "acknowledge", "counters", "run"):
    setattr(Registers, _name, _sync_method(_name))
del _name


# --- backends ----------------------------------------------------------------------------------

def _check_offset(offset: int, size: int) -> int:
    offset = int(offset)
    if offset % 4 or not 0 <= offset < size:
        raise ValueError(f"register offset 0x{offset:x} is not a word inside the 0x{size:x}-byte window")
    return offset


class DevMem:
    """The register block mapped from /dev/mem at physical address ``base`` (a board running Linux).

    Needs root (or CAP_SYS_RAWIO) and a kernel that lets /dev/mem reach the AXI
    address (``base``: the Vivado address editor's offset of the block's
    ``s_axi``). Accesses are single aligned 32-bit loads and stores through a
    ``memoryview`` of unsigned ints (little-endian hosts: Zynq's ARM cores).
    ``path`` exists for tests (any file can stand in for /dev/mem).
    """

    poll_s = 1e-5

    def __init__(self, base: int, size: int = WINDOW_BYTES, path: str = "/dev/mem"):
        import sys
        if sys.byteorder != "little":
            raise DevMemError("DevMem assumes a little-endian host (the register block is little-endian)")
        self.base, self.size, self.path = int(base), int(size), path
        page = mmap.PAGESIZE
        aligned = self.base & ~(page - 1)
        delta = self.base - aligned
        try:
            fd = os.open(path, os.O_RDWR | os.O_SYNC)
        except OSError as e:
            raise DevMemError(
                f"cannot open {path} ({e.strerror}): register access from Linux needs root (sudo) on the "
                "board, and a kernel that exposes the accelerator's AXI range through /dev/mem "
                "(or use PYNQ: Registers(PynqMMIO(pynq.MMIO(base, 0x1000))))") from e
        try:
            self._mm = mmap.mmap(fd, delta + self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                                 offset=aligned)
        except (OSError, ValueError) as e:
            raise DevMemError(f"cannot map {path} at 0x{self.base:x} (+0x{self.size:x}): {e}; is the base "
                              "address the one Vivado's address editor assigned to s_axi?") from e
        finally:
            os.close(fd)
        self._words = memoryview(self._mm)[delta:delta + self.size].cast("I")

    def read32(self, offset: int) -> int:
        return self._words[_check_offset(offset, self.size) >> 2]

    def write32(self, offset: int, value: int) -> None:
        self._words[_check_offset(offset, self.size) >> 2] = int(value) & MASK32

    def close(self) -> None:
        if self._mm is not None:
            self._words.release()
            self._mm.close()
            self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PynqMMIO:
    """Adapter for ``pynq.MMIO(base, length)`` (``read(offset)`` / ``write(offset, value)``)."""

    poll_s = 1e-5

    def __init__(self, mmio):
        self.inner = mmio

    def read32(self, offset: int) -> int:
        return int(self.inner.read(offset)) & MASK32

    def write32(self, offset: int, value: int) -> None:
        self.inner.write(offset, int(value) & MASK32)


class CocotbAxiLite:
    """Adapter for cocotbext-axi's ``AxiLiteMaster`` (the testbench): asynchronous, simulated time.

    Non-OKAY responses raise :class:`BusError`; ``sleep`` waits simulated time and ``now`` reads it, so
    ``wait_done(timeout_s=...)`` counts simulated seconds; ``poll_s`` 0 polls back to back.
    """

    poll_s = 0.0

    def __init__(self, master, base: int = 0, irq=None):
        self.master = master
        self.base = base
        self.irq = irq              # the DUT's interrupt line: wait_done sleeps on it (no bus polling)

    async def read32(self, offset: int) -> int:
        resp = await self.master.read(self.base + offset, 4)
        if int(resp.resp) != 0:
            raise BusError(f"read of offset 0x{offset:03x} answered {resp.resp!r}")
        return int.from_bytes(bytes(resp.data), "little")

    async def write32(self, offset: int, value: int) -> None:
        resp = await self.master.write(self.base + offset, (int(value) & MASK32).to_bytes(4, "little"))
        if int(resp.resp) != 0:
            raise BusError(f"write of offset 0x{offset:03x} answered {resp.resp!r}")

    def now(self) -> float:
        from cocotb.utils import get_sim_time
        return get_sim_time(unit="sec")

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            from cocotb.triggers import Timer
            await Timer(max(1, round(seconds * 1e12)), unit="ps")

    async def wait_irq(self, timeout_s: float) -> None:
        """Until the interrupt line rises (or ``timeout_s`` of simulated time); at once without one."""
        if self.irq is None or int(self.irq.value):
            return
        from cocotb.triggers import First, RisingEdge, Timer
        await First(RisingEdge(self.irq), Timer(max(1, round(timeout_s * 1e12)), unit="ps"))
