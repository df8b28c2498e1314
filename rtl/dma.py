"""The DMA: moves weights, parameters and activations between DRAM and the machine over an AXI4 master.

``Dma(cfg)`` turns read and write *commands* (byte address, byte length) into AXI4 INCR bursts on
``m_axi`` and moves the data through ``amaranth.lib.stream`` ports. The sequencer (not built yet)
issues the commands; the units that consume / produce the data sit on the data streams.

Ports (B = ``cfg.axi_data_bits // 8`` bytes per beat, A = ``cfg.axi_addr_bits``)
---------------------------------------------------------------------------------
``m_axi``
    ``Out(rtl.axi.axi4_signature(A, 8 * B, cfg.axi_id_bits))``: the master. Bursts are INCR,
    AxSIZE the full bus width, up to 256 beats, never crossing a 4 KiB boundary; ID 0 on every
    transaction, AxCACHE = 0b0011 (normal non-cacheable bufferable, what Xilinx's DMA and HLS
    masters drive), AxPROT = 0 (unprivileged, secure, data), AxLOCK = 0, AxQOS = 0. Up to
    ``max_bursts`` (4) bursts outstanding per direction; the read and write sides are independent.
``rd_cmd`` (in stream, :func:`cmd_layout`: ``addr``, ``len``)
    read ``len`` bytes from ``addr``. ``addr`` must be a multiple of B (MISALIGNED otherwise);
    ``len`` is any byte count below 2**32: the command reads ``ceil(len / B)`` whole beats (DRAM
    reads have no side effects, so the tail of the last beat is simply whatever memory holds).
``rd_data`` (out stream, :func:`rd_data_layout`: ``data``, ``last``)
    the beats of the read commands, in command order, byte ``i`` of a beat at ``data[8i:8i+8]``
    (AXI's little-endian lanes); ``last`` marks the final beat of each command. Direct from the
    R channel: ``rready`` is the consumer's ``ready`` (no buffer), so a slow consumer throttles the bus.
``wr_cmd`` (in stream, :func:`cmd_layout`)
    write ``len`` bytes at ``addr`` (alignment as for reads).
``wr_data`` (in stream, :func:`wr_data_layout`: ``data``, ``strb``)
    exactly ``ceil(len / B)`` beats per write command, in command order; ``strb`` bit ``i`` enables
    byte ``i``. The DMA also clears the strobes of the bytes past ``len`` in a command's last
    beat, so a producer may send whole words. Beats are taken only once the burst's AW is issued.
``wr_done`` (out, pulse)
    one cycle per write command, once every B response of the command is back OKAY (commands
    complete in order). A read after a write to the same bytes must wait for it: the two sides
    are not ordered against each other.
``window_base`` (in, A bits), ``window_size`` (in, A + 1 bits)
    every beat a command touches (``addr .. addr + ceil(len / B) * B``) must lie in
    ``[window_base, window_base + window_size)`` and below 2**A, else ADDR_RANGE; make the window
    a multiple of B. Hold them steady while commands run.
``error`` (out), ``error_code`` (out, ``arch.regmap.ERROR_CODE_BITS``)
    the first error since the last clear: MISALIGNED, ADDR_RANGE (checked when a command is taken,
    before any of it reaches the bus), AXI_SLVERR / AXI_DECERR (any R or B response). Sticky.
``clear`` (in, pulse)
    clears a latched ``error`` / ``error_code``; applied once ``busy`` is low (remembered until
    then); ignored when no error is latched.
``busy`` (out)
    a command is being checked or split, or a burst is outstanding, or the DMA is flushing.

Commands of length 0 move nothing: no beat, no ``last``, no ``wr_done``.

After an error (what each side sees)
------------------------------------
The DMA stops issuing: no AR / AW is raised from the cycle ``error`` is high (one raised before it
stays valid until taken, as AXI requires, and is flushed like the others). What was issued is
flushed so that the bus is left idle: outstanding R beats are taken and dropped, the W beats still
owed to issued AW bursts are sent with WSTRB = 0 (nothing more is written; a beat already in the W
register goes out as it is), B responses are taken. Towards the machine:

* ``rd_data`` delivers nothing from the failing beat on (that beat included); a command in
  progress never gets its ``last``;
* ``rd_cmd``, ``wr_cmd`` and ``wr_data`` are taken and dropped (``ready`` high), so no producer
  blocks, until the clear;
* ``wr_done`` pulses no more (not even for commands whose B responses come back OKAY);
* ``busy`` falls once the flush is over. The sequencer watches ``error`` (a level), stops its
  producers and consumers, and pulses ``clear`` (the register block's start) before the next
  program: ``wr_data`` beats still pushed after the clear would be taken as the next command's.

Timing: the AR / AW / W outputs come from registers (AxVALID through one AND with the queue
state); R is combinational both ways (``rd_data`` from ``rdata`` / ``rvalid``, ``rready`` from
``rd_data.ready``), a register slice in the interconnect or the consumer's input FIFO breaks it.

Clock domain ``sync``, synchronous active-high reset. ``DmaAxi`` wraps it with the Xilinx-named
boundary (``aclk``, ``aresetn``, ``m_axi_awaddr`` ...) for the testbench; see rtl/axi.py.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from arch.regmap import ERROR_CODE_BITS, ErrorCode
from rtl.axi import BURST_INCR, axi4_signature, axi_clock_domain, axi_size, flat_interface, flat_members

LEN_BITS = 32               # byte length of one command (up to 4 GiB - 1)
MAX_BURSTS = 4              # outstanding bursts per direction
AXCACHE = 0b0011            # normal non-cacheable bufferable
AXPROT = 0b000              # unprivileged, secure, data access


def cmd_layout(cfg, len_bits: int = LEN_BITS) -> data.StructLayout:
    return data.StructLayout({"addr": unsigned(cfg.axi_addr_bits), "len": unsigned(len_bits)})


def rd_data_layout(cfg) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(cfg.axi_data_bits), "last": unsigned(1)})


def wr_data_layout(cfg) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(cfg.axi_data_bits), "strb": unsigned(cfg.axi_data_bits // 8)})


def _burst_layout(addr_bits: int, nbytes: int) -> data.StructLayout:
    # one AXI burst: address, AxLEN (beats - 1), last burst of its command, byte mask of the command's last beat
    return data.StructLayout({"addr": unsigned(addr_bits), "len": unsigned(8), "last": unsigned(1),
                              "tail": unsigned(nbytes)})


class _Splitter(wiring.Component):
    """Takes commands, checks them, and cuts each into bursts (one direction).

    ``burst`` is registered: it holds until taken (what AXI asks of AxVALID once presented) or
    until ``flush`` drops it (the DMA flushes a burst it has not presented yet after an error).
    Cutting: ``min(beats left, 256, beats to the next 4 KiB boundary)``.
    """

    def __init__(self, addr_bits: int, data_bits: int, len_bits: int):
        self.addr_bits, self.nbytes, self.len_bits = addr_bits, data_bits // 8, len_bits
        self.shift = axi_size(data_bits)
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({"addr": unsigned(addr_bits), "len": unsigned(len_bits)}))),
            "burst": Out(stream.Signature(_burst_layout(addr_bits, self.nbytes))),
            "window_base": In(addr_bits), "window_size": In(addr_bits + 1),
            "stop": In(1), "flush": In(1),
            "err": Out(1), "err_code": Out(ERROR_CODE_BITS),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        A, B, s = self.addr_bits, self.nbytes, self.shift
        cmd, burst = self.cmd, self.burst

        addr = Signal(A)
        beats = Signal(self.len_bits - s + 1)       # ceil(len / B)
        tail = Signal(B)                            # byte mask of the last beat
        page_beats = 1 << (12 - s)                  # beats in a 4 KiB page
        max_beats = min(256, page_beats)

        # the next burst: up to the page end, at most 256 beats, at most what is left
        to_page = Signal(range(page_beats + 1))
        m.d.comb += to_page.eq(page_beats - addr[s:12])
        cap = Signal(range(max_beats + 1))
        m.d.comb += cap.eq(to_page if page_beats <= 256 else Mux(to_page > 256, 256, to_page))
        n = Signal(range(max_beats + 1))
        m.d.comb += n.eq(Mux(beats > cap, cap, beats))

        # the command's checks, from registered values (one cycle per command, hidden behind the
        # bursts still in flight)
        end = Signal(max(A, self.len_bits) + 2)
        limit = Signal(A + 2)
        m.d.comb += [end.eq(addr + (beats << s)), limit.eq(self.window_base + self.window_size)]
        misaligned = addr[:s] != 0
        outside = (addr < self.window_base) | (end > limit) | (end > (1 << A))

        with m.If(burst.ready | self.flush):             # taken, or dropped after an error
            m.d.sync += burst.valid.eq(0)
        m.d.comb += self.busy.eq(burst.valid)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += cmd.ready.eq(1)
                with m.If(cmd.valid & ~self.stop):      # while stopped, commands are dropped
                    low = cmd.p.len[:s]
                    m.d.sync += [
                        addr.eq(cmd.p.addr),
                        beats.eq((cmd.p.len + (B - 1)) >> s),
                        tail.eq(Mux(low == 0, (1 << B) - 1, (Const(1, B + 1) << low) - 1)),
                    ]
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.stop):
                    m.next = "IDLE"
                with m.Elif(misaligned):
                    m.d.comb += [self.err.eq(1), self.err_code.eq(ErrorCode.MISALIGNED)]
                    m.next = "IDLE"
                with m.Elif(outside):
                    m.d.comb += [self.err.eq(1), self.err_code.eq(ErrorCode.ADDR_RANGE)]
                    m.next = "IDLE"
                with m.Elif(beats == 0):
                    m.next = "IDLE"
                with m.Else():
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.stop):
                    m.next = "IDLE"                     # the rest of the command is never issued
                with m.Elif(~burst.valid | burst.ready):
                    m.d.sync += [
                        burst.valid.eq(1),
                        burst.p.addr.eq(addr), burst.p.len.eq(n - 1), burst.p.last.eq(beats == n),
                        burst.p.tail.eq(tail),
                        addr.eq(addr + (n << s)), beats.eq(beats - n),
                    ]
                    with m.If(beats == n):
                        m.next = "IDLE"
        return m


class Dma(wiring.Component):
    def __init__(self, cfg, max_bursts: int = MAX_BURSTS, len_bits: int = LEN_BITS):
        self.cfg = cfg
        if max_bursts < 1:
            raise ValueError(f"max_bursts must be at least 1, got {max_bursts}")
        self.max_bursts, self.len_bits = max_bursts, len_bits
        A = cfg.axi_addr_bits
        super().__init__({
            "m_axi": Out(axi4_signature(A, cfg.axi_data_bits, cfg.axi_id_bits)),
            **_dma_members(cfg, len_bits),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, ax = self.cfg, self.m_axi
        A, D = cfg.axi_addr_bits, cfg.axi_data_bits
        B = D // 8
        size = axi_size(D)

        stop = Signal()                             # an error is latched: flush, issue nothing new
        m.submodules.rs = rs = _Splitter(A, D, self.len_bits)
        m.submodules.ws = ws = _Splitter(A, D, self.len_bits)
        for sp, cmd in ((rs, self.rd_cmd), (ws, self.wr_cmd)):
            wiring.connect(m, wiring.flipped(cmd), sp.cmd)
            m.d.comb += [sp.window_base.eq(self.window_base), sp.window_size.eq(self.window_size),
                         sp.stop.eq(stop)]

        # Per issued burst, in issue order (one ID: AXI returns R beats and B responses in order):
        # rq: last burst of its read command; wq: what the W channel needs; bq: last burst of its
        # write command. Their depth bounds the outstanding bursts.
        m.submodules.rq = rq = SyncFIFO(width=1, depth=self.max_bursts)
        wq_layout = data.StructLayout({"len": unsigned(8), "last": unsigned(1), "tail": unsigned(B)})
        m.submodules.wq = wq = SyncFIFO(width=wq_layout.size, depth=self.max_bursts)
        m.submodules.bq = bq = SyncFIFO(width=1, depth=self.max_bursts)

        # AxVALID once raised must hold until taken, even when an error arrives meanwhile; a burst
        # not presented yet is dropped instead (nothing new reaches the bus after an error).
        ar_held = Signal()
        aw_held = Signal()
        m.d.sync += [ar_held.eq(ax.arvalid & ~ax.arready), aw_held.eq(ax.awvalid & ~ax.awready)]
        m.d.comb += [rs.flush.eq(stop & ~ar_held), ws.flush.eq(stop & ~aw_held)]
        ar_ok = Signal()                             # AR may be valid: room in rq, and no error (or held)
        aw_ok = Signal()
        m.d.comb += [ar_ok.eq(rq.w_rdy & (~stop | ar_held)), aw_ok.eq(wq.w_rdy & bq.w_rdy & (~stop | aw_held))]

        # --- AR: a burst goes out when there is room to remember it --------------------------------
        m.d.comb += [
            ax.arid.eq(0), ax.araddr.eq(rs.burst.p.addr), ax.arlen.eq(rs.burst.p.len), ax.arsize.eq(size),
            ax.arburst.eq(BURST_INCR), ax.arlock.eq(0), ax.arcache.eq(AXCACHE), ax.arprot.eq(AXPROT),
            ax.arqos.eq(0),
            ax.arvalid.eq(rs.burst.valid & ar_ok),
            rs.burst.ready.eq(ax.arready & ar_ok),
            rq.w_en.eq(ax.arvalid & ax.arready), rq.w_data.eq(rs.burst.p.last),
        ]

        # --- R: straight to rd_data; dropped after an error or when the beat itself is an error ----
        r_bad = ax.rresp[1]                          # SLVERR / DECERR (EXOKAY is never asked for)
        r_pass = ~stop & ~r_bad
        m.d.comb += [
            self.rd_data.valid.eq(ax.rvalid & r_pass),
            self.rd_data.p.data.eq(ax.rdata),
            self.rd_data.p.last.eq(ax.rlast & rq.r_data[0]),
            ax.rready.eq(Mux(r_pass, self.rd_data.ready, 1)),
            rq.r_en.eq(ax.rvalid & ax.rready & ax.rlast),
        ]

        # --- AW: as AR, remembered twice (for W and for B) -----------------------------------------
        m.d.comb += [
            ax.awid.eq(0), ax.awaddr.eq(ws.burst.p.addr), ax.awlen.eq(ws.burst.p.len), ax.awsize.eq(size),
            ax.awburst.eq(BURST_INCR), ax.awlock.eq(0), ax.awcache.eq(AXCACHE), ax.awprot.eq(AXPROT),
            ax.awqos.eq(0),
            ax.awvalid.eq(ws.burst.valid & aw_ok),
            ws.burst.ready.eq(ax.awready & aw_ok),
            wq.w_en.eq(ax.awvalid & ax.awready),
            wq.w_data.eq(Cat(ws.burst.p.len, ws.burst.p.last, ws.burst.p.tail)),
            bq.w_en.eq(ax.awvalid & ax.awready), bq.w_data.eq(ws.burst.p.last),
        ]

        # --- W: an output register (AXI: the payload holds while WVALID waits for WREADY, even
        # when an error switches the source to zero-strobe beats mid-burst) -------------------------
        head = wq_layout(wq.r_data)
        wbeat = Signal(8)                            # beat index inside the head burst
        wvalid = Signal()
        wdata = Signal(D)
        wstrb = Signal(B)
        wlast = Signal()
        m.d.comb += [ax.wvalid.eq(wvalid), ax.wdata.eq(wdata), ax.wstrb.eq(wstrb), ax.wlast.eq(wlast)]
        w_load = Signal()
        src = Signal()                               # a beat for the head burst is at hand
        beat_last = Signal()
        m.d.comb += [
            w_load.eq(~wvalid | ax.wready),
            src.eq(wq.r_rdy & (stop | self.wr_data.valid)),
            beat_last.eq(wbeat == head.len),
            self.wr_data.ready.eq(stop | (wq.r_rdy & w_load)),
        ]
        with m.If(w_load):
            m.d.sync += wvalid.eq(src)
            with m.If(src):
                mask = Mux(beat_last & head.last, head.tail, (1 << B) - 1)
                m.d.sync += [
                    wdata.eq(Mux(stop, 0, self.wr_data.p.data)),
                    wstrb.eq(Mux(stop, 0, self.wr_data.p.strb & mask)),
                    wlast.eq(beat_last),
                    wbeat.eq(Mux(beat_last, 0, wbeat + 1)),
                ]
                m.d.comb += wq.r_en.eq(beat_last)

        # --- B: always taken; a command completes with the B of its last burst ---------------------
        b_bad = ax.bresp[1]
        m.d.comb += [ax.bready.eq(1), bq.r_en.eq(ax.bvalid)]
        m.d.sync += self.wr_done.eq(ax.bvalid & ~b_bad & bq.r_data[0] & ~stop)

        # --- errors: the first one wins, and stops both directions ---------------------------------
        code = Signal(ERROR_CODE_BITS)
        clear_pending = Signal()
        m.d.comb += [stop.eq(self.error), self.error_code.eq(code)]
        m.d.comb += self.busy.eq(rs.busy | ws.busy | rq.r_rdy | wq.r_rdy | bq.r_rdy | wvalid)
        # a clear of a latched error waits for the flush to end (so that no beat of the old commands
        # meets a new one); a clear without an error does nothing
        with m.If(self.clear & self.error):
            m.d.sync += clear_pending.eq(1)
        with m.If((self.clear | clear_pending) & self.error & ~self.busy):
            m.d.sync += [self.error.eq(0), code.eq(0), clear_pending.eq(0)]

        def resp_code(resp):
            return Mux(resp[0], ErrorCode.AXI_DECERR, ErrorCode.AXI_SLVERR)

        sources = [                                  # (condition, code), by priority
            (ax.rvalid & r_bad, resp_code(ax.rresp)),
            (ax.bvalid & b_bad, resp_code(ax.bresp)),
            (rs.err, rs.err_code),
            (ws.err, ws.err_code),
        ]
        with m.If(~self.error):
            for i, (cond, c) in enumerate(sources):
                with (m.If if i == 0 else m.Elif)(cond):
                    m.d.sync += [self.error.eq(1), code.eq(c)]
        return m


def _dma_members(cfg, len_bits: int = LEN_BITS) -> dict:
    """The DMA's machine-side ports (everything but the AXI master), shared by Dma and DmaAxi."""
    A = cfg.axi_addr_bits
    return {
        "rd_cmd": In(stream.Signature(cmd_layout(cfg, len_bits))),
        "rd_data": Out(stream.Signature(rd_data_layout(cfg))),
        "wr_cmd": In(stream.Signature(cmd_layout(cfg, len_bits))),
        "wr_data": In(stream.Signature(wr_data_layout(cfg))),
        "wr_done": Out(1),
        "window_base": In(A), "window_size": In(A + 1),
        "clear": In(1),
        "error": Out(1), "error_code": Out(ERROR_CODE_BITS),
        "busy": Out(1),
    }


class DmaAxi(wiring.Component):
    """``Dma`` with the boundary a Vivado-packaged top level has: ``aclk``, ``aresetn`` (active low,
    synchronous), ``m_axi_awid`` ... ``m_axi_rready``, and the machine-side ports under their own
    names (``rd_cmd__valid``, ``window_base``, ``error``, ...). The testbench's device."""

    def __init__(self, cfg, max_bursts: int = MAX_BURSTS, len_bits: int = LEN_BITS):
        self.cfg, self.max_bursts, self.len_bits = cfg, max_bursts, len_bits
        self._axi = Out(axi4_signature(cfg.axi_addr_bits, cfg.axi_data_bits, cfg.axi_id_bits))
        super().__init__({"aclk": In(1), "aresetn": In(1), **flat_members("m_axi", self._axi),
                          **_dma_members(cfg, len_bits)})

    def elaborate(self, platform):
        m = Module()
        axi_clock_domain(m, self.aclk, self.aresetn)
        m.submodules.dma = dma = Dma(self.cfg, self.max_bursts, self.len_bits)
        wiring.connect(m, flat_interface(self, "m_axi", self._axi), dma.m_axi)
        for name, member in _dma_members(self.cfg, self.len_bits).items():
            outer, inner = getattr(self, name), getattr(dma, name)
            if member.is_signature:
                if member.flow == In:
                    wiring.connect(m, wiring.flipped(outer), inner)
                else:
                    wiring.connect(m, inner, wiring.flipped(outer))
            elif member.flow == Out:
                m.d.comb += outer.eq(inner)
            else:
                m.d.comb += inner.eq(outer)
        return m
