"""``UNIT.POOL``: global average pooling (golden/SPEC.md section 6) on rtl/avgpool.py's unit.

The core reads the four per-tensor parameters (``z_x``, ``M``, ``n``, ``z_out``) from the
parameter block, then streams the input map channel by channel (CHW: a channel's pixels are
consecutive in the scratch) into a one-lane :class:`~rtl.avgpool.GlobalAvgPool` whose group is the
channel, and writes each channel's code to the output vector.
"""
from __future__ import annotations

from amaranth import Module, Signal

from rtl import record as R
from rtl.avgpool import GlobalAvgPool
from rtl.staged import Core, ScalarFetch, StagedExecutor, drain_state


class PoolCore(Core):
    def elaborate(self, platform):
        m = Module()
        cfg, rec = self.cfg, self.record
        fields = R.param_fields(cfg, "pool")
        m.submodules.fetch = fetch = self._fetch = ScalarFetch(self.abits, fields)
        m.submodules.unit = unit = self._unit = GlobalAvgPool(cfg, lanes=1)
        offs = R.param_offsets(m, rec, "pool", cfg)
        for name, _, _ in fields:
            m.d.comb += getattr(fetch.addr, name).eq(self.p_off + offs[name])
        v = fetch.value
        m.d.comb += [unit.z_x.eq(v.z_x), unit.m.eq(v.M), unit.n.eq(v.n), unit.z_out.eq(v.z_out),
                     unit.lo.eq(R.geom(rec, "lo")), unit.hi.eq(R.geom(rec, "hi")), fetch.rdata.eq(self.rdata)]

        x = R.operand(rec, 0)
        channels = Signal(16)
        m.d.comb += channels.eq(R.oc1(rec) - R.oc0(rec))
        c, p = Signal(16), Signal(32)
        ptr = Signal(self.abits)
        primed = Signal()
        outs = Signal(16)

        # results: the unit tags each channel's code with its group (= channel within this op)
        m.d.comb += unit.o.ready.eq(1)
        with m.If(unit.o.valid):
            m.d.comb += [self.waddr.eq(self.out_off[0] + R.oc0(rec) + unit.o.payload.tag),
                         self.wdata.eq(unit.o.payload.q[0]), self.wen.eq(1)]
            m.d.sync += outs.eq(outs + 1)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.raddr.eq(fetch.raddr)       # the fetch's first address goes out with go
                with m.If(self.go):
                    m.d.comb += fetch.go.eq(1)
                    m.next = "PARAMS"
            with m.State("PARAMS"):
                m.d.comb += [self.busy.eq(1), self.raddr.eq(fetch.raddr)]
                with m.If(fetch.done):
                    m.d.sync += [c.eq(0), p.eq(0), ptr.eq(self.in_off[0] + R.oc0(rec) * x.plane), primed.eq(0),
                                 outs.eq(0)]
                    m.next = "FEED"
            with m.State("FEED"):
                m.d.comb += [self.busy.eq(1), self.raddr.eq(ptr)]
                m.d.sync += primed.eq(1)
                last_px = p == x.plane - 1
                m.d.comb += [unit.i.valid.eq(primed), unit.i.payload.x[0].eq(self.rdata),
                             unit.i.payload.group.eq(c), unit.i.payload.first.eq(p == 0),
                             unit.i.payload.last.eq(last_px)]
                with m.If(primed & unit.i.ready):
                    m.d.sync += [ptr.eq(ptr + 1), primed.eq(0)]
                    with m.If(last_px):
                        m.d.sync += [p.eq(0), c.eq(c + 1)]
                        with m.If(c == channels - 1):
                            m.next = "DRAIN"
                    with m.Else():
                        m.d.sync += p.eq(p + 1)
            drain_state(m, self, outs == channels)
        return m


def pool_executor(cfg) -> StagedExecutor:
    return StagedExecutor(cfg, PoolCore)
