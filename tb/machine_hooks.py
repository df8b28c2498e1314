"""Test-only executors for the machine's control plane (tb/test_machine.py); never built into hardware.

``EchoExecutor`` runs no arithmetic: on ``go`` it writes the 128-byte record it was handed to
``dram_bytes - 128 (index + 1)`` of the DRAM image through its share of the DMA, and reports done
on the write's ``wr_done``. A testbench that enlarges the image by ``128 * ops`` bytes (patching the
header's ``dram_bytes``) reads every record back from there: proof that the sequencer fetched each
record whole and in order, handed it over, moved the DMA's window to the DRAM image and gave the
executor the DMA's write side.
"""
from __future__ import annotations

from amaranth import Elaboratable, Module, ResetInserter, Signal

from arch import encoding
from rtl.machine import Executor
from rtl.record import word


class EchoExecutor(Executor):
    def elaborate(self, platform):
        m = Module()
        m.submodules.core = ResetInserter(self.ctl.abort)(_Echo(self))
        return m


class _Echo(Elaboratable):
    def __init__(self, ex: EchoExecutor):
        self.ex = ex

    def elaborate(self, platform):
        m = Module()
        self = self.ex
        B = self.cfg.axi_data_bits // 8
        ctl = self.ctl
        beat = Signal(range(encoding.RECORD_BYTES // B + 1))
        index = word(ctl.record, 1)[0:16]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(ctl.go):
                    m.d.sync += beat.eq(0)
                    m.next = "CMD"
            with m.State("CMD"):
                m.d.comb += [self.busy.eq(1), self.wr_cmd.valid.eq(1),
                             self.wr_cmd.payload.addr.eq(ctl.dram_base + ctl.dram_bytes
                                                           - encoding.RECORD_BYTES * (index + 1)),
                             self.wr_cmd.payload.len.eq(encoding.RECORD_BYTES)]
                with m.If(self.wr_cmd.ready):
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [self.busy.eq(1), self.wr_data.valid.eq(1),
                             self.wr_data.payload.data.eq(ctl.record.word_select(beat, 8 * B)),
                             self.wr_data.payload.strb.eq((1 << B) - 1)]
                with m.If(self.wr_data.ready):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == encoding.RECORD_BYTES // B - 1):
                        m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.wr_done):
                    m.d.comb += ctl.done.eq(1)
                    m.next = "IDLE"
        return m
