"""Control and status registers: an AXI4-Lite slave built from arch/regmap.py.

``ControlRegs(cfg)`` implements the register map of :func:`arch.regmap.register_map`
(docs/register_map.md is generated from the same list): address decode,
reset values, RW storage with WSTRB, W1C sticky flags, W1P pulses, and the
64-bit counters with their LO-read snapshot. What is generic comes from the
map (every RW field is storage, every W1P field a pulse, every 64-bit RO pair
a counter with a shadow); the hardware meaning of each RO / W1C field is
named in :meth:`ControlRegs._sources`, and elaboration fails naming any field
of the map that has no source.

Ports
-----
``s_axi``
    ``In(rtl.axi.axi_lite_signature(ADDR_WIDTH))``: the slave. One write and
    one read in flight (a write is performed once both AW and W have been
    taken; the response follows a cycle later); an unmapped offset answers
    SLVERR (reads return 0); mapped offsets answer OKAY.
``start`` (out)
    one-cycle pulse when CTRL.START is written while not busy.
``irq`` (out)
    level: CTRL.IRQ_EN & (STATUS.DONE | STATUS.ERROR).
``program_base``, ``program_ops``, ``dram_base`` (out)
    the registers' values (64, 32, 64 bits); stable while busy (locked).
``busy`` (in)
    the sequencer is running; STATUS.BUSY = (start seen, no done / error yet) | busy.
``done``, ``error`` (in, pulses)
    the program finished / stopped. ``error_code`` (8 bits) is latched with
    the first ``error`` after a start.
``op_done`` (in, pulse)
    one operation completed (OPS_DONE counts them).
``engine_busy`` (in)
    one bit per :data:`arch.regmap.ENGINES` entry (``engine_busy.mat``, ...);
    each 64-bit busy counter counts the cycles its bit is high.

Clock domain ``sync``, synchronous active-high reset. ``ControlRegsAxi`` wraps
it with the Xilinx-convention boundary (``aclk``, ``aresetn``,
``s_axi_awaddr``...) the top level will have; see rtl/axi.py.

``counter_start`` is a verification hook: the value a start clears the 64-bit
counters to (0 in hardware; the testbench sets it just below 2**32 so a short
run crosses the LO -> HI carry).
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from arch.regmap import ENGINES, ERROR_CODE_BITS, Access, RegisterMap, register_map
from rtl.axi import OKAY, SLVERR, axi_clock_domain, axi_lite_signature, flat_interface, flat_members

ENGINE_LAYOUT = data.StructLayout({e.lower(): 1 for e in ENGINES})


def _machine_members() -> dict:
    return {
        "start": Out(1), "irq": Out(1),
        "program_base": Out(64), "program_ops": Out(32), "dram_base": Out(64),
        "busy": In(1), "done": In(1), "error": In(1), "error_code": In(ERROR_CODE_BITS),
        "op_done": In(1), "engine_busy": In(ENGINE_LAYOUT),
    }


class ControlRegs(wiring.Component):
    def __init__(self, cfg=None, regmap: RegisterMap | None = None, counter_start: int = 0):
        self.cfg = cfg
        self.regmap = regmap if regmap is not None else register_map(cfg)
        if not 0 <= counter_start < 1 << 64:
            raise ValueError(f"counter_start {counter_start} does not fit 64 bits")
        self.counter_start = counter_start
        super().__init__({"s_axi": In(axi_lite_signature(self.regmap.addr_width)), **_machine_members()})

    def elaborate(self, platform):
        m = Module()
        rm = self.regmap
        ax = self.s_axi
        aw = rm.addr_width

        # --- storage of every RW field, reset from the map --------------------------
        store = {}
        for r in rm:
            if r.mask(Access.RW):
                store[r.name] = Signal(32, init=r.reset & r.mask(Access.RW), name=f"reg_{r.name.lower()}")

        # --- hardware state ------------------------------------------------------------
        running = Signal()
        busy_any = Signal()
        done_r = Signal()
        error_r = Signal()
        code_r = Signal(ERROR_CODE_BITS)
        err_op = Signal(32)
        ops_done = Signal(32)
        counters = {name: Signal(64, name=f"cnt_{name.lower()}") for name in rm.counters}
        shadows = {name: Signal(32, name=f"shadow_{name.lower()}") for name in rm.counters}
        irq_en = store["CTRL"][rm["CTRL"].field("IRQ_EN").lsb]

        m.d.comb += [
            busy_any.eq(running | self.busy),
            self.irq.eq(irq_en & (done_r | error_r)),
            self.program_base.eq(Cat(store["PROGRAM_BASE_LO"], store["PROGRAM_BASE_HI"])),
            self.program_ops.eq(store["PROGRAM_OPS"]),
            self.dram_base.eq(Cat(store["DRAM_BASE_LO"], store["DRAM_BASE_HI"])),
        ]
        increments = {"CYCLES": busy_any}
        for e in ENGINES:
            increments[f"{e}_BUSY"] = getattr(self.engine_busy, e.lower())
        missing = set(counters) - set(increments)
        if missing:
            raise ValueError(f"register map counters without a hardware input: {sorted(missing)}")

        # --- the value each register reads -----------------------------------------
        sources = self._sources(running=busy_any, done=done_r, error=error_r, code=code_r, err_op=err_op,
                                ops_done=ops_done)
        readval = {}
        for r in rm:
            if r.wide and r.wide in counters:
                continue                                    # read through the counter/shadow path
            v = Signal(32, name=f"rd_{r.name.lower()}")
            for f in r.fields:
                if r.constant:
                    src = Const(f.reset, f.width)
                elif f.access is Access.RW:
                    src = store[r.name][f.lsb:f.lsb + f.width]
                elif f.access is Access.W1P:
                    src = Const(0, f.width)
                else:
                    try:
                        src = sources[(r.name, f.name)]
                    except KeyError:
                        raise ValueError(f"register map field {r.name}.{f.name} ({f.access}) has no hardware "
                                         "source in rtl/regs.py ControlRegs._sources") from None
                m.d.comb += v[f.lsb:f.lsb + f.width].eq(src)
            readval[r.name] = v

        # --- write channel: take AW and W (in any order), then write and respond ------
        aw_full = Signal()
        aw_addr = Signal(aw)
        w_full = Signal()
        w_data = Signal(32)
        w_strb = Signal(4)
        bvalid = Signal()
        bresp = Signal(2)
        m.d.comb += [ax.awready.eq(~aw_full), ax.wready.eq(~w_full), ax.bvalid.eq(bvalid), ax.bresp.eq(bresp)]
        with m.If(ax.awvalid & ~aw_full):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(ax.awaddr)]
        with m.If(ax.wvalid & ~w_full):
            m.d.sync += [w_full.eq(1), w_data.eq(ax.wdata), w_strb.eq(ax.wstrb)]
        with m.If(bvalid & ax.bready):
            m.d.sync += bvalid.eq(0)
        do_write = Signal()
        m.d.comb += do_write.eq(aw_full & w_full & ~bvalid)
        bytemask = Signal(32)
        m.d.comb += bytemask.eq(Cat(*(w_strb[i].replicate(8) for i in range(4))))
        ones = Signal(32)                                   # the 1 bits written, strobes applied
        m.d.comb += ones.eq(w_data & bytemask)

        start_req = Signal()
        clear_done = Signal()
        clear_error = Signal()
        with m.If(do_write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), bvalid.eq(1), bresp.eq(SLVERR)]
            with m.Switch(aw_addr[2:aw]):
                for r in rm:
                    with m.Case(r.offset >> 2):
                        m.d.sync += bresp.eq(OKAY)
                        if r.name in store and not r.constant:
                            mask = Const(r.mask(Access.RW), 32) & bytemask
                            new = (store[r.name] & ~mask) | (w_data & mask)
                            if r.locked:
                                with m.If(~busy_any):
                                    m.d.sync += store[r.name].eq(new)
                            else:
                                m.d.sync += store[r.name].eq(new)
                        for f in r.fields:
                            if f.access is Access.W1P:
                                if (r.name, f.name) != ("CTRL", "START"):
                                    raise ValueError(f"W1P field {r.name}.{f.name} has no pulse in rtl/regs.py")
                                m.d.comb += start_req.eq(ones[f.lsb])
                            elif f.access is Access.W1C:
                                target = {("STATUS", "DONE"): clear_done, ("STATUS", "ERROR"): clear_error}
                                if (r.name, f.name) not in target:
                                    raise ValueError(f"W1C field {r.name}.{f.name} has no flag in rtl/regs.py")
                                m.d.comb += target[(r.name, f.name)].eq(ones[f.lsb])

        # --- machine state: start, done, error, counters ------------------------------
        start_go = Signal()
        m.d.comb += start_go.eq(start_req & ~busy_any)
        m.d.sync += self.start.eq(start_go)
        with m.If(start_go):
            m.d.sync += [running.eq(1), done_r.eq(0), error_r.eq(0), code_r.eq(0), err_op.eq(0), ops_done.eq(0)]
            m.d.sync += [c.eq(self.counter_start) for c in counters.values()]
        with m.Else():
            for name, c in counters.items():
                with m.If(increments[name]):
                    m.d.sync += c.eq(c + 1)
            with m.If(self.op_done):
                m.d.sync += ops_done.eq(ops_done + 1)
            # software clears first, so that a hardware set in the same cycle wins
            with m.If(clear_done):
                m.d.sync += done_r.eq(0)
            with m.If(clear_error):
                m.d.sync += [error_r.eq(0), code_r.eq(0), err_op.eq(0)]
            with m.If(self.done):
                m.d.sync += [done_r.eq(1), running.eq(0)]
            with m.If(self.error):
                m.d.sync += running.eq(0)
                with m.If(~error_r | clear_error):
                    m.d.sync += [error_r.eq(1), code_r.eq(self.error_code), err_op.eq(ops_done)]

        # --- read channel: one read at a time, data registered ------------------------
        rvalid = Signal()
        rdata = Signal(32)
        rresp = Signal(2)
        m.d.comb += [ax.arready.eq(~rvalid), ax.rvalid.eq(rvalid), ax.rdata.eq(rdata), ax.rresp.eq(rresp)]
        with m.If(rvalid & ax.rready):
            m.d.sync += rvalid.eq(0)
        with m.If(ax.arvalid & ~rvalid):
            m.d.sync += [rvalid.eq(1), rdata.eq(0), rresp.eq(SLVERR)]
            with m.Switch(ax.araddr[2:aw]):
                for r in rm:
                    with m.Case(r.offset >> 2):
                        m.d.sync += rresp.eq(OKAY)
                        if r.wide in counters and r.half == "LO":
                            c = counters[r.wide]
                            m.d.sync += [rdata.eq(c[:32]), shadows[r.wide].eq(c[32:])]
                        elif r.wide in counters:
                            m.d.sync += rdata.eq(shadows[r.wide])
                        else:
                            m.d.sync += rdata.eq(readval[r.name])
        return m

    def _sources(self, *, running, done, error, code, err_op, ops_done) -> dict:
        """(register, field) -> the hardware value of every RO / W1C field that is not a constant,
        a counter half or storage. A field of the map missing here fails elaboration."""
        src = {
            ("STATUS", "BUSY"): running,
            ("STATUS", "DONE"): done,
            ("STATUS", "ERROR"): error,
            ("STATUS", "IRQ"): self.irq,
            ("ERROR_CODE", "CODE"): code,
            ("ERROR_OP", "INDEX"): err_op,
            ("OPS_DONE", "COUNT"): ops_done,
        }
        for e in ENGINES:
            src[("STATUS", e)] = getattr(self.engine_busy, e.lower())
        return src


class ControlRegsAxi(wiring.Component):
    """``ControlRegs`` with the boundary a Vivado-packaged top level has: ``aclk``, ``aresetn``
    (active low, synchronous), ``s_axi_awaddr`` ... ``s_axi_rready``, and the machine-side ports
    under their own names (``start``, ``irq``, ``busy``, ``engine_busy``, ...). The testbench's
    device, and the template for the top level's boundary."""

    def __init__(self, cfg=None, regmap: RegisterMap | None = None, counter_start: int = 0):
        self.cfg = cfg
        self.regmap = regmap if regmap is not None else register_map(cfg)
        self.counter_start = counter_start
        self._axi = In(axi_lite_signature(self.regmap.addr_width))
        super().__init__({"aclk": In(1), "aresetn": In(1), **flat_members("s_axi", self._axi),
                          **_machine_members()})

    def elaborate(self, platform):
        m = Module()
        axi_clock_domain(m, self.aclk, self.aresetn)
        m.submodules.regs = regs = ControlRegs(self.cfg, self.regmap, self.counter_start)
        wiring.connect(m, flat_interface(self, "s_axi", self._axi), regs.s_axi)
        for name, member in _machine_members().items():
            outer, inner = getattr(self, name), getattr(regs, name)
            if member.flow == Out:
                m.d.comb += outer.eq(inner)
            else:
                m.d.comb += inner.eq(outer)
        return m
