"""Staged executors: load an operation's operands into a local scratch, compute, store the result.

``StagedExecutor(cfg, cores)`` is an :class:`rtl.machine.Executor` in three phases:

1. **load**: every input operand, the weights and the parameter block are read from DRAM through the
   DMA into one scratch memory (``cfg.act_buffer_kib`` KiB, one bus word per row: a DMA beat is
   written per cycle), each region on an ``ALIGN`` (64-byte) boundary: inputs 0..2, weights,
   parameters, then the outputs' regions;
2. **compute**: the core of the record's opcode (a :class:`Core` subclass: an engine or an integer
   unit and the address generation that feeds it) reads the scratch through one read port (data the
   cycle after the address: the byte addressed and its whole row) and writes it through one write
   port (a byte, or the bytes of a row under a mask); the scratch past the regions is the core's to
   use (:class:`RowRun` and :class:`RowWrite` move runs of bytes a row per cycle);
3. **store**: each output's computed slice is written back to DRAM, a bus word per beat: the
   channels ``[oc0, oc1)`` of the output (``out_offset + oc0 ..`` for ``MAT.ATTN_QKV``; both
   outputs whole for ``MAT.ATTN_KV``), so two operations that share an output tensor (a layer split
   between the engines, the heads of an attention) each write only their own channels. A slice that
   does not start on a bus word is written from the word below with the leading byte strobes
   cleared. ``done`` follows the last write response.

One executor holds every core of the machine (rtl/executors.py): they share the scratch and the
load / store sequencer, as they share the DMA. An operand that is not in DRAM (the compiler's
``on_chip=False`` placement puts every tensor there) or an operation whose regions exceed the scratch
stops the program with BAD_GEOMETRY before any of it runs; an opcode with no core, BAD_OPCODE. The
phases do not overlap; how fast the cores feed their engines sets the machine's pace
(docs/machine.md).
"""
from __future__ import annotations

from contextlib import contextmanager

from amaranth import Cat, Const, Elaboratable, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from arch import encoding
from arch.program import ALIGN
from arch.regmap import ERROR_CODE_BITS, ErrorCode
from rtl import record as R
from rtl.machine import Executor
from rtl.sequencer import RECORD_BITS

MAX_IN, MAX_OUT = 3, 2
PLAN_STEPS = 2 * encoding.MAX_OPERANDS + 2 * MAX_OUT   # the plan's products (see _Body)


def scratch_depth(cfg) -> int:
    return cfg.act_buffer_kib * 1024


def regions(prog, op) -> dict:
    """The scratch regions the plan gives ``op`` (Python mirror of ``_Body``): offsets of the inputs,
    weights, parameters and outputs, and ``free``, where the space past them begins (``free_off``)."""
    align = lambda v: -(-v // ALIGN) * ALIGN                      # noqa: E731
    sizes = [prog.tensors[t].bytes for t in op.inputs] + [0] * (MAX_IN - len(op.inputs))
    sizes += [op.weight_bytes, op.param_span if op.params else 0]
    offs, off = [], 0
    for sz in sizes:
        offs.append(off)
        off = align(off + sz)
    outs = []
    for t in op.outputs:
        outs.append(off)
        off = align(off + prog.tensors[t].bytes)
    return {"inputs": offs[:MAX_IN], "weights": offs[MAX_IN], "params": offs[MAX_IN + 1], "outputs": outs,
            "free": off}


def core_write(word_bytes: int, waddr, wdata, wen, wrow, wmask) -> tuple:
    """The scratch write port's ``(data, en)`` for a core's write (see :func:`core_members`): the byte
    ``wdata`` at ``waddr`` when ``wen``, or the bytes of ``wrow`` that ``wmask`` selects."""
    lb = word_bytes.bit_length() - 1
    rowwise = wmask.any()
    return (Mux(rowwise, wrow, Cat(*([wdata] * word_bytes))),
            Mux(rowwise, wmask, Mux(wen, Const(1, word_bytes) << waddr[:lb], 0)))


def core_members(abits: int, word_bytes: int) -> dict:
    """A compute core's ports, as the core declares them. ``rdata`` is the byte at the address given the
    cycle before, ``rword`` the whole scratch row (``word_bytes`` bytes) holding it; ``free_off`` is
    where the scratch past the operation's regions begins (a core may use it up to ``scratch_depth``).
    A write is the byte ``wdata`` at ``waddr`` (with ``wen``), or, when ``wmask`` has a bit set, the bytes
    of ``wrow`` that ``wmask`` selects into the row holding ``waddr``."""
    return {
        "go": In(1), "done": Out(1), "error": Out(1), "error_code": Out(ERROR_CODE_BITS), "busy": Out(1),
        "record": In(RECORD_BITS),
        "in_off": In(data.ArrayLayout(abits, MAX_IN)), "w_off": In(abits), "p_off": In(abits),
        "out_off": In(data.ArrayLayout(abits, MAX_OUT)), "free_off": In(abits + 1),
        "raddr": Out(abits), "rdata": In(8), "rword": In(8 * word_bytes),
        "waddr": Out(abits), "wdata": Out(8), "wen": Out(1),
        "wrow": Out(8 * word_bytes), "wmask": Out(word_bytes),
    }


class Core(wiring.Component):
    """Base of the compute cores: ``go`` with the record and the regions' scratch offsets; ``done``
    (or ``error`` with a code) once the outputs' regions hold the operation's results."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.abits = max(1, (scratch_depth(cfg) - 1).bit_length())
        self.word_bytes = cfg.axi_data_bits // 8
        super().__init__(core_members(self.abits, self.word_bytes))


class StagedExecutor(Executor):
    def __init__(self, cfg, cores):
        """``cores``: a :class:`Core` subclass that runs every opcode, or a mapping from opcode names to
        :class:`Core` subclasses (each class instantiated once, with ``cfg``; opcodes that name the same
        class share it). All cores share one scratch and the load / store sequencer."""
        if isinstance(cores, type):
            cores = {None: cores}
        unknown = set(cores) - set(encoding.OPCODE_IDS) - {None}
        if unknown:
            raise ValueError(f"cores for unknown opcodes {sorted(unknown)}")
        self.cores = dict(cores)
        super().__init__(cfg)

    def elaborate(self, platform):
        m = Module()
        classes = list(dict.fromkeys(self.cores.values()))
        table = [(tuple(encoding.OPCODE_IDS[o] for o, c in self.cores.items() if c is cls and o is not None),
                  cls(self.cfg)) for cls in classes]
        m.submodules.body = ResetInserter(self.ctl.abort)(_Body(self, table))
        return m


class _Body(Elaboratable):
    def __init__(self, ex: StagedExecutor, cores: list):
        """``cores``: ``(opcode ids, core)`` pairs; an empty tuple: the core takes every opcode."""
        self.ex, self.cores = ex, cores

    def elaborate(self, platform):
        m = Module()
        ex, cfg = self.ex, self.ex.cfg
        ctl = ex.ctl
        rec = ctl.record
        B = cfg.axi_data_bits // 8
        lb = B.bit_length() - 1
        S = scratch_depth(cfg)
        if S % B or ALIGN % B:
            raise ValueError(f"the scratch ({S} bytes) and the {ALIGN}-byte regions must be whole "
                             f"{8 * B}-bit bus words")
        cores = [c for _, c in self.cores]
        ab = cores[0].abits
        for i, c in enumerate(cores):
            m.submodules[f"core{i}"] = c
        # one bus word per scratch row: a DMA beat is one write, a store beat one read; the cores see
        # bytes (the word's byte lane chosen by the address's low bits, registered with the read)
        m.submodules.scratch = scratch = memory.Memory(shape=data.ArrayLayout(8, B), depth=S // B, init=[])
        wp = scratch.write_port(granularity=1)     # one enable per byte (an element of the row)
        rp = scratch.read_port()                       # synchronous: data the cycle after the address

        # the core of the record's opcode (chosen when the executor starts)
        sel = Signal(len(cores))
        match = Signal(len(cores))
        for i, (ids, _) in enumerate(self.cores):
            m.d.comb += match[i].eq(1 if not ids else Cat(*(R.opcode(rec) == k for k in ids)).any())
        core_raddr, core_waddr, core_wdata, core_wen = Signal(ab), Signal(ab), Signal(8), Signal()
        core_wrow, core_wmask = Signal(8 * B), Signal(B)
        core_done, core_err, core_code = Signal(), Signal(), Signal(ERROR_CODE_BITS)
        core_go = Signal()
        first = Signal(len(cores))
        for i in reversed(range(len(cores))):
            with m.If(match[i]):
                m.d.comb += first.eq(1 << i)
        for i, c in enumerate(cores):
            m.d.comb += c.go.eq(core_go & sel[i])
            with m.If(sel[i]):
                m.d.comb += [core_raddr.eq(c.raddr), core_waddr.eq(c.waddr), core_wdata.eq(c.wdata),
                             core_wen.eq(c.wen), core_wrow.eq(c.wrow), core_wmask.eq(c.wmask),
                             core_done.eq(c.done), core_err.eq(c.error),
                             core_code.eq(c.error_code)]

        # --- plan: the regions of the scratch ----------------------------------------------------
        # The products the plan needs (operand sizes, the stored slices' bounds) go one per cycle
        # through one shared multiplier (PLAN's steps, below): a multiplier per product would cost
        # more DSPs than the engines on a small FPGA.
        n_in, n_out = R.n_inputs(rec), R.n_outputs(rec)
        ops = [R.operand(rec, k) for k in range(encoding.MAX_OPERANDS)]
        has_w = R.weights_addr(rec) != encoding.NONE
        has_p = R.params_addr(rec) != encoding.NONE
        plane_r = [Signal(32, name=f"plane{k}") for k in range(encoding.MAX_OPERANDS)]
        size_r = [Signal(40, name=f"size{k}") for k in range(encoding.MAX_OPERANDS)]
        lo_r = [Signal(40, name=f"out_lo{o}") for o in range(MAX_OUT)]
        hi_r = [Signal(40, name=f"out_hi{o}") for o in range(MAX_OUT)]
        sizes = [Mux(k < n_in, size_r[k], 0) for k in range(MAX_IN)]
        sizes += [Mux(has_w, R.weights_bytes(rec), 0), Mux(has_p, R.params_bytes(rec), 0)]
        offs = []
        off = 0
        for i, sz in enumerate(sizes):
            s = Signal(40, name=f"region{i}")
            m.d.comb += s.eq(off)
            offs.append(s)
            off = R.align(s + sz)
        is_kv = R.opcode(rec) == encoding.OPCODE_IDS["MAT.ATTN_KV"]
        is_qkv = R.opcode(rec) == encoding.OPCODE_IDS["MAT.ATTN_QKV"]
        shift = Mux(is_qkv, R.geom(rec, "out_offset"), 0)
        out_offs, out_addr, out_slot = [], [], []
        for o in range(MAX_OUT):
            # output o is operand slot n_in + o
            s = Signal(40, name=f"out_region{o}")
            slot = Signal(range(encoding.MAX_OPERANDS + MAX_OUT), name=f"out_slot{o}")
            addr_o = Signal(32, name=f"out_addr{o}")
            size_o = Signal(40, name=f"out_size{o}")
            m.d.comb += slot.eq(n_in + o)
            with m.Switch(slot):
                for k in range(encoding.MAX_OPERANDS):
                    with m.Case(k):
                        m.d.comb += [addr_o.eq(ops[k].addr), size_o.eq(Mux(o < n_out, size_r[k], 0))]
            m.d.comb += s.eq(off)
            out_offs.append(s)
            out_addr.append(addr_o)
            out_slot.append(slot)
            off = R.align(s + size_o)
        out_lo, out_hi = lo_r, hi_r
        total = Signal(41)
        m.d.comb += total.eq(off)
        not_dram = Signal()
        m.d.comb += not_dram.eq(Cat(*[(k < n_in + n_out) & (ops[k].space != encoding.SPACE_IDS["dram"])
                                      for k in range(encoding.MAX_OPERANDS)]).any())

        for core in cores:
            m.d.comb += [core.record.eq(rec), core.w_off.eq(offs[3]), core.p_off.eq(offs[4]),
                         core.free_off.eq(Mux(total > S, S, total))]
            for i in range(MAX_IN):
                m.d.comb += core.in_off[i].eq(offs[i])
            for o in range(MAX_OUT):
                m.d.comb += core.out_off[o].eq(out_offs[o])

        # --- scratch ports: the core's while it computes, else the load / store sequencer's ----------
        ld_addr, ld_data, ld_en = Signal(ab), Signal(8 * B), Signal()
        st_addr = Signal(ab)
        computing = Signal()
        raddr = Signal(ab)
        lane = Signal(lb)
        m.d.comb += [rp.en.eq(1), rp.addr.eq(raddr >> lb)]
        m.d.sync += lane.eq(raddr[:lb])
        with m.If(computing):
            wdata, wen = core_write(B, core_waddr, core_wdata, core_wen, core_wrow, core_wmask)
            m.d.comb += [raddr.eq(core_raddr), wp.addr.eq(core_waddr >> lb), wp.data.eq(wdata), wp.en.eq(wen)]
        with m.Else():
            m.d.comb += [raddr.eq(st_addr), wp.addr.eq(ld_addr >> lb), wp.data.eq(ld_data),
                         wp.en.eq(Mux(ld_en, (1 << B) - 1, 0))]
        for core in cores:
            m.d.comb += [core.rdata.eq(rp.data.as_value().word_select(lane, 8)), core.rword.eq(rp.data.as_value())]

        # --- the phases ------------------------------------------------------------------------------
        item = Signal(range(6))                 # load: inputs 0..2, weights (3), parameters (4)
        src = Signal(64)
        dst = Signal(ab)
        left = Signal(40)                       # bytes still to write into the scratch
        have = Signal()
        o_idx = Signal(range(MAX_OUT + 1))
        pend = Signal(range(MAX_OUT + 1))       # store commands without their write response yet
        addr_l = [R.operand(rec, k).addr for k in range(MAX_IN)] + [R.weights_addr(rec), R.params_addr(rec)]
        err = Signal()
        code = Signal(ERROR_CODE_BITS)
        pstep = Signal(range(PLAN_STEPS + 1))
        mul_a, mul_b = Signal(33), Signal(17)
        product = Signal(50)
        m.d.comb += product.eq(mul_a * mul_b)
        m.d.comb += [ctl.error.eq(err), ctl.error_code.eq(code)]

        with m.If(ex.wr_done):
            m.d.sync += pend.eq(pend - 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(ctl.go):
                    m.d.sync += [item.eq(0), sel.eq(first), pstep.eq(0)]      # the first core that takes it
                    m.next = "PLAN"
            with m.State("PLAN"):
                # step 2k: operand k's plane, 2k + 1: its size; then each output's slice bounds
                m.d.comb += ex.busy.eq(1)
                with m.Switch(pstep):
                    for k in range(encoding.MAX_OPERANDS):
                        with m.Case(2 * k):
                            m.d.comb += [mul_a.eq(ops[k].d1), mul_b.eq(ops[k].d2)]
                            m.d.sync += plane_r[k].eq(product)
                        with m.Case(2 * k + 1):
                            m.d.comb += [mul_a.eq(plane_r[k]), mul_b.eq(ops[k].d0)]
                            m.d.sync += size_r[k].eq(Mux(ops[k].elem_bytes == 2, product << 1, product))
                    for o in range(MAX_OUT):
                        for j, (bound, reg) in enumerate(((R.oc0(rec), lo_r[o]), (R.oc1(rec), hi_r[o]))):
                            with m.Case(2 * encoding.MAX_OPERANDS + 2 * o + j):
                                with m.Switch(out_slot[o]):
                                    for k in range(encoding.MAX_OPERANDS):
                                        with m.Case(k):
                                            m.d.comb += [mul_a.eq(Mux(ops[k].elem_bytes == 2, plane_r[k] << 1, plane_r[k])),
                                                         mul_b.eq(bound + shift)]
                                            m.d.sync += reg.eq(Mux(is_kv, 0 if j == 0 else size_r[k], product))
                m.d.sync += pstep.eq(pstep + 1)
                with m.If(pstep == PLAN_STEPS - 1):
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += ex.busy.eq(1)
                with m.If(sel == 0):
                    m.d.comb += [err.eq(1), code.eq(ErrorCode.BAD_OPCODE)]
                    m.next = "IDLE"
                with m.Elif(not_dram | (total > S)):
                    m.d.comb += err.eq(1)
                    m.d.comb += code.eq(ErrorCode.BAD_GEOMETRY)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "LOAD_NEXT"
            with m.State("LOAD_NEXT"):
                m.d.comb += ex.busy.eq(1)
                with m.Switch(item):
                    for i in range(5):
                        with m.Case(i):
                            m.d.sync += [src.eq(ctl.dram_base + addr_l[i]), dst.eq(offs[i]), left.eq(sizes[i])]
                    with m.Default():
                        m.d.sync += left.eq(0)
                with m.If(item == 5):
                    m.next = "COMPUTE"
                with m.Else():
                    m.next = "LOAD_CMD"
            with m.State("LOAD_CMD"):
                m.d.comb += ex.busy.eq(1)
                with m.If(left == 0):
                    m.d.sync += item.eq(item + 1)
                    m.next = "LOAD_NEXT"
                with m.Else():
                    m.d.comb += [ex.rd_cmd.valid.eq(1), ex.rd_cmd.payload.addr.eq(src),
                                 ex.rd_cmd.payload.len.eq(left)]
                    with m.If(ex.rd_cmd.ready):
                        m.d.sync += have.eq(0)
                        m.next = "LOAD_DATA"
            with m.State("LOAD_DATA"):
                # one beat per cycle, written whole (regions start on bus words; a region's last beat
                # may write past its end, inside its alignment padding)
                m.d.comb += [ex.busy.eq(1), ex.rd_data.ready.eq(1), ld_addr.eq(dst),
                             ld_data.eq(ex.rd_data.payload.data), ld_en.eq(ex.rd_data.valid)]
                with m.If(ex.rd_data.valid):
                    m.d.sync += dst.eq(dst + B)
                    with m.If(ex.rd_data.payload.last):
                        m.d.sync += item.eq(item + 1)
                        m.next = "LOAD_NEXT"
            with m.State("COMPUTE"):
                m.d.comb += [ex.busy.eq(1), computing.eq(1)]
                m.d.comb += core_go.eq(~have)
                m.d.sync += have.eq(1)               # reused: the core has been started
                with m.If(have & core_err):
                    m.d.comb += [err.eq(1), code.eq(core_code)]
                    m.next = "IDLE"
                with m.Elif(have & core_done):
                    m.d.sync += [o_idx.eq(0), pend.eq(0)]
                    m.next = "STORE_NEXT"
            with m.State("STORE_NEXT"):
                m.d.comb += ex.busy.eq(1)
                lead = Signal(range(B))
                start = Signal(64)
                with m.Switch(o_idx):
                    for o in range(MAX_OUT):
                        with m.Case(o):
                            m.d.comb += start.eq(ctl.dram_base + out_addr[o] + out_lo[o])
                            m.d.sync += [left.eq(out_hi[o] - out_lo[o] + start[:B.bit_length() - 1]),
                                         st_addr.eq(out_offs[o] + out_lo[o] - start[:B.bit_length() - 1]),
                                         src.eq(start & ~(B - 1))]
                m.d.comb += lead.eq(start[:B.bit_length() - 1])
                m.d.sync += have.eq(0)
                with m.If((o_idx >= n_out) | (o_idx == MAX_OUT)):
                    m.next = "STORE_WAIT"
                with m.Else():
                    m.d.sync += dst.eq(lead)           # dst: leading bytes to mask in the first beat
                    m.next = "STORE_CMD"
            with m.State("STORE_CMD"):
                m.d.comb += ex.busy.eq(1)
                with m.If(left == 0):
                    m.d.sync += o_idx.eq(o_idx + 1)
                    m.next = "STORE_NEXT"
                with m.Else():
                    m.d.comb += [ex.wr_cmd.valid.eq(1), ex.wr_cmd.payload.addr.eq(src),
                                 ex.wr_cmd.payload.len.eq(left)]
                    with m.If(ex.wr_cmd.ready):
                        m.d.sync += pend.eq(pend + 1 - ex.wr_done)
                        m.next = "STORE_FILL"
            with m.State("STORE_FILL"):
                # the word's address goes out; it is read in STORE_BEAT (st_addr is word-aligned: the
                # region and the DRAM slice start on bus words but for the slice's lead, masked below)
                m.d.comb += ex.busy.eq(1)
                m.next = "STORE_BEAT"
            with m.State("STORE_BEAT"):
                m.d.comb += ex.busy.eq(1)
                strb = Signal(B)
                m.d.comb += strb.eq(~((Const(1, 1) << dst[:lb]) - 1))
                m.d.comb += [ex.wr_data.valid.eq(1), ex.wr_data.payload.data.eq(rp.data.as_value()),
                             ex.wr_data.payload.strb.eq(strb)]
                with m.If(ex.wr_data.ready):
                    m.d.sync += [dst.eq(0), st_addr.eq(st_addr + B)]
                    with m.If(left <= B):
                        m.d.sync += [left.eq(0), o_idx.eq(o_idx + 1)]
                        m.next = "STORE_NEXT"
                    with m.Else():
                        m.d.sync += left.eq(left - B)
                        m.next = "STORE_FILL"
            with m.State("STORE_WAIT"):
                m.d.comb += ex.busy.eq(1)
                with m.If(pend == 0):
                    m.d.comb += ctl.done.eq(1)
                    m.next = "IDLE"
        return m



class ScalarFetch(wiring.Component):
    """Reads little-endian integers from the scratch, one byte per cycle: on ``go`` every field of
    ``fields`` (``(name, bytes, signed)``) from its ``addr.<name>``, into ``value.<name>``
    (sign-extended to 64 bits where signed); ``done`` pulses after the last byte. A core points its
    scratch read port at ``raddr`` while ``busy``."""

    def __init__(self, abits: int, fields):
        self.fields = list(fields)
        names = [f[0] for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"ScalarFetch: duplicate field names in {names}")
        super().__init__({
            "go": In(1), "done": Out(1), "busy": Out(1),
            "addr": In(data.StructLayout({n: abits for n in names})),
            "value": Out(data.StructLayout({n: 64 for n in names})),
            "raddr": Out(abits), "rdata": In(8),
        })

    def elaborate(self, platform):
        m = Module()
        steps = [(name, b) for name, nbytes, _ in self.fields for b in range(nbytes)]
        i = Signal(range(len(steps) + 2))
        raw = {name: Signal(8 * nbytes, name=f"raw_{name}") for name, nbytes, _ in self.fields}
        for name, nbytes, signed in self.fields:
            v = raw[name].as_signed() if signed else raw[name]
            m.d.comb += getattr(self.value, name).eq(v)
        running, done = Signal(), Signal()
        m.d.comb += [self.busy.eq(running | self.go), self.done.eq(done)]
        m.d.sync += done.eq(0)
        with m.If(self.go):
            m.d.sync += [running.eq(1), i.eq(1)]
        with m.Elif(running):
            m.d.sync += i.eq(i + 1)
            with m.If(i == len(steps)):
                m.d.sync += [running.eq(0), done.eq(1)]
        # the address of step i goes out in cycle i (step 0 with go), its byte is taken in cycle i + 1
        with m.Switch(Mux(self.go, 0, i)):
            for k, (name, b) in enumerate(steps):
                with m.Case(k):
                    m.d.comb += self.raddr.eq(getattr(self.addr, name) + b)
        with m.Switch(i):
            for k, (name, b) in enumerate(steps):
                with m.Case(k + 1):
                    with m.If(running):
                        m.d.sync += raw[name].word_select(b, 8).eq(self.rdata)
        return m


class RowRun:
    """Reads a run of consecutive scratch bytes a row per cycle (a core's reading helper).

    ``begin(addr, n)`` (statements for the owner's ``sync``) points it at ``n`` bytes from ``addr``;
    while the owner holds ``active`` the rows touched go out on ``addr`` one per cycle, ``end`` marks
    the run's last row (the owner then begins the next run or drops ``active``). A cycle later, with
    ``pending``, the row is on ``rword``; :meth:`landing` gives, for each byte ``j`` of the run, whether
    this row holds it and its value, for the owner to put where byte ``j`` goes.

    Why a gather and not a scatter: byte ``j`` sits at row byte ``(j + ptr) mod RB``, so one rotation of
    the row by the run's offset puts every byte at a fixed place, and byte ``j`` is in the row when
    ``(j + offset) // RB`` is the row's index in the run. The owner's destinations are then wired to
    constant places; a row byte with a computed destination index needs a decoder per byte and place
    (on the ECP5 that made the MAT core 22k LUT4 at the tiny preset)."""

    def __init__(self, m: Module, abits: int, rword, row_bytes: int, max_len: int):
        RB = self.rb = row_bytes
        lb = RB.bit_length() - 1
        self.rword = rword
        self.active, self.end, self.pending = Signal(), Signal(), Signal()
        self.addr = Signal(abits)
        self.ptr, self.row = Signal(abits), Signal(abits)
        self.n = Signal(range(max_len + 1))
        span = -(-(max_len + RB - 1) // RB)                      # rows a run can touch
        self._ri = Signal(range(span + 1))                       # rows of the run issued so far
        # the row in flight: its index in the run, the run's offset in its first row, the run's length
        self._pi, self._off, self._n = Signal(range(span + 1)), Signal(max(1, lb)), Signal(range(max_len + 1))
        m.d.comb += [self.addr.eq(self.row),
                     self.end.eq(self.row == ((self.ptr + self.n - 1) & ~(RB - 1))[:abits])]
        m.d.sync += self.pending.eq(self.active)
        with m.If(self.active):
            m.d.sync += [self._pi.eq(self._ri), self._n.eq(self.n)]
            if lb:
                m.d.sync += self._off.eq(self.ptr[:lb])
            with m.If(~self.end):
                m.d.sync += [self.row.eq(self.row + RB), self._ri.eq(self._ri + 1)]
        rot = self.rword
        for b in range(lb):                                      # run byte j at rot byte j mod RB
            rot = Mux(self._off[b], rot.rotate_right(8 << b), rot)
        self._rot = Signal(8 * RB)
        m.d.comb += self._rot.eq(rot)

    def begin(self, addr, n) -> list:
        return [self.ptr.eq(addr), self.row.eq(addr & ~(self.rb - 1)), self.n.eq(n), self._ri.eq(0)]

    def landing(self, size: int):
        """``(en, byte)`` for each byte ``j`` in ``range(size)`` of the run: ``en`` when the row on
        ``rword`` (valid with ``pending``) holds it."""
        RB = self.rb
        for j in range(size):
            row_of_j = Mux(self._off >= RB - j % RB, j // RB + 1, j // RB)
            yield self.pending & (j < self._n) & (self._pi == row_of_j), self._rot.word_select(j % RB, 8)


class RowWrite:
    """Writes a run of up to ``max_len`` bytes to the scratch a row per cycle (a core's writing helper).

    ``begin(addr, n, data)`` (statements for the owner's ``sync``) takes ``n`` bytes (``data``, byte 0
    first) for ``addr``; while the owner holds ``active``, ``addr`` / ``row`` / ``mask`` are the write of
    each row touched (the owner puts them on ``waddr`` / ``wrow`` / ``wmask``), ``end`` marks the last."""

    def __init__(self, m: Module, abits: int, row_bytes: int, max_len: int):
        RB = row_bytes
        lb = RB.bit_length() - 1
        span = -(-(max_len + RB) // RB)                          # rows a run can touch, and one spare
        self.active, self.end = Signal(), Signal()
        self.addr, self.row, self.mask = Signal(abits), Signal(8 * RB), Signal(RB)
        self.ptr, self.n, self.data = Signal(abits), Signal(range(max_len + 1)), Signal(8 * max_len)
        k = Signal(range(span + 1))
        off = self.ptr[:lb] if lb else Const(0, 1)
        window, bytes_ = Signal(8 * RB * span), Signal(RB * span)
        m.d.comb += [window.eq(self.data << (off * 8)), bytes_.eq(((Const(1, 1) << self.n) - 1) << off),
                     self.addr.eq(((self.ptr & ~(RB - 1)) + k * RB)[:abits]),
                     self.row.eq(window.word_select(k, 8 * RB)), self.mask.eq(bytes_.word_select(k, RB)),
                     self.end.eq(k == (off + self.n - 1) >> lb)]
        with m.If(self.active):
            m.d.sync += k.eq(Mux(self.end, 0, k + 1))
        self._k = k

    def begin(self, addr, n, data) -> list:
        return [self.ptr.eq(addr), self.n.eq(n), self.data.eq(data), self._k.eq(0)]


# --- helpers of the cores -------------------------------------------------------------------------
@contextmanager
def checked_start(m: Module, core: Core, ok, first: str):
    """The ``IDLE`` and ``CHECK`` states of a core's FSM: on ``go``, a geometry the core cannot run
    (``ok`` low) answers ``error`` with BAD_GEOMETRY and returns to ``IDLE``; otherwise the
    statements of the ``with`` body (the core's set-up) run in ``CHECK`` and the FSM goes to ``first``."""
    with m.State("IDLE"):
        with m.If(core.go):
            m.next = "CHECK"
    with m.State("CHECK"):
        m.d.comb += core.busy.eq(1)
        with m.If(~ok):
            m.d.comb += [core.error.eq(1), core.error_code.eq(ErrorCode.BAD_GEOMETRY)]
            m.next = "IDLE"
        with m.Else():
            yield
            m.next = first


def drain_state(m: Module, core: Core, finished) -> None:
    """The last state of a core's FSM: busy until ``finished`` (its last result written), then ``done``
    and back to ``IDLE``."""
    with m.State("DRAIN"):
        m.d.comb += core.busy.eq(1)
        with m.If(finished):
            m.d.comb += core.done.eq(1)
            m.next = "IDLE"


def odometer(m: Module, digits) -> list:
    """Advance nested counters by one step (call under the step's condition): ``digits`` are
    ``(counter, count)`` pairs, innermost first; each wraps to 0 after ``count - 1`` and carries into the
    next. Returns ``wraps``: ``wraps[i]`` is true when counters ``0..i`` all wrap in this step
    (``wraps[-1]``: the whole loop nest is done)."""
    wraps, carry = [], Const(1)
    for counter, count in digits:
        last = counter == count - 1
        with m.If(carry):
            m.d.sync += counter.eq(Mux(last, 0, counter + 1))
        carry = carry & last
        wraps.append(carry)
    return wraps
