"""The sequencer: fetches the binary program (arch/encoding.py) from DRAM, checks it, and hands each
operation to the executor of its opcode, in order.

On ``start`` (the register block's CTRL.START) it

1. checks PROGRAM_BASE (64-byte aligned: MISALIGNED), PROGRAM_OPS (at most :data:`MAX_OPS`, the
   record's 16-bit index field: PROGRAM_TOO_LONG) and that both bases fit the AXI address
   (ADDR_RANGE);
2. reads the 64-byte header through the DMA and checks magic, binary version, the configuration key
   (a program runs only on the configuration it was compiled for) and that its operation count is
   PROGRAM_OPS (BAD_PROGRAM otherwise);
3. for each operation: reads its 128-byte record, checks it (the index is the operation's position
   and the operand descriptors are well formed: BAD_PROGRAM; the opcode has an executor in this
   build: BAD_OPCODE; the weights, the parameter block and every DRAM operand lie inside the DRAM
   image of the header's ``dram_bytes``, every activation-buffer operand inside the buffer:
   ADDR_RANGE), then pulses ``go`` of the executor with the record, and waits for its ``done``
   (OPS_DONE counts it) or ``error``;
4. pulses ``done`` after the last operation.

Any error (its own checks, an executor's, the DMA's latched AXI / address error) pulses ``error``
with its :class:`arch.regmap.ErrorCode` once and stops: the running executor gets ``abort``, and the
sequencer stays busy until the DMA has flushed what it had issued, so a program can never hang the
bus or the register block. The next start clears the DMA's latched error.

The DMA is the sequencer's while it fetches and the executor's while one runs (``owner``): the top
level muxes its streams. During a fetch its address window is the whole AXI space (the program may
lie anywhere); while an operation runs it is the DRAM image, ``[DRAM_BASE, DRAM_BASE +
dram_bytes)``, so an executor's stray access is refused by the DMA before it reaches the bus.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from arch import encoding
from arch.regmap import ERROR_CODE_BITS, ErrorCode, config_key
from rtl.dma import cmd_layout, rd_data_layout
from rtl.record import word

RECORD_BITS = 8 * encoding.RECORD_BYTES
HEADER_BITS = 8 * encoding.HEADER_BYTES
MAX_OPS = (1 << 16) - 1                 # the record's index field
MAGIC = int.from_bytes(encoding.MAGIC, "little")
PROGRAM_ALIGN = 64                      # the header's size: every record then starts on a 128-byte step
CHECK_ITEMS = 2 + encoding.MAX_OPERANDS     # weights, parameter block, operands


def executor_signature() -> wiring.Signature:
    """What the sequencer drives into an executor (``Out``) and what it reads back (``In``).

    ``go`` pulses once per operation with ``record`` (the 128-byte record, word ``i`` at bits
    ``32 i``) valid from that cycle until ``done`` / ``error``; ``dram_base`` is DRAM_BASE (the program's
    addresses are relative to it) and ``dram_bytes`` the header's image size.
    ``abort`` pulses when the program stops on an error while the executor runs: it must return to
    idle and drop what it was doing (the DMA flushes by itself)."""
    return wiring.Signature({
        "go": Out(1), "abort": Out(1), "record": Out(RECORD_BITS), "dram_base": Out(64),
        "dram_bytes": Out(32),
        "done": In(1), "error": In(1), "error_code": In(ERROR_CODE_BITS),
    })


class Sequencer(wiring.Component):
    def __init__(self, cfg, opcodes: tuple[str, ...] = ()):
        """``opcodes``: the opcode names this build has executors for (others are BAD_OPCODE)."""
        self.cfg = cfg
        unknown = set(opcodes) - set(encoding.OPCODE_IDS)
        if unknown:
            raise ValueError(f"unknown opcodes {sorted(unknown)}; known: {sorted(encoding.OPCODE_IDS)}")
        self.opcodes = tuple(opcodes)
        A = cfg.axi_addr_bits
        super().__init__({
            # register block side (rtl/regs.py)
            "start": In(1), "program_base": In(64), "program_ops": In(32), "dram_base": In(64),
            "busy": Out(1), "done": Out(1), "error": Out(1), "error_code": Out(ERROR_CODE_BITS),
            "op_done": Out(1),
            # the DMA (rtl/dma.py) while the sequencer owns it
            "rd_cmd": Out(stream.Signature(cmd_layout(cfg))),
            "rd_data": In(stream.Signature(rd_data_layout(cfg))),
            "dma_error": In(1), "dma_error_code": In(ERROR_CODE_BITS), "dma_busy": In(1),
            "dma_clear": Out(1), "window_base": Out(A), "window_size": Out(A + 1),
            # the executors: which one runs (one-hot over ``opcodes``) and owns the DMA
            "exec": Out(executor_signature()),
            "owner": Out(max(1, len(self.opcodes))), "executing": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        A = cfg.axi_addr_bits
        B = cfg.axi_data_bits // 8
        if encoding.HEADER_BYTES % B:
            raise ValueError(f"a {8 * B}-bit AXI bus does not divide the {encoding.HEADER_BYTES}-byte header")
        act_bytes = cfg.act_buffer_kib * 1024

        base = Signal(A)                     # PROGRAM_BASE, latched at start
        dbase = Signal(A)
        n_ops = Signal(16)
        dram_bytes = Signal(32)
        index = Signal(16)                   # the operation being fetched / run
        header = Signal(HEADER_BITS)
        record = Signal(RECORD_BITS)
        beat = Signal(range(encoding.RECORD_BYTES // B + 1))
        code = Signal(ERROR_CODE_BITS)
        item = Signal(range(CHECK_ITEMS + 1))
        sel = Signal(len(self.owner))

        m.d.comb += [
            self.exec.record.eq(record), self.exec.dram_bytes.eq(dram_bytes),
            self.exec.dram_base.eq(dbase), self.owner.eq(sel),
            self.error_code.eq(code),
        ]

        # --- record fields --------------------------------------------------------------------
        w0 = word(record, 0)
        opcode = w0[0:8]
        n_in, n_out = w0[16:20], w0[20:24]
        known = Signal()
        onehot = Signal(len(self.owner))
        for i, name in enumerate(self.opcodes):
            with m.If(opcode == encoding.OPCODE_IDS[name]):
                m.d.comb += [known.eq(1), onehot.eq(1 << i)]

        # one range check per cycle: item 0 the weights, 1 the parameter block, 2.. the operands
        lo_addr, size, limit, present, bad_desc = Signal(33), Signal(52), Signal(33), Signal(), Signal()
        n_operands = Signal(4)
        m.d.comb += n_operands.eq(n_in + n_out)
        with m.Switch(item):
            with m.Case(0):
                m.d.comb += [present.eq(word(record, 13) != encoding.NONE), lo_addr.eq(word(record, 13)),
                             size.eq(word(record, 14)), limit.eq(dram_bytes)]
            with m.Case(1):
                m.d.comb += [present.eq(word(record, 15) != encoding.NONE), lo_addr.eq(word(record, 15)),
                             size.eq(word(record, 16)), limit.eq(dram_bytes)]
            for k in range(encoding.MAX_OPERANDS):
                with m.Case(2 + k):
                    head = word(record, encoding.OPERAND_WORDS + 3 * k)
                    dims = word(record, encoding.OPERAND_WORDS + 3 * k + 2)
                    space, bits = head[0:2], head[2:7]
                    elem = Signal(3, name=f"elem{k}")
                    m.d.comb += elem.eq((bits + 7) >> 3)
                    m.d.comb += [
                        present.eq((k < n_operands) & (space != encoding.SPACE_IDS["line"])),
                        lo_addr.eq(word(record, encoding.OPERAND_WORDS + 3 * k + 1)),
                        size.eq(head[16:32] * dims[0:16] * dims[16:32] * elem),
                        limit.eq(Mux(space == encoding.SPACE_IDS["dram"], dram_bytes, act_bytes)),
                        bad_desc.eq((k < n_operands) & ((space == 3) | (bits == 0) | (bits > 16))),
                    ]
        out_of_range = Signal()
        m.d.comb += out_of_range.eq(present & (lo_addr + size > limit))

        # the error pulse is registered so the code the register block latches with it is the new one
        err_pulse = Signal()
        m.d.sync += err_pulse.eq(0)
        m.d.comb += self.error.eq(err_pulse)

        def fail(c):
            m.d.sync += [code.eq(c), err_pulse.eq(1)]
            m.next = "HALT"

        m.d.comb += self.busy.eq(1)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(0)
                with m.If(self.start):
                    m.d.comb += self.dma_clear.eq(1)
                    m.d.sync += [base.eq(self.program_base), dbase.eq(self.dram_base), index.eq(0),
                                 code.eq(ErrorCode.NONE)]
                    with m.If(self.program_base[:6] != 0):
                        fail(ErrorCode.MISALIGNED)
                    with m.Elif((self.program_base >> A != 0) | (self.dram_base >> A != 0)):
                        fail(ErrorCode.ADDR_RANGE)
                    with m.Elif(self.program_ops > MAX_OPS):
                        fail(ErrorCode.PROGRAM_TOO_LONG)
                    with m.Else():
                        m.d.sync += n_ops.eq(self.program_ops)
                        m.next = "HEADER_CMD"

            # --- header ------------------------------------------------------------------------
            with m.State("HEADER_CMD"):
                m.d.comb += [self.rd_cmd.valid.eq(~self.dma_busy), self.rd_cmd.payload.addr.eq(base),
                             self.rd_cmd.payload.len.eq(encoding.HEADER_BYTES)]
                m.d.sync += beat.eq(0)
                with m.If(self.rd_cmd.valid & self.rd_cmd.ready):
                    m.next = "HEADER_DATA"
            with m.State("HEADER_DATA"):
                m.d.comb += self.rd_data.ready.eq(1)
                with m.If(self.dma_error):
                    fail(self.dma_error_code)
                with m.Elif(self.rd_data.valid):
                    m.d.sync += [header.word_select(beat, 8 * B).eq(self.rd_data.payload.data), beat.eq(beat + 1)]
                    with m.If(self.rd_data.payload.last):
                        m.next = "HEADER_CHECK"
            with m.State("HEADER_CHECK"):
                ok = ((word(header, 0) == MAGIC) & (word(header, 1) == encoding.BINARY_VERSION)
                      & (word(header, 2) == n_ops) & (word(header, 4) == config_key(cfg)))
                m.d.sync += dram_bytes.eq(word(header, encoding.HEADER_DRAM_BYTES // 4))
                with m.If(~ok):
                    fail(ErrorCode.BAD_PROGRAM)
                with m.Elif(n_ops == 0):
                    m.next = "FINISH"
                with m.Else():
                    m.next = "RECORD_CMD"

            # --- one operation -----------------------------------------------------------------
            with m.State("RECORD_CMD"):
                m.d.comb += [self.rd_cmd.valid.eq(1),
                             self.rd_cmd.payload.addr.eq(base + encoding.HEADER_BYTES
                                                         + index * encoding.RECORD_BYTES),
                             self.rd_cmd.payload.len.eq(encoding.RECORD_BYTES)]
                m.d.sync += beat.eq(0)
                with m.If(self.dma_error):
                    fail(self.dma_error_code)
                with m.Elif(self.rd_cmd.ready):
                    m.next = "RECORD_DATA"
            with m.State("RECORD_DATA"):
                m.d.comb += self.rd_data.ready.eq(1)
                with m.If(self.dma_error):
                    fail(self.dma_error_code)
                with m.Elif(self.rd_data.valid):
                    m.d.sync += [record.word_select(beat, 8 * B).eq(self.rd_data.payload.data), beat.eq(beat + 1)]
                    with m.If(self.rd_data.payload.last):
                        m.d.sync += item.eq(0)
                        m.next = "RECORD_CHECK"
            with m.State("RECORD_CHECK"):
                with m.If((word(record, 1)[0:16] != index) | (n_in > 3) | (n_out > 2)):
                    fail(ErrorCode.BAD_PROGRAM)
                with m.Elif(~known):
                    fail(ErrorCode.BAD_OPCODE)
                with m.Else():
                    m.next = "RANGE_CHECK"
            with m.State("RANGE_CHECK"):
                with m.If(bad_desc):
                    fail(ErrorCode.BAD_PROGRAM)
                with m.Elif(out_of_range):
                    fail(ErrorCode.ADDR_RANGE)
                with m.Elif(item == CHECK_ITEMS - 1):
                    m.d.sync += sel.eq(onehot)
                    m.next = "GO"
                with m.Else():
                    m.d.sync += item.eq(item + 1)
            with m.State("GO"):
                m.d.comb += self.exec.go.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                with m.If(self.dma_error):
                    m.d.comb += self.exec.abort.eq(1)
                    fail(self.dma_error_code)
                with m.Elif(self.exec.error):
                    m.d.comb += self.exec.abort.eq(1)
                    fail(self.exec.error_code)
                with m.Elif(self.exec.done):
                    m.d.comb += self.op_done.eq(1)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index + 1 == n_ops):
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "RECORD_CMD"
            with m.State("FINISH"):
                # the last operation's DRAM writes are complete (executors finish on wr_done)
                with m.If(~self.dma_busy):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
            with m.State("HALT"):
                # stopped on an error: stay busy until the DMA has flushed what it issued
                with m.If(~self.dma_busy):
                    m.next = "IDLE"

        running_exec = Signal()
        with m.If(self.exec.go):
            m.d.sync += running_exec.eq(1)
        with m.If(self.exec.done | self.exec.error | self.exec.abort):
            m.d.sync += running_exec.eq(0)
        m.d.comb += self.executing.eq(running_exec)
        # the DMA's window: the whole address space while fetching, the DRAM image while an op runs
        with m.If(running_exec | self.exec.go):
            m.d.comb += [self.window_base.eq(dbase), self.window_size.eq((dram_bytes + B - 1) & ~(B - 1))]
        with m.Else():
            m.d.comb += [self.window_base.eq(0), self.window_size.eq(1 << A)]
        return m
