"""``UNIT.ADD``: the residual add with rescale (golden/SPEC.md section 4) on rtl/residual.py's unit.

The core writes one row of the unit's per-channel table per channel (``z_a``, ``z_b``, ``Ma``,
``Mb``, ``n``, ``z_out``: one-lane rows, the row address is the channel), then streams the two
input maps element by element in CHW order (channel ``c`` of input 0 beside channel ``c`` of input
1: golden's ``a`` and ``b``), an element per cycle from the scratch rows it holds of each (a row
read when the stream enters it), and writes the results in the same order.
"""
from __future__ import annotations

from amaranth import Module, Signal

from rtl import record as R
from rtl.residual import ResidualAdd
from rtl.staged import Core, ScalarFetch, StagedExecutor, drain_state


class AddCore(Core):
    def elaborate(self, platform):
        m = Module()
        cfg, rec = self.cfg, self.record
        fields = R.param_fields(cfg, "add")
        m.submodules.fetch = fetch = ScalarFetch(self.abits, fields)
        m.submodules.unit = unit = ResidualAdd(cfg, lanes=1)
        offs = R.param_offsets(m, rec, "add", cfg)
        c = Signal(16)
        for name, nbytes, _ in fields:
            m.d.comb += getattr(fetch.addr, name).eq(self.p_off + offs[name] + c * nbytes)
        v = fetch.value
        row = unit.prm.payload.row
        m.d.comb += [fetch.rdata.eq(self.rdata), unit.lo.eq(R.geom(rec, "lo")), unit.hi.eq(R.geom(rec, "hi")),
                     unit.prm.payload.group.eq(c), row.za[0].eq(v.z_a), row.zb[0].eq(v.z_b),
                     row.ma[0].eq(v.Ma), row.mb[0].eq(v.Mb), row.n[0].eq(v.n), row.z[0].eq(v.z_out)]

        x = R.operand(rec, 0)
        channels = Signal(16)
        m.d.comb += channels.eq(R.oc1(rec) - R.oc0(rec))
        n_elem = Signal(40)
        m.d.comb += n_elem.eq(channels * x.plane)
        pa, pb, po = Signal(self.abits), Signal(self.abits), Signal(self.abits)
        B = self.word_bytes
        lb = B.bit_length() - 1
        row = lambda a: a[lb:]                                    # noqa: E731  the scratch row of an address
        ra, rb = Signal(8 * B), Signal(8 * B)                     # the rows of a and b held
        row_a, row_b = Signal(self.abits), Signal(self.abits)
        have_a, have_b = Signal(), Signal()
        fc, fp = Signal(16), Signal(32)         # channel (the table row) and pixel being fed
        sent, outs = Signal(40), Signal(40)

        # results come back in input order: one write pointer
        m.d.comb += unit.o.ready.eq(1)
        with m.If(unit.o.valid):
            m.d.comb += [self.waddr.eq(po), self.wdata.eq(unit.o.payload.q[0]), self.wen.eq(1)]
            m.d.sync += [po.eq(po + 1), outs.eq(outs + 1)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.raddr.eq(fetch.raddr)
                with m.If(self.go):
                    m.d.comb += fetch.go.eq(1)
                    m.d.sync += c.eq(0)
                    m.next = "PARAMS"
            with m.State("PARAMS"):
                m.d.comb += [self.busy.eq(1), self.raddr.eq(fetch.raddr)]
                with m.If(fetch.done):
                    m.next = "ROW"
            with m.State("ROW"):
                # the fetched values of channel c into the unit's table (always ready)
                m.d.comb += [self.busy.eq(1), unit.prm.valid.eq(1), self.raddr.eq(fetch.raddr)]
                with m.If(c == channels - 1):
                    start = Signal(40)
                    m.d.comb += start.eq(R.oc0(rec) * x.plane)
                    m.d.sync += [pa.eq(self.in_off[0] + start), pb.eq(self.in_off[1] + start),
                                 po.eq(self.out_off[0] + start), sent.eq(0), outs.eq(0), fc.eq(0), fp.eq(0),
                                 have_a.eq(0), have_b.eq(0)]
                    m.next = "FEED"
                with m.Else():
                    m.d.sync += c.eq(c + 1)
                    m.next = "NEXT_ROW"
            with m.State("NEXT_ROW"):
                m.d.comb += [self.busy.eq(1), self.raddr.eq(fetch.raddr), fetch.go.eq(1)]
                m.next = "PARAMS"
            with m.State("FEED"):
                # a and b from the scratch rows held in ra / rb: an element per cycle; a row that is not
                # held is read first (address out, the row kept the cycle after)
                m.d.comb += self.busy.eq(1)
                with m.If(~have_a | (row(pa) != row_a)):
                    m.d.comb += self.raddr.eq(pa)
                    m.next = "LOAD_A"
                with m.Elif(~have_b | (row(pb) != row_b)):
                    m.d.comb += self.raddr.eq(pb)
                    m.next = "LOAD_B"
                with m.Else():
                    m.d.comb += [unit.a.valid.eq(1), unit.b.valid.eq(1),
                                 unit.a.payload.x[0].eq(ra.word_select(pa[:lb], 8) if lb else ra),
                                 unit.b.payload.x[0].eq(rb.word_select(pb[:lb], 8) if lb else rb),
                                 unit.a.payload.group.eq(fc), unit.b.payload.group.eq(fc)]
                    with m.If(unit.a.ready):
                        m.d.sync += [pa.eq(pa + 1), pb.eq(pb + 1), sent.eq(sent + 1), fp.eq(fp + 1)]
                        with m.If(fp == x.plane - 1):
                            m.d.sync += [fp.eq(0), fc.eq(fc + 1)]
                        with m.If(sent == n_elem - 1):
                            m.next = "DRAIN"
            with m.State("LOAD_A"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [ra.eq(self.rword), row_a.eq(row(pa)), have_a.eq(1)]
                m.next = "FEED"
            with m.State("LOAD_B"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [rb.eq(self.rword), row_b.eq(row(pb)), have_b.eq(1)]
                m.next = "FEED"
            drain_state(m, self, outs == n_elem)
        return m


def add_executor(cfg) -> StagedExecutor:
    return StagedExecutor(cfg, AddCore)
