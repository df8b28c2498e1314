"""Cocotb side of tb/test_machine.py: the top level (rtl/machine.py) on its Xilinx-named boundary, the
host driver (host/driver.py registers over cocotbext-axi's AxiLiteMaster, host/machine.py for the
DRAM image) and cocotbext-axi's AxiRam as the DRAM, with random pauses on all AXI channels, a random
read latency, and a fault range past ``fault_base`` that answers SLVERR.

Each scenario of ``params["runs"]`` writes a DRAM image (``arrays[run["image"]]``, default
``arrays["image"]``) with its patches
(``[byte offset, uint32]`` pairs), starts the machine through the driver with its PROGRAM_BASE /
PROGRAM_OPS overrides, waits for DONE or ERROR with a cycle limit (a hang fails the scenario), and
reports STATUS, ERROR_CODE, ERROR_OP and the counters, plus the bytes of ``readback`` (an ``[offset,
length]`` of the image) for the pytest side to check. Assertions live on the pytest side.
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.utils import get_sim_time
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from arch.config import AccelConfig
from arch.regmap import register_map
from host.driver import AsyncRegisters, CocotbAxiLite
from tb.cocotb_kit import add_read_latency, load_case, pause_generator, write_result


PERIOD_NS = 10


class Env:
    def __init__(self, dut, p, arrays):
        self.dut, self.p = dut, p
        self.cfg = AccelConfig.from_dict(p["config"])
        self.rng = random.Random(p["seed"])
        self.images = {k: bytes(v.astype("uint8")) for k, v in arrays.items()}
        self.base = p["base"]
        dut.aresetn.value = 0
        Clock(dut.aclk, PERIOD_NS, unit="ns").start()
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.aclk, dut.aresetn, reset_active_level=False,
                          size=1 << self.cfg.axi_addr_bits)
        self.master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi"), dut.aclk, dut.aresetn,
                                    reset_active_level=False)
        self.regs = AsyncRegisters(CocotbAxiLite(self.master, irq=dut.irq), register_map(self.cfg))
        self.arrays = arrays
        self._fault(p["fault_base"])
        pause = p["pauses"]
        if pause:
            for iface in (self.ram.write_if, self.ram.read_if, self.master.write_if, self.master.read_if):
                chans = ((iface.aw_channel, iface.w_channel, iface.b_channel) if hasattr(iface, "aw_channel")
                         else (iface.ar_channel, iface.r_channel))
                for ch in chans:
                    ch.set_pause_generator(pause_generator(self.rng, pause))
        if p["latency"][1]:
            add_read_latency(self.ram, dut.aclk, self.rng, *p["latency"])

    def _fault(self, fault_base: int):
        """Reads and writes at or past ``fault_base`` make the slave model answer SLVERR."""
        rd, wr = self.ram.read_if, self.ram.write_if
        orig_read, orig_write = rd._read, wr._write

        async def _read(address, length):
            if address + length > fault_base:
                raise OSError(f"read fault at {address:#x}")
            return await orig_read(address, length)

        async def _write(address, data):
            if address + len(data) > fault_base:
                raise OSError(f"write fault at {address:#x}")
            return await orig_write(address, data)

        rd._read, wr._write = _read, _write



    async def reset(self):
        self.dut.aresetn.value = 0
        await ClockCycles(self.dut.aclk, 4)
        self.dut.aresetn.value = 1
        await ClockCycles(self.dut.aclk, 2)

    async def scenario(self, run: dict) -> dict:
        img = bytearray(self.images[run.get("image", "image")])
        for off, value in run.get("patches", []):
            img[off:off + 4] = int(value).to_bytes(4, "little")
        self.ram.write(self.base, bytes(img))
        p = self.p
        program_base = self.base + run.get("program_offset", p["program_offset"])
        ops = run.get("ops", p["ops"])
        t0 = time.monotonic()
        use_irq = bool(run.get("irq"))
        await self.regs.start(program_base=program_base, ops=ops, dram_base=self.base, irq=use_irq)
        limit = run.get("cycle_limit", p["cycle_limit"])
        if use_irq:
            # long runs: sleep on the interrupt line (a Timer, not ClockCycles: that one wakes Python
            # on every edge, which costs more than the simulation itself)
            if not int(self.dut.irq.value):
                await First(RisingEdge(self.dut.irq), Timer(limit * PERIOD_NS, unit="ns"))
        else:
            start = self._cycle
            while True:
                st = await self.regs.status()
                if st["DONE"] or st["ERROR"]:
                    break
                if self._cycle - start > limit:
                    break
                await ClockCycles(self.dut.aclk, 16)
        # the machine must go idle by itself after DONE / ERROR (the DMA flushes, nothing hangs)
        idle_wait = 0
        while (await self.regs.status())["BUSY"] and idle_wait < 2000:
            await ClockCycles(self.dut.aclk, 8)
            idle_wait += 8
        st = await self.regs.status()
        out = {"name": run["name"], "status": st, "error_code": await self.regs.read("ERROR_CODE"),
               "error_op": await self.regs.read("ERROR_OP"), "counters": await self.regs.counters(),
               "hung": not (st["DONE"] or st["ERROR"]), "busy_after": st["BUSY"],
               "irq": int(self.dut.irq.value), "sim_s": time.monotonic() - t0, "cycle": self._cycle}
        if "readback" in run:
            off, n = run["readback"]
            raw = self.ram.read(self.base + off, n)
            if run.get("readback_file"):          # large images go to a file of the run's folder
                path = Path(os.environ["TB_CASE_DIR"]) / run["readback_file"]
                path.write_bytes(raw)
                out["readback_file"] = str(path)
            else:
                out["readback"] = raw.hex()
        await self.regs.acknowledge()
        return out

    @property
    def _cycle(self) -> int:
        """Clock cycles since time 0 (from the simulated time: no per-cycle Python callback)."""
        return get_sim_time(unit="ns") // PERIOD_NS


    async def network(self, run: dict) -> dict:
        """A whole program through the host driver (host/machine.py): load the DRAM image, write the
        input, start, sleep on the interrupt, read the logits; then the whole image back."""
        import numpy as np

        from arch.program import Program
        from host.driver import AcceleratorError
        from host.machine import AsyncMachine
        prog = Program.load(run["program"])
        m = AsyncMachine(self.regs, self.ram, self.base)
        t0 = time.monotonic()
        await m.load(prog, np.frombuffer(self.images[run["image"]], np.uint8))
        out = {"name": run["name"], "hung": False}
        samples, sampling = [], [bool(run.get("profile"))]
        if sampling[0]:
            cocotb.start_soon(self._sample(run["profile"], samples, sampling))
        try:
            logits, counters = await m.infer(self.arrays["pixels"], timeout_s=run["cycle_limit"] * PERIOD_NS * 1e-9)
            out["logits"] = logits.reshape(-1).tolist()
        except AcceleratorError:
            counters = await self.regs.counters()
        except TimeoutError:
            counters = await self.regs.counters()
            out["hung"] = True
        sampling[0] = False
        st = await self.regs.status()
        out.update(status=st, error_code=await self.regs.read("ERROR_CODE"), error_op=await self.regs.read("ERROR_OP"),
                   counters=counters, sim_s=time.monotonic() - t0, samples=samples)
        path = Path(os.environ["TB_CASE_DIR"]) / "dram.bin"
        path.write_bytes(self.ram.read(self.base, prog.dram_bytes))
        out["readback_file"] = str(path)
        return out


    async def _sample(self, every: int, samples: list, sampling: list) -> None:
        """Every ``every`` cycles while the run lasts, ``[CYCLES, OPS_DONE]`` read through the register
        block (a Timer between reads: no Python per clock edge)."""
        while sampling[0]:
            await Timer(every * PERIOD_NS, unit="ns")
            if sampling[0]:
                samples.append([await self.regs.read64("CYCLES"), await self.regs.read("OPS_DONE")])


@cocotb.test()
async def machine_runs(dut):
    p, arrays = load_case()
    env = Env(dut, p, arrays)
    await env.reset()
    ident = await env.regs.check_config(env.cfg)
    results = [await (env.network(run) if "program" in run else env.scenario(run)) for run in p["runs"]]
    write_result({"ident": ident, "runs": results})
