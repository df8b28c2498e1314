"""The accelerator's top level: the register block, the DMA, the sequencer and the executors.

``Machine(cfg, executors)`` is the component a board user instantiates. Its boundary follows the
Xilinx conventions, so Vivado's IP packager infers the interfaces (rtl/axi.py):

* ``aclk``, ``aresetn`` (active low, synchronous);
* ``s_axi_*``: AXI4-Lite slave, the control and status registers (arch/regmap.py,
  docs/register_map.md);
* ``m_axi_*``: AXI4 master, the DMA (rtl/dma.py), to the DRAM that holds the image the host laid
  out (host/machine.py): the binary program, weights, parameter tables, the input, the logits;
* ``irq``: level, CTRL.IRQ_EN & (STATUS.DONE | STATUS.ERROR).

What runs: the host writes PROGRAM_BASE / PROGRAM_OPS / DRAM_BASE and CTRL.START; the sequencer
(rtl/sequencer.py) fetches and checks the program and runs each operation on the executor of its
opcode; STATUS.DONE, or STATUS.ERROR with an :class:`arch.regmap.ErrorCode` and ERROR_OP, ends the
run. CYCLES counts the cycles of the run, the per-engine counters the cycles an executor of that
engine (or the DMA) was busy.

``executors`` maps opcode names (arch/program.py ``OPCODES``) to factories ``f(cfg) ->`` an
:class:`Executor`; opcodes mapped to the same factory share one instance (one engine). An opcode without one is refused with BAD_OPCODE before anything of the
operation runs: a build says exactly what it executes (``Machine.opcodes``).
"""
from __future__ import annotations

from typing import Callable, Mapping

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from arch.program import OPCODES
from arch.regmap import ENGINES
from rtl.axi import axi4_signature, axi_clock_domain, axi_lite_signature, flat_interface, flat_members
from rtl.dma import Dma, cmd_layout, rd_data_layout, wr_data_layout
from rtl.regs import ControlRegs
from rtl.sequencer import Sequencer, executor_signature


def executor_members(cfg) -> dict:
    """An executor's ports: the sequencer's handshake (``ctl``), its share of the DMA, ``busy``."""
    return {
        "ctl": In(executor_signature()),
        "rd_cmd": Out(stream.Signature(cmd_layout(cfg))),
        "rd_data": In(stream.Signature(rd_data_layout(cfg))),
        "wr_cmd": Out(stream.Signature(cmd_layout(cfg))),
        "wr_data": Out(stream.Signature(wr_data_layout(cfg))),
        "wr_done": In(1),
        "busy": Out(1),
    }


class Executor(wiring.Component):
    """Base of the components that run one kind of operation: :func:`executor_members` as ports.

    Contract: start on ``ctl.go`` with ``ctl.record``; address DRAM only through the DMA ports and
    only between ``go`` and ``done``; pulse ``ctl.done`` once every write of the operation is
    acknowledged (``wr_done``); on ``ctl.abort`` (a cycle after the sequencer stopped the program) return
    to idle at once."""

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__(executor_members(cfg))


class Machine(wiring.Component):
    def __init__(self, cfg, executors: Mapping[str, Callable] | None = None, counter_start: int = 0):
        self.cfg = cfg
        self.executors = dict(executors or {})
        unknown = set(self.executors) - set(OPCODES)
        if unknown:
            raise ValueError(f"executors for unknown opcodes {sorted(unknown)}; known: {list(OPCODES)}")
        self.opcodes = tuple(name for name in OPCODES if name in self.executors)
        self.counter_start = counter_start
        self.regs = ControlRegs(cfg, counter_start=counter_start)
        self._s_axi = In(axi_lite_signature(self.regs.regmap.addr_width))
        self._m_axi = Out(axi4_signature(cfg.axi_addr_bits, cfg.axi_data_bits, cfg.axi_id_bits))
        super().__init__({"aclk": In(1), "aresetn": In(1), **flat_members("s_axi", self._s_axi),
                          **flat_members("m_axi", self._m_axi), "irq": Out(1)})

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        axi_clock_domain(m, self.aclk, self.aresetn)
        m.submodules.regs = regs = self.regs
        m.submodules.dma = dma = Dma(cfg)
        m.submodules.seq = seq = Sequencer(cfg, self.opcodes)
        wiring.connect(m, flat_interface(self, "s_axi", self._s_axi), regs.s_axi)
        wiring.connect(m, dma.m_axi, flat_interface(self, "m_axi", self._m_axi))

        m.d.comb += [
            self.irq.eq(regs.irq),
            seq.start.eq(regs.start), seq.program_base.eq(regs.program_base),
            seq.program_ops.eq(regs.program_ops), seq.dram_base.eq(regs.dram_base),
            regs.busy.eq(seq.busy), regs.done.eq(seq.done), regs.error.eq(seq.error),
            regs.error_code.eq(seq.error_code), regs.op_done.eq(seq.op_done),
            seq.dma_error.eq(dma.error), seq.dma_error_code.eq(dma.error_code), seq.dma_busy.eq(dma.busy),
            dma.clear.eq(seq.dma_clear), dma.window_base.eq(seq.window_base),
            dma.window_size.eq(seq.window_size),
        ]

        # executors; the DMA's streams go to the running one, else to the sequencer
        busy = {e: Signal(name=f"busy_{e.lower()}") for e in ENGINES}
        m.d.comb += busy["DMA"].eq(dma.busy)
        # one instance per factory: opcodes that name the same factory share its executor (and engine)
        instances, owners = [], []          # executor, the sequencer's owner bits (opcodes) it answers
        by_factory = {}
        for i, name in enumerate(self.opcodes):
            f = self.executors[name]
            if f not in by_factory:
                by_factory[f] = len(instances)
                ex = f(cfg)
                m.submodules[f"ex_{name.lower().replace('.', '_')}"] = ex
                instances.append(ex)
                owners.append([])
            owners[by_factory[f]].append(i)
        busy_of = {e: [] for e in ENGINES}
        mine = []
        # abort is registered: it is a function of the running executor's own error output (through
        # the sequencer) and it resets every flip-flop of the executor, so unregistered it made one
        # path from a core's checks to thousands of endpoints. The executor's DMA streams are already
        # the sequencer's in the cycle between (``executing`` drops with the error).
        abort = Signal()
        m.d.sync += abort.eq(seq.exec.abort)
        for ex, bits in zip(instances, owners):
            own = Signal(name=f"own_{len(mine)}")
            m.d.comb += own.eq(Cat(*(seq.owner[i] for i in bits)).any())
            mine.append(own)
            m.d.comb += [ex.ctl.go.eq(seq.exec.go & own), ex.ctl.abort.eq(abort & own),
                         ex.ctl.record.eq(seq.exec.record), ex.ctl.dram_bytes.eq(seq.exec.dram_bytes),
                         ex.ctl.dram_base.eq(seq.exec.dram_base), ex.wr_done.eq(dma.wr_done & own)]
            for e in ENGINES:       # busy is counted for the engine of the opcode it runs
                of_e = [seq.owner[i] for i in bits if OPCODES[self.opcodes[i]] == e]
                if of_e:
                    busy_of[e].append(ex.busy & Cat(*of_e).any())
            with m.If(own):
                m.d.comb += [seq.exec.done.eq(ex.ctl.done), seq.exec.error.eq(ex.ctl.error),
                             seq.exec.error_code.eq(ex.ctl.error_code)]
        for e in ENGINES:
            if busy_of[e]:
                m.d.comb += busy[e].eq(Cat(*busy_of[e]).any())
            m.d.comb += getattr(regs.engine_busy, e.lower()).eq(busy[e])

        def route(src_cmd, src_rd, src_wcmd=None, src_wdata=None):
            m.d.comb += [dma.rd_cmd.valid.eq(src_cmd.valid), dma.rd_cmd.payload.eq(src_cmd.payload),
                         src_cmd.ready.eq(dma.rd_cmd.ready),
                         src_rd.valid.eq(dma.rd_data.valid), src_rd.payload.eq(dma.rd_data.payload),
                         dma.rd_data.ready.eq(src_rd.ready)]
            if src_wcmd is not None:
                m.d.comb += [dma.wr_cmd.valid.eq(src_wcmd.valid), dma.wr_cmd.payload.eq(src_wcmd.payload),
                             src_wcmd.ready.eq(dma.wr_cmd.ready),
                             dma.wr_data.valid.eq(src_wdata.valid), dma.wr_data.payload.eq(src_wdata.payload),
                             src_wdata.ready.eq(dma.wr_data.ready)]

        with m.If(~seq.executing):
            route(seq.rd_cmd, seq.rd_data)
        for ex, own in zip(instances, mine):
            with m.Elif(own):
                route(ex.rd_cmd, ex.rd_data, ex.wr_cmd, ex.wr_data)
        return m
