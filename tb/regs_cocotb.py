"""Cocotb side of tb/test_regs.py: the register block (rtl/regs.py ControlRegsAxi) through
cocotbext-axi's AxiLiteMaster on the Xilinx-named ports (aclk, aresetn, s_axi_*), driven by the host
driver (host/driver.py AsyncRegisters over CocotbAxiLite) where the driver has a method for it.

One cocotb test runs every check in turn; ``pauses`` in the case parameters adds random
valid / ready pauses on all five AXI channels. ``counter_start`` is the value a start clears the
64-bit counters to (just below 2**32, so runs cross the LO -> HI carry)."""
from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from arch.config import AccelConfig
from arch.regmap import ENGINES, Access, ErrorCode, register_map
from host.driver import AcceleratorBusy, AcceleratorError, AsyncRegisters, CocotbAxiLite, ConfigMismatch
from tb.cocotb_kit import load_case, pause_generator, write_result

OKAY, SLVERR = 0, 2
M64 = (1 << 64) - 1


def check(cond, what):
    if not cond:
        cocotb.log.error(f"MISMATCH {what}")
        raise AssertionError(f"MISMATCH {what}")


def expect(actual, expected, what):
    check(actual == expected, f"{what}: expected {expected:#x}, actual {actual:#x}"
          if isinstance(actual, int) and isinstance(expected, int) else f"{what}: expected {expected}, actual {actual}")


class Env:
    def __init__(self, dut, p):
        self.dut = dut
        self.p = p
        self.cfg = AccelConfig.from_dict(p["config"])
        self.rm = register_map(self.cfg)
        self.c0 = p["counter_start"]
        self.rng = random.Random(p["seed"])
        self.cycle = 0
        self.starts: list[int] = []
        for name in ("busy", "done", "error", "error_code", "op_done", "engine_busy"):
            getattr(dut, name).value = 0
        dut.aresetn.value = 0
        Clock(dut.aclk, 10, unit="ns").start()
        self.master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi"), dut.aclk, dut.aresetn,
                                    reset_active_level=False)
        self.regs = AsyncRegisters(CocotbAxiLite(self.master), self.rm)
        if p["pauses"]:
            prob = p["pauses"]
            w, r = self.master.write_if, self.master.read_if
            for ch in (w.aw_channel, w.w_channel, w.b_channel, r.ar_channel, r.r_channel):
                ch.set_pause_generator(pause_generator(self.rng, prob))
        cocotb.start_soon(self._monitor())


    async def _monitor(self):
        """Counts cycles and records the cycle of every start pulse (values settled after the edge)."""
        while True:
            await RisingEdge(self.dut.aclk)
            self.cycle += 1
            await ReadOnly()
            if int(self.dut.start.value):
                self.starts.append(self.cycle)

    async def reset(self):
        self.dut.aresetn.value = 0
        await self.cycles(4)
        self.dut.aresetn.value = 1
        await self.cycles(2)

    async def cycles(self, n):
        for _ in range(n):
            await RisingEdge(self.dut.aclk)

    # raw bus access (responses checked by the caller)
    async def raw_read(self, offset):
        resp = await self.master.read(offset, 4)
        return int.from_bytes(bytes(resp.data), "little"), int(resp.resp)

    async def raw_write(self, offset, data: bytes):
        resp = await self.master.write(offset, data)
        return int(resp.resp)


class Sequencer:
    """Plays the machine side: waits for the start pulse, then drives ``engine_busy`` / ``op_done``
    patterns (one entry per cycle, sampled at consecutive edges) with ``busy`` high, then pulses
    ``done`` (or ``error``). ``hold`` keeps it running until ``release()``."""

    def __init__(self, env: Env, engine_pattern, op_pattern, error=None, hold=False):
        self.env = env
        self.engine_pattern, self.op_pattern = engine_pattern, op_pattern
        self.error = error
        self.hold = hold
        self.start_cycle = None
        self.finished = False
        self._released = not hold
        self.extra = 0
        self.task = cocotb.start_soon(self._run())

    def release(self):
        self._released = True

    async def _run(self):
        dut = self.env.dut
        while True:  # wait for the start pulse
            await RisingEdge(dut.aclk)
            await ReadOnly()
            if int(dut.start.value):
                break
        self.start_cycle = self.env.cycle
        for eb, od in zip(self.engine_pattern, self.op_pattern):
            await RisingEdge(dut.aclk)
            dut.busy.value = 1
            dut.engine_busy.value = eb
            dut.op_done.value = od
        if not self._released:                  # hold: busy stays high, the test drives engine_busy
            await RisingEdge(dut.aclk)
            dut.busy.value = 1
            dut.engine_busy.value = 0
            dut.op_done.value = 0
            self.extra += 1
        while not self._released:
            await RisingEdge(dut.aclk)
            self.extra += 1
        await RisingEdge(dut.aclk)
        dut.busy.value = 0
        dut.engine_busy.value = 0
        dut.op_done.value = 0
        if self.error is None:
            dut.done.value = 1
        else:
            dut.error.value = 1
            dut.error_code.value = int(self.error)
        await RisingEdge(dut.aclk)
        dut.done.value = 0
        dut.error.value = 0
        self.finished = True

    @property
    def expected_cycles(self):
        # running is set at the start edge; the counter then counts every edge up to and including
        # the one that samples done: one per pattern entry, one per held cycle, plus two.
        return len(self.engine_pattern) + self.extra + 2

    def expected_engine(self, i):
        return sum((eb >> i) & 1 for eb in self.engine_pattern)


# --- checks --------------------------------------------------------------------------------------

async def check_reset_values(env: Env):
    for r in env.rm:
        v, resp = await env.raw_read(r.offset)
        expect(resp, OKAY, f"{r.name} read response")
        expect(v, r.reset, f"{r.name} reset value")
    for name in ("start", "irq", "program_base", "program_ops", "dram_base"):
        expect(int(getattr(env.dut, name).value), 0, f"port {name} after reset")


async def check_config(env: Env):
    ident = await env.regs.check_config(env.cfg)
    expect(ident["CONFIG_KEY"], int(env.cfg.key()[:8], 16), "CONFIG_KEY")
    other = env.cfg.replace(name="other", mat_lanes=env.cfg.mat_lanes + 1)
    try:
        await env.regs.check_config(other)
    except ConfigMismatch:
        pass
    else:
        check(False, "check_config accepted another configuration")


async def check_rw_readback(env: Env):
    for r in env.rm:
        rw = r.mask(Access.RW)
        if not rw:
            continue
        value = env.rng.getrandbits(32) & ~r.mask(Access.W1P, Access.W1C)   # do not start / clear
        before, _ = await env.raw_read(r.offset)
        expect(await env.raw_write(r.offset, value.to_bytes(4, "little")), OKAY, f"{r.name} write response")
        after, _ = await env.raw_read(r.offset)
        expect(after, (value & rw) | (before & ~rw), f"{r.name} read back")
    # the machine side sees the values
    rm = env.rm
    pb = await env.regs.read64("PROGRAM_BASE")
    expect(int(env.dut.program_base.value), pb, "program_base port")
    expect(int(env.dut.program_ops.value), await env.regs.read("PROGRAM_OPS"), "program_ops port")
    expect(int(env.dut.dram_base.value), await env.regs.read64("DRAM_BASE"), "dram_base port")
    # writes to read-only registers answer OKAY and change nothing
    for name in ("ID", "CONFIG_KEY", "OPS_DONE", "CYCLES_LO"):
        expect(await env.raw_write(rm.offset(name), b"\xff\xff\xff\xff"), OKAY, f"{name} write response")
        expect((await env.raw_read(rm.offset(name)))[0], rm[name].reset, f"{name} after a write")
    await env.regs.write("CTRL", 0)
    expect(int(env.dut.irq.value), 0, "irq")


async def check_wstrb(env: Env):
    off = env.rm.offset("SCRATCH")
    await env.regs.write("SCRATCH", 0x11223344)
    expect(await env.raw_write(off + 1, b"\xab"), OKAY, "byte write response")
    expect(await env.regs.read("SCRATCH"), 0x1122AB44, "SCRATCH after a byte-1 write")
    await env.raw_write(off + 2, b"\xcd\xef")
    expect(await env.regs.read("SCRATCH"), 0xEFCDAB44, "SCRATCH after a half-word write")
    await env.raw_write(off + 0, b"\x01")
    await env.raw_write(off + 3, b"\x02")
    expect(await env.regs.read("SCRATCH"), 0x02CDAB01, "SCRATCH after bytes 0 and 3")
    # a byte write to CTRL's byte 1 sets no START (bit 0 lives in byte 0)
    n = len(env.starts)
    await env.raw_write(env.rm.offset("CTRL") + 1, b"\xff")
    await env.cycles(3)
    expect(len(env.starts), n, "start pulses after a CTRL write without byte 0's strobe")
    expect(await env.regs.read("STATUS") & 1, 0, "STATUS.BUSY")


async def check_unmapped(env: Env):
    mapped = {r.offset for r in env.rm}
    holes = [o for o in (0x01C, 0x038, 0x0FC, 0x100, env.rm.window_bytes - 4) if o not in mapped]
    check(len(holes) >= 4, "unmapped offsets to try")
    scratch = await env.regs.read("SCRATCH")
    for o in holes:
        v, resp = await env.raw_read(o)
        expect(resp, SLVERR, f"read of unmapped 0x{o:03x}: response")
        expect(v, 0, f"read of unmapped 0x{o:03x}: data")
        expect(await env.raw_write(o, b"\xff\xff\xff\xff"), SLVERR, f"write of unmapped 0x{o:03x}: response")
    expect(await env.regs.read("SCRATCH"), scratch, "SCRATCH after writes to unmapped offsets")
    # the two low address bits are ignored: a read of bytes 2..3 gets them from the word
    resp = await env.master.read(env.rm.offset("ID") + 2, 2)
    expect((int(resp.resp), bytes(resp.data)), (OKAY, (env.rm["ID"].reset >> 16).to_bytes(2, "little")),
           "ID bytes 2..3")


def _patterns(env: Env, n: int):
    rng = env.rng
    eng = [rng.getrandbits(len(ENGINES)) for _ in range(n)]
    ops = [int(rng.random() < 0.1) for _ in range(n)]
    return eng, ops


async def check_run(env: Env):
    """start pulse, busy / done / irq, the cycle and busy counters exact, consistent 64-bit reads."""
    rm, regs, dut = env.rm, env.regs, env.dut
    n = 300
    eng, ops = _patterns(env, n)
    seq = Sequencer(env, eng, ops)
    n_starts = len(env.starts)
    await regs.start(program_base=0x1_2345_6740, ops=sum(ops), dram_base=0x8000_0000, irq=True)
    expect(len(env.starts), n_starts + 1, "start pulses after CTRL.START")
    st = await regs.status()
    expect((st["BUSY"], st["DONE"], st["ERROR"], st["IRQ"]), (1, 0, 0, 0), "STATUS while running")
    expect(int(dut.program_base.value), 0x1_2345_6740, "program_base port")
    expect(int(dut.dram_base.value), 0x8000_0000, "dram_base port")
    # 64-bit reads while counting: monotone, bounded and crossing the LO -> HI carry
    seen = []
    while not seq.finished:
        seen.append(await regs.read64("CYCLES"))
    for a, b in zip(seen, seen[1:]):
        check(a <= b, f"CYCLES read back not monotone: {a:#x} then {b:#x}")
    for v in seen:
        check(env.c0 <= v <= env.c0 + n + 2, f"CYCLES read {v:#x} outside [{env.c0:#x}, {env.c0 + n + 2:#x}] (torn?)")
    if env.c0 < 1 << 32 < env.c0 + n:
        check(any(v >> 32 == 0 for v in seen) and any(v >> 32 == 1 for v in seen),
              f"reads on both sides of the carry: {[hex(v) for v in seen]}")
    st = await regs.wait_done(timeout_s=1e-3)
    expect((st["BUSY"], st["DONE"], st["IRQ"]), (0, 1, 1), "STATUS after done")
    expect(int(dut.irq.value), 1, "irq after done with IRQ_EN")
    c = await regs.counters()
    expect(c["cycles"], (env.c0 + seq.expected_cycles) & M64, "CYCLES")
    for i, e in enumerate(ENGINES):
        expect(c[f"{e.lower()}_busy"], (env.c0 + seq.expected_engine(i)) & M64, f"{e}_BUSY")
    expect(c["ops_done"], sum(ops), "OPS_DONE")
    # counters hold after done
    await env.cycles(20)
    expect(await regs.read64("CYCLES"), c["cycles"], "CYCLES after done")
    # W1C: a write without byte 0's strobe, or of 0, clears nothing; a 1 clears DONE and the irq
    status_off = rm.offset("STATUS")
    await env.raw_write(status_off + 1, b"\xff")
    await regs.write("STATUS", 0)
    expect((await regs.status())["DONE"], 1, "DONE after writes that clear nothing")
    await regs.write_fields("STATUS", DONE=1)
    st = await regs.status()
    expect((st["DONE"], st["IRQ"]), (0, 0), "DONE and IRQ after W1C")
    expect(int(dut.irq.value), 0, "irq after W1C")
    # IRQ_EN off: done without an interrupt
    seq = Sequencer(env, [0] * 5, [0] * 5)
    await regs.start(0x40, 1, 0, irq=False)
    st = await regs.wait_done(timeout_s=1e-3)
    expect((st["DONE"], st["IRQ"], int(dut.irq.value)), (1, 0, 0), "DONE without IRQ_EN")
    expect(await regs.read64("CYCLES"), env.c0 + seq.expected_cycles, "CYCLES of a short run")


async def check_snapshot_and_busy_start(env: Env):
    """HI returns the upper half latched by the last LO read; START and locked registers are ignored
    while busy; the busy input alone shows in STATUS and counts."""
    regs, dut = env.regs, env.dut
    seq = Sequencer(env, [], [], hold=True)
    await regs.start(0x1000, 3, 0x2000)
    # MAT_BUSY sits at counter_start (the engine input is low); read LO, then let the live value
    # cross the carry, then read HI: the shadow of the LO read, not the live upper half
    expect(await regs.read("MAT_BUSY_LO"), env.c0 & 0xFFFF_FFFF, "MAT_BUSY_LO at counter_start")
    high = (1 << 32) - (env.c0 & 0xFFFF_FFFF) + 5
    await RisingEdge(dut.aclk)
    dut.engine_busy.value = 1                    # bit 0: MAT
    await env.cycles(high)
    dut.engine_busy.value = 0
    await env.cycles(1)
    expect(await regs.read("MAT_BUSY_HI"), env.c0 >> 32, "MAT_BUSY_HI returns the snapshot of the last LO read")
    expect(await regs.read64("MAT_BUSY"), env.c0 + high, "MAT_BUSY after a fresh LO read")
    v = await regs.read64("CYCLES")
    # START while busy: no pulse, nothing cleared; locked registers keep their values
    n = len(env.starts)
    await regs.write_fields("CTRL", START=1)
    await env.cycles(3)
    expect(len(env.starts), n, "start pulses after START while busy")
    check(await regs.read64("CYCLES") > v, "CYCLES kept counting after START while busy")
    await regs.write("PROGRAM_OPS", 99)
    await regs.write64("PROGRAM_BASE", 0x5555_0000)
    expect(await regs.read("PROGRAM_OPS"), 3, "PROGRAM_OPS written while busy")
    expect(await regs.read64("PROGRAM_BASE"), 0x1000, "PROGRAM_BASE written while busy")
    expect(int(dut.program_ops.value), 3, "program_ops port while busy")
    await regs.write("SCRATCH", 0xA5A5_5A5A)
    expect(await regs.read("SCRATCH"), 0xA5A5_5A5A, "SCRATCH written while busy")
    try:
        await regs.start(0, 1, 0)
    except AcceleratorBusy:
        pass
    else:
        check(False, "driver start() while busy did not raise AcceleratorBusy")
    seq.release()
    await regs.wait_done(timeout_s=1e-3)
    expect(await regs.read64("CYCLES"), env.c0 + seq.expected_cycles, "CYCLES of a held run")
    # the busy and engine inputs alone: STATUS shows them live, the counters count them
    await regs.acknowledge()
    cyc0 = await regs.read64("CYCLES")
    dut.busy.value = 1
    dut.engine_busy.value = 0b1010
    await env.cycles(2)
    st = await regs.status()
    expect(st["BUSY"], 1, "STATUS.BUSY from the busy input")
    expect([st[e] for e in ENGINES], [(0b1010 >> i) & 1 for i in range(len(ENGINES))], "STATUS engine bits")
    await RisingEdge(dut.aclk)
    dut.busy.value = 0
    dut.engine_busy.value = 0
    await env.cycles(2)
    check(await regs.read64("CYCLES") > cyc0, "CYCLES counts the busy input")
    expect((await regs.status())["BUSY"], 0, "STATUS.BUSY after the busy input falls")


async def check_error(env: Env):
    regs, dut = env.regs, env.dut
    ops = [0, 1, 0, 0, 1, 0, 1, 0]
    seq = Sequencer(env, [0] * len(ops), ops, error=ErrorCode.AXI_SLVERR)
    await regs.start(0x80, 10, 0, irq=True)
    try:
        await regs.wait_done(timeout_s=1e-3)
    except AcceleratorError as e:
        expect((e.name, e.op_index), ("AXI_SLVERR", 3), "driver error")
    else:
        check(False, "wait_done returned on an error")
    st = await regs.status()
    expect((st["BUSY"], st["DONE"], st["ERROR"], st["IRQ"]), (0, 0, 1, 1), "STATUS after an error")
    expect(int(dut.irq.value), 1, "irq after an error")
    check(seq.finished, "sequencer finished")
    # a second error keeps the first code
    await RisingEdge(dut.aclk)
    dut.error.value = 1
    dut.error_code.value = int(ErrorCode.BAD_OPCODE)
    await RisingEdge(dut.aclk)
    dut.error.value = 0
    expect(await regs.read("ERROR_CODE"), int(ErrorCode.AXI_SLVERR), "ERROR_CODE keeps the first error")
    expect(await regs.read("ERROR_OP"), 3, "ERROR_OP")
    await regs.write_fields("STATUS", ERROR=1)
    st = await regs.status()
    expect((st["ERROR"], st["IRQ"], int(dut.irq.value)), (0, 0, 0), "ERROR / irq after W1C")
    expect(await regs.read("ERROR_CODE"), 0, "ERROR_CODE after clearing ERROR")
    # a start clears a pending error too
    dut.error.value = 1
    dut.error_code.value = int(ErrorCode.ADDR_RANGE)
    await RisingEdge(dut.aclk)
    dut.error.value = 0
    await env.cycles(1)
    expect(await regs.read("ERROR_CODE"), int(ErrorCode.ADDR_RANGE), "ERROR_CODE of an error outside a run")
    Sequencer(env, [0] * 3, [1] * 3)
    await regs.start(0x80, 3, 0)
    expect(await regs.read("ERROR_CODE"), 0, "ERROR_CODE after a start")
    await regs.wait_done(timeout_s=1e-3)
    expect(await regs.read("OPS_DONE"), 3, "OPS_DONE")


CHECKS = [check_reset_values, check_config, check_rw_readback, check_wstrb, check_unmapped, check_run,
          check_snapshot_and_busy_start, check_error]


@cocotb.test()
async def regs(dut):
    p, _ = load_case()
    env = Env(dut, p)
    await env.reset()
    done = []
    for fn in CHECKS:
        await fn(env)
        done.append(fn.__name__)
        cocotb.log.info(f"{fn.__name__} passed at cycle {env.cycle}")
    write_result({"checks": done, "cycles": env.cycle})
