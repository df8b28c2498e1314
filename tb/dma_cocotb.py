"""Cocotb side of tb/test_dma.py: the DMA (rtl/dma.py DmaAxi) against cocotbext-axi's AxiRam on the
Xilinx-named master port (aclk, aresetn, m_axi_*), checked byte for byte against a Python model.

The memory: an ``AxiRam`` with, per case, random pauses on all five channels, a random read latency
(cycles between the model taking an AR and its first R beat) and two fault ranges that answer
SLVERR / DECERR (its ``_read`` / ``_write`` raise there; the slave model then answers SLVERR, which
a wrapper of the R / B send turns into DECERR for the DECERR range). A monitor checks the AXI
rules the DMA promises on every cycle: AR / AW / W payloads stable while VALID waits for READY,
INCR full-width bursts of at most 256 beats inside one 4 KiB page, WLAST on the last beat, at
most ``max_bursts`` bursts outstanding, no AR / AW raised while ``error`` is high and only
zero-strobe W beats loaded after it.

One cocotb test runs the checks in turn (``CHECKS``); the machine-side streams get the same random
gaps / backpressure as the bus. ``throughput`` (the stall-free case) times long transfers.
"""
from __future__ import annotations

import random
from collections import deque

import cocotb
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiRam
from cocotbext.axi.constants import AxiResp

from arch.config import AccelConfig
from arch.regmap import ErrorCode
from rtl.dma import cmd_layout, rd_data_layout, wr_data_layout
from tb.cocotb_kit import TB, add_read_latency, load_case, pause_generator, write_result

PAGE = 4096


def check(cond, what):
    if not cond:
        cocotb.log.error(f"MISMATCH {what}")
        raise AssertionError(f"MISMATCH {what}")


def expect(actual, expected, what):
    check(actual == expected, f"{what}: expected {expected!r}, actual {actual!r}")


class Env:
    def __init__(self, dut, p):
        self.dut, self.p = dut, p
        self.cfg = AccelConfig.from_dict(p["config"])
        self.B = self.cfg.axi_data_bits // 8
        self.max_bursts = p["max_bursts"]
        self.rng = random.Random(p["seed"])
        # address map: data region (the model), two fault ranges, all inside the window
        self.base = p["base"]
        self.region = p["region"]
        self.slverr = (self.base + self.region, self.base + self.region + 2 * PAGE)
        self.decerr = (self.slverr[1], self.slverr[1] + 2 * PAGE)
        self.window = (self.base, self.decerr[1] - self.base)
        self.tb = TB(dut, seed=p["seed"], clk="aclk", rst="aresetn")
        for name in ("clear", "window_base", "window_size"):
            getattr(dut, name).value = 0
        dut.aresetn.value = 0
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.aclk, dut.aresetn, reset_active_level=False,
                          size=1 << self.cfg.axi_addr_bits)
        self._faults()
        self.latency = tuple(p["latency"])
        if self.latency[1]:
            add_read_latency(self.ram, dut.aclk, self.rng, *self.latency)
        pause = p["pauses"]
        if pause:
            w, r = self.ram.write_if, self.ram.read_if
            for ch in (w.aw_channel, w.w_channel, w.b_channel, r.ar_channel, r.r_channel):
                ch.set_pause_generator(pause_generator(self.rng, pause))
        self.rd_cmd = self.tb.source("rd_cmd", cmd_layout(self.cfg), gap=pause)
        self.wr_cmd = self.tb.source("wr_cmd", cmd_layout(self.cfg), gap=pause)
        self.wr_data = self.tb.source("wr_data", wr_data_layout(self.cfg), gap=pause)
        self.rd_data = self.tb.sink("rd_data", rd_data_layout(self.cfg), backpressure=pause)
        # the model: the data region's bytes
        self.model = bytearray(self.rng.getrandbits(8) for _ in range(self.region))
        self.ram.write(self.base, bytes(self.model))
        # monitor state
        self.done_cycles: list[int] = []
        self.stats = dict(ar=0, aw=0, w=0, r=0, max_len=0, max_out_r=0, max_out_w=0, page_cut=0)
        self.rd_beats_seen = 0
        cocotb.start_soon(self._monitor())

    # --- the memory model's faults and latency ----------------------------------------------------
    def _fault(self, addr):
        if self.slverr[0] <= addr < self.slverr[1]:
            return AxiResp.SLVERR
        if self.decerr[0] <= addr < self.decerr[1]:
            return AxiResp.DECERR
        return None

    def _faults(self):
        rd, wr = self.ram.read_if, self.ram.write_if
        orig_read, orig_write = rd._read, wr._write
        orig_rsend, orig_bsend = rd.r_channel.send, wr.b_channel.send
        state = {"r": None, "b": None}

        async def _read(address, length):
            kind = self._fault(address)
            if kind is not None:
                state["r"] = kind
                raise OSError(f"read fault at {address:#x}")
            return await orig_read(address, length)

        async def _write(address, data):
            kind = self._fault(address)
            if kind is not None:
                state["b"] = kind
                raise OSError(f"write fault at {address:#x}")
            await orig_write(address, data)

        async def r_send(r):      # the slave model answers SLVERR on a fault; make it the range's code
            if state["r"] is not None:
                r.rresp, state["r"] = state["r"], None
            await orig_rsend(r)

        async def b_send(b):
            if state["b"] is not None:
                b.bresp, state["b"] = state["b"], None
            await orig_bsend(b)

        rd._read, wr._write, rd.r_channel.send, wr.b_channel.send = _read, _write, r_send, b_send



    # --- AXI rules, every cycle ---------------------------------------------------------------------
    async def _monitor(self):
        dut, B = self.dut, self.B
        size = B.bit_length() - 1
        names = {"ar": ("araddr", "arlen", "arsize", "arburst", "arid", "arcache", "arprot", "arlock", "arqos"),
                 "aw": ("awaddr", "awlen", "awsize", "awburst", "awid", "awcache", "awprot", "awlock", "awqos"),
                 "w": ("wdata", "wstrb", "wlast")}
        h = {ch: [getattr(dut, f"m_axi_{n}") for n in ns] for ch, ns in names.items()}
        hv = {ch: (getattr(dut, f"m_axi_{ch}valid"), getattr(dut, f"m_axi_{ch}ready")) for ch in names}
        rvalid, rready, rlast = dut.m_axi_rvalid, dut.m_axi_rready, dut.m_axi_rlast
        bvalid, bready = dut.m_axi_bvalid, dut.m_axi_bready
        pending = {ch: None for ch in names}       # payload presented and not taken last cycle
        out_r = out_w = 0
        w_bursts: deque[int] = deque()
        w_count = 0
        prev_err = 0
        while True:
            await RisingEdge(dut.aclk)
            await ReadOnly()
            cyc = self.tb.cycle
            err = int(dut.error.value)
            if int(dut.wr_done.value):
                self.done_cycles.append(cyc)
            fire = {}
            for ch in names:
                v, r = int(hv[ch][0].value), int(hv[ch][1].value)
                if pending[ch] is not None:
                    check(v, f"{ch}valid dropped before {ch}ready at cycle {cyc}")
                if v:
                    pay = tuple(int(x.value) for x in h[ch])
                    if pending[ch] is not None:
                        check(pay == pending[ch], f"{ch} payload changed while waiting for {ch}ready at cycle {cyc}")
                    elif ch in ("ar", "aw"):
                        check(not err, f"{ch}valid raised while error is high at cycle {cyc}")
                    elif prev_err:           # a W beat loaded after the error: nothing more is written
                        check(pay[1] == 0, f"W beat with wstrb {pay[1]:#x} loaded after the error, cycle {cyc}")
                    fire[ch] = pay if r else None
                    pending[ch] = None if r else pay
                else:
                    pending[ch] = None
            prev_err = err
            for ch in ("ar", "aw"):
                pay = fire.get(ch)
                if pay is None:
                    continue
                addr, alen, asize, aburst, aid, cache, prot, lock, qos = pay
                beats = alen + 1
                check((asize, aburst, aid, cache, prot, lock, qos) == (size, 1, 0, 0b0011, 0, 0, 0),
                      f"{ch} attributes {pay[2:]} at cycle {cyc}")
                check(addr % B == 0, f"{ch}addr {addr:#x} not aligned to {B} bytes")
                check(addr // PAGE == (addr + beats * B - 1) // PAGE,
                      f"{ch} burst {addr:#x} + {beats} beats crosses a 4 KiB boundary")
                self.stats["max_len"] = max(self.stats["max_len"], beats)
                if (addr + beats * B) % PAGE == 0 and beats * B < PAGE and beats < 256:
                    self.stats["page_cut"] += 1
                self.stats[ch] += 1
                if ch == "ar":
                    out_r += 1
                    self.stats["max_out_r"] = max(self.stats["max_out_r"], out_r)
                else:
                    out_w += 1
                    self.stats["max_out_w"] = max(self.stats["max_out_w"], out_w)
                    w_bursts.append(beats)
            pay = fire.get("w")
            if pay is not None:
                check(w_bursts, f"W beat before its AW at cycle {cyc}")
                w_count += 1
                self.stats["w"] += 1
                check(bool(pay[2]) == (w_count == w_bursts[0]),
                      f"wlast {pay[2]} on beat {w_count} of a {w_bursts[0]}-beat burst at cycle {cyc}")
                if pay[2]:
                    w_bursts.popleft()
                    w_count = 0
            if int(rvalid.value) and int(rready.value):
                self.stats["r"] += 1
                if int(rlast.value):
                    out_r -= 1
            if int(bvalid.value) and int(bready.value):
                out_w -= 1
            check(out_r <= self.max_bursts and out_w <= self.max_bursts,
                  f"outstanding bursts {out_r} read / {out_w} write > {self.max_bursts}")

    # --- helpers ----------------------------------------------------------------------------------
    async def reset(self):
        self.dut.aresetn.value = 0
        await self.tb.cycles(4)
        self.dut.aresetn.value = 1
        self.set_window(*self.window)
        await self.tb.cycles(2)

    def set_window(self, base, size):
        self.dut.window_base.value = base
        self.dut.window_size.value = size

    async def wait_for(self, cond, what, max_cycles=200_000):
        start = self.tb.cycle
        while not cond():
            if self.tb.cycle - start > max_cycles:
                raise AssertionError(f"MISMATCH timeout after {max_cycles} cycles waiting for {what}")
            await RisingEdge(self.dut.aclk)

    async def idle(self, what):
        """Every stream drained, the DMA not busy (the test's no-hang check)."""
        await self.wait_for(lambda: self.rd_cmd.idle and self.wr_cmd.idle and self.wr_data.idle, f"{what}: sources")
        await self.wait_for(lambda: not int(self.dut.busy.value), f"{what}: busy low")
        await self.tb.cycles(3)
        check(not int(self.dut.busy.value), f"{what}: busy low")

    async def clear(self):
        self.dut.clear.value = 1
        await RisingEdge(self.dut.aclk)
        self.dut.clear.value = 0
        await self.wait_for(lambda: not int(self.dut.error.value), "error cleared")

    def beats(self, length):
        return -(-length // self.B)

    def rand_cmd(self, lo, hi, kind=None):
        """A random (addr, len) inside [lo, hi) (byte offsets in the region), aligned address."""
        rng, B = self.rng, self.B
        kind = kind or rng.choice(["small", "small", "medium", "page", "long", "zero"])
        if kind == "zero":
            length = 0
        elif kind == "small":
            length = rng.randint(1, 4 * B)
        elif kind == "medium":
            length = rng.randint(B, 1500)
        elif kind == "page":             # crosses a 4 KiB boundary
            length = rng.randint(2 * B, 3000)
        else:                            # more than 256 beats
            length = rng.randint(256 * B + 1, min(hi - lo, 256 * B * 2 + 3 * PAGE))
        nb = self.beats(length)
        if kind == "page":               # start k beats before a page boundary, 0 < k < nb
            for _ in range(100):
                edge = rng.randrange(lo // PAGE + 1, -(-hi // PAGE)) * PAGE
                ks = [k for k in range(1, nb) if edge - k * B >= lo and edge + (nb - k) * B <= hi]
                if ks:
                    return self.base + edge - rng.choice(ks) * B, length
            raise ValueError(f"no page-crossing placement of {length} bytes in [{lo:#x}, {hi:#x})")
        a = lo + rng.randrange(0, (hi - lo - nb * B) // B + 1) * B
        return self.base + a, length

    # write commands: queue command and data, update the model
    def queue_write(self, addr, length, in_model=True):
        B, rng = self.B, self.rng
        self.wr_cmd.send({"addr": addr, "len": length})
        for j in range(self.beats(length)):
            data = rng.getrandbits(8 * B)
            strb = (1 << B) - 1 if rng.random() < 0.5 else rng.getrandbits(B)
            self.wr_data.send({"data": data, "strb": strb})
            if not in_model:
                continue
            raw = data.to_bytes(B, "little")
            for i in range(B):
                o = j * B + i
                off = addr - self.base + o
                if o < length and strb >> i & 1 and 0 <= off < self.region:   # past the region: faults
                    self.model[off] = raw[i]

    def check_memory(self, what):
        got = bytes(self.ram.read(self.base, self.region))
        if got != bytes(self.model):
            bad = [i for i in range(self.region) if got[i] != self.model[i]]
            for i in bad[:8]:
                cocotb.log.error(f"MISMATCH {what}: byte {self.base + i:#x}: expected {self.model[i]:#04x}, "
                                 f"actual {got[i]:#04x}")
            raise AssertionError(f"MISMATCH {what}: {len(bad)} bytes of memory differ from the model")

    def check_reads(self, cmds, beats, what):
        """Cut the rd_data beats into the commands (zero-length ones give none) and compare."""
        B = self.B
        k = 0
        for n, (addr, length) in enumerate(cmds):
            nb = self.beats(length)
            got = beats[k:k + nb]
            k += nb
            expect(len(got), nb, f"{what}: beats of read {n} ({addr:#x}, {length} B)")
            expect([b["last"] for b in got], [0] * (nb - 1) + [1] if nb else [],
                   f"{what}: last flags of read {n}")
            data = b"".join(b["data"].to_bytes(B, "little") for b in got)
            off = addr - self.base
            want = bytes(self.model[off:off + nb * B])
            if data != want:
                i = next(i for i in range(len(want)) if data[i] != want[i])
                raise AssertionError(f"MISMATCH {what}: read {n} ({addr:#x}, {length} B) byte {i}: "
                                     f"expected {want[i]:#04x}, actual {data[i]:#04x}")
        expect(k, len(beats), f"{what}: rd_data beats in all")


# --- checks ---------------------------------------------------------------------------------------

async def check_writes(env: Env):
    """Back-to-back random writes (every length kind, overlapping), then the memory byte for byte."""
    cmds = [env.rand_cmd(0, env.region) for _ in range(env.p["n_cmds"])]
    n0 = len(env.done_cycles)
    for a, n in cmds:
        env.queue_write(a, n)
    nonzero = sum(1 for _, n in cmds if n)
    await env.wait_for(lambda: len(env.done_cycles) - n0 >= nonzero, "wr_done of every write")
    await env.idle("writes")
    expect(len(env.done_cycles) - n0, nonzero, "wr_done pulses (none for zero-length writes)")
    expect(int(env.dut.error.value), 0, "error after writes")
    env.check_memory("memory after random writes")


async def check_reads(env: Env):
    """Back-to-back random reads, every beat compared with the model, ``last`` per command."""
    cmds = [env.rand_cmd(0, env.region) for _ in range(env.p["n_cmds"])]
    k0 = len(env.rd_data.beats)
    for a, n in cmds:
        env.rd_cmd.send({"addr": a, "len": n})
    total = sum(env.beats(n) for _, n in cmds)
    await env.rd_data.wait_beats(k0 + total)
    await env.idle("reads")
    expect(int(env.dut.error.value), 0, "error after reads")
    env.check_reads(cmds, env.rd_data.beats[k0:], "random reads")


async def check_concurrent(env: Env):
    """Reads of the lower half and writes of the upper half at once."""
    half = env.region // 2 // PAGE * PAGE
    rcmds = [env.rand_cmd(0, half) for _ in range(env.p["n_cmds"] // 2)]
    wcmds = [env.rand_cmd(half, env.region) for _ in range(env.p["n_cmds"] // 2)]
    k0, n0 = len(env.rd_data.beats), len(env.done_cycles)
    for (ra, rn), (wa, wn) in zip(rcmds, wcmds):
        env.rd_cmd.send({"addr": ra, "len": rn})
        env.queue_write(wa, wn)
    await env.rd_data.wait_beats(k0 + sum(env.beats(n) for _, n in rcmds))
    await env.wait_for(lambda: len(env.done_cycles) - n0 >= sum(1 for _, n in wcmds if n), "concurrent wr_done")
    await env.idle("concurrent")
    env.check_reads(rcmds, env.rd_data.beats[k0:], "concurrent reads")
    env.check_memory("memory after concurrent writes")


async def _expect_error(env: Env, code, what):
    await env.wait_for(lambda: int(env.dut.error.value), f"{what}: error")
    await env.idle(what)                         # the no-hang check: everything drained, busy low
    expect(ErrorCode(int(env.dut.error_code.value)).name, ErrorCode(code).name, f"{what}: error_code")


async def check_errors(env: Env):
    """Command checks, SLVERR / DECERR on reads and writes; after each: nothing hangs, the streams
    are drained as documented, memory holds exactly what was written before the error, and after a
    clear the DMA works again."""
    B, base = env.B, env.base
    k0 = len(env.rd_data.beats)
    # misaligned: the command is refused before the bus, later commands are dropped
    env.rd_cmd.send({"addr": base + B // 2, "len": 64})
    env.rd_cmd.send({"addr": base, "len": 64})
    await _expect_error(env, ErrorCode.MISALIGNED, "misaligned read")
    expect(len(env.rd_data.beats), k0, "rd_data beats after a misaligned read")
    await env.clear()
    # outside the window: below it, across its end; writes too (their data is taken and dropped)
    n0, ar0, aw0 = len(env.done_cycles), env.stats["ar"], env.stats["aw"]
    for addr, length in ((base - B, B), (base + env.window[1] - 2 * B, 3 * B)):
        env.rd_cmd.send({"addr": addr, "len": length})
        await _expect_error(env, ErrorCode.ADDR_RANGE, f"read {addr:#x}+{length} outside the window")
        await env.clear()
        env.queue_write(addr, length, in_model=False)
        env.queue_write(base, 5 * B, in_model=False)            # dropped: the DMA is stopped
        await _expect_error(env, ErrorCode.ADDR_RANGE, f"write {addr:#x}+{length} outside the window")
        await env.clear()
    expect((env.stats["ar"], env.stats["aw"]), (ar0, aw0), "bursts issued for refused commands")
    expect(len(env.done_cycles), n0, "wr_done after refused writes")
    expect(len(env.rd_data.beats), k0, "rd_data beats after refused reads")
    env.check_memory("memory after refused writes")

    # SLVERR on a read: a good read before it arrives whole, the failing command's good beats before
    # the fault are delivered, nothing after; the read queued behind is dropped
    good = env.rand_cmd(0, env.region, "long")
    lo = env.slverr[0] - 2 * PAGE                       # 8 KiB of good data, then the fault
    env.rd_cmd.send({"addr": good[0], "len": good[1]})
    env.rd_cmd.send({"addr": lo, "len": 3 * PAGE})
    env.rd_cmd.send({"addr": base, "len": 256})
    await _expect_error(env, ErrorCode.AXI_SLVERR, "read into the SLVERR range")
    got = env.rd_data.beats[k0:]
    env.check_reads([good], got[:env.beats(good[1])], "read before the SLVERR")
    tail = got[env.beats(good[1]):]
    expect(len(tail), 2 * PAGE // B, "rd_data beats of the failing read (those before the fault)")
    check(not any(b["last"] for b in tail), "no last for the failing read")
    env.check_reads([(lo, 2 * PAGE)], [dict(b, last=int(i == len(tail) - 1)) for i, b in enumerate(tail)],
                    "good beats of the failing read")
    await env.clear()

    # SLVERR on a write that starts in the region: the bursts before the fault land (the model
    # takes the region's bytes), the rest write nothing; no wr_done for it or for the write queued
    # behind it (into the DECERR range, so that whether its burst went out before the error or not,
    # memory is the same)
    n0 = len(env.done_cycles)
    start = env.region - 2 * PAGE
    env.queue_write(base + start, 6 * PAGE)             # 8 KiB in the region, then SLVERR / DECERR pages
    env.queue_write(env.decerr[0], 3 * B, in_model=False)
    await _expect_error(env, ErrorCode.AXI_SLVERR, "write into the SLVERR range")
    expect(len(env.done_cycles), n0, "wr_done after a failed write")
    env.check_memory("memory after a write that failed past the region")
    await env.clear()

    # DECERR on a read, with ``clear`` pulsed as soon as the error shows: the flush of the two
    # 256-beat bursts goes on, the error stays until busy falls, then clears by itself
    dut = env.dut
    k1 = len(env.rd_data.beats)
    env.rd_cmd.send({"addr": env.decerr[0], "len": 2 * PAGE})
    await env.wait_for(lambda: int(dut.error.value), "DECERR read: error")
    await ReadOnly()
    check(int(dut.busy.value), "busy while the DECERR read is flushed")
    await RisingEdge(dut.aclk)
    dut.clear.value = 1
    await RisingEdge(dut.aclk)
    dut.clear.value = 0
    held = idle_with_error = 0
    while True:
        await ReadOnly()
        if not int(dut.error.value):
            break
        expect(ErrorCode(int(dut.error_code.value)).name, "AXI_DECERR", "error_code while flushing")
        held += 1
        idle_with_error += not int(dut.busy.value)
        check(held < 100_000, "error never cleared after a clear during the flush")
        await RisingEdge(dut.aclk)
    expect(idle_with_error, 1, "cycles with busy low and error still set after an early clear")
    check(held > 2 * PAGE // B // 2, f"the early clear waited for the flush ({held} cycles)")
    expect(len(env.rd_data.beats), k1, "rd_data beats of a DECERR read")
    await RisingEdge(dut.aclk)
    env.queue_write(env.decerr[0], 2 * PAGE, in_model=False)
    await _expect_error(env, ErrorCode.AXI_DECERR, "write of the DECERR range")
    await env.clear()

    # clear works: a round trip afterwards
    a, n = env.rand_cmd(0, env.region, "page")
    n0 = len(env.done_cycles)
    env.queue_write(a, n)
    await env.wait_for(lambda: len(env.done_cycles) > n0, "wr_done after clear")
    k2 = len(env.rd_data.beats)
    env.rd_cmd.send({"addr": a, "len": n})
    await env.rd_data.wait_beats(k2 + env.beats(n))
    await env.idle("after clear")
    env.check_reads([(a, n)], env.rd_data.beats[k2:], "read after clear")
    env.check_memory("memory after the error checks")
    expect(int(env.dut.error.value), 0, "error at the end")


async def check_throughput(env: Env):
    """Long aligned transfers with nothing stalling: bytes per cycle, command to last beat / wr_done."""
    B = env.B
    n = env.p["throughput_bytes"]
    res = {}
    k0 = len(env.rd_data.beats)
    c0 = len(env.rd_cmd.fire_cycles)
    env.rd_cmd.send({"addr": env.base, "len": n})
    await env.rd_data.wait_beats(k0 + n // B)
    first, last = env.rd_data.fire_cycles[k0], env.rd_data.fire_cycles[-1]
    cyc = last - env.rd_cmd.fire_cycles[c0] + 1
    res["read"] = dict(bytes=n, cycles=cyc, bytes_per_cycle=n / cyc, stream_bytes_per_cycle=n / (last - first + 1),
                       first_beat_latency=first - env.rd_cmd.fire_cycles[c0])
    env.check_reads([(env.base, n)], env.rd_data.beats[k0:], "throughput read")
    await env.idle("throughput read")
    n0, c1 = len(env.done_cycles), len(env.wr_cmd.fire_cycles)
    env.queue_write(env.base, n)
    await env.wait_for(lambda: len(env.done_cycles) > n0, "throughput write")
    cyc = env.done_cycles[-1] - env.wr_cmd.fire_cycles[c1] + 1
    res["write"] = dict(bytes=n, cycles=cyc, bytes_per_cycle=n / cyc)
    await env.idle("throughput write")
    env.check_memory("memory after the throughput write")
    for k, v in res.items():
        cocotb.log.info(f"throughput {k}: {v}")
    env.throughput = res


CHECKS = [check_writes, check_reads, check_concurrent, check_errors]


@cocotb.test()
async def dma(dut):
    p, _ = load_case()
    env = Env(dut, p)
    await env.reset()
    done = []
    checks = CHECKS + ([check_throughput] if p["throughput"] else [])
    for fn in checks:
        await fn(env)
        done.append(fn.__name__)
        cocotb.log.info(f"{fn.__name__} passed at cycle {env.tb.cycle}")
    write_result({"checks": done, "cycles": env.tb.cycle, "stats": env.stats,
                  "throughput": getattr(env, "throughput", None)})
