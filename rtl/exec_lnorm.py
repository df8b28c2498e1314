"""``UNIT.LNORM``: the head's LayerNorm then hardswish (golden/SPEC.md sections 7 and 3) on
rtl/layernorm.py's and rtl/hswish.py's units, chained on chip.

The core reads the scalars (``z_x``, ``eps_int``, ``z_out``), writes one row per channel into both
units' tables (LayerNorm: ``G``, ``B``, ``n_g``, ``z_pre``; hardswish: ``z_pre``, ``t3``, ``M``,
``n`` and the scalar ``z_out``), then streams the token (one channel per beat) into the LayerNorm,
whose pre-activation codes go straight into the hardswish, whose codes go to the output vector.
The units' widths are fixed when the hardware is generated (``cfg.ln_frac_bits`` /
``cfg.ln_recip_bits``): a record asking for others stops with BAD_GEOMETRY.
"""
from __future__ import annotations

from amaranth import Module, Signal

from arch.regmap import ErrorCode
from rtl import record as R
from rtl.hswish import Hardswish
from rtl.layernorm import LayerNorm
from rtl.staged import Core, ScalarFetch, StagedExecutor, drain_state

SCALARS = ("z_x", "eps_int", "z_out")
ROW = ("G", "B", "n_g", "z_pre", "t3", "M", "n")


class LnormCore(Core):
    def elaborate(self, platform):
        m = Module()
        cfg, rec = self.cfg, self.record
        m.submodules.scal = scal = ScalarFetch(self.abits, R.param_fields(cfg, "lnorm", SCALARS))
        row_fields = R.param_fields(cfg, "lnorm", ROW)
        m.submodules.rowf = rowf = ScalarFetch(self.abits, row_fields)
        m.submodules.ln = ln = LayerNorm(cfg, lanes=1)
        m.submodules.hs = hs = Hardswish(cfg, lanes=1)
        offs = R.param_offsets(m, rec, "lnorm", cfg)
        c = Signal(16)
        for name in SCALARS:
            m.d.comb += getattr(scal.addr, name).eq(self.p_off + offs[name])
        for name, nbytes, _ in row_fields:
            m.d.comb += getattr(rowf.addr, name).eq(self.p_off + offs[name] + c * nbytes)
        s, r = scal.value, rowf.value
        channels = Signal(16)
        m.d.comb += channels.eq(R.oc1(rec) - R.oc0(rec))
        m.d.comb += [scal.rdata.eq(self.rdata), rowf.rdata.eq(self.rdata),
                     ln.channels.eq(channels), ln.z_x.eq(s.z_x), ln.eps_int.eq(s.eps_int),
                     ln.lo.eq(R.geom(rec, "pre_lo")), ln.hi.eq(R.geom(rec, "pre_hi")),
                     hs.lo.eq(R.geom(rec, "lo")), hs.hi.eq(R.geom(rec, "hi")),
                     ln.prm.payload.group.eq(c), hs.prm.payload.group.eq(c)]
        lrow, hrow = ln.prm.payload.row, hs.prm.payload.row
        m.d.comb += [lrow.g[0].eq(r.G), lrow.b[0].eq(r.B), lrow.n[0].eq(r.n_g), lrow.z[0].eq(r.z_pre),
                     hrow.zp[0].eq(r.z_pre), hrow.t3[0].eq(r.t3), hrow.m[0].eq(r.M), hrow.n[0].eq(r.n),
                     hrow.z[0].eq(s.z_out)]

        # LayerNorm -> hardswish on chip (groups in order), hardswish -> the output vector
        hg = Signal(16)
        m.d.comb += [hs.i.valid.eq(ln.o.valid), hs.i.payload.p[0].eq(ln.o.payload.q[0]),
                     hs.i.payload.group.eq(hg), ln.o.ready.eq(hs.i.ready)]
        with m.If(ln.o.valid & hs.i.ready):
            m.d.sync += hg.eq(hg + 1)
        po, outs = Signal(self.abits), Signal(16)
        m.d.comb += hs.o.ready.eq(1)
        with m.If(hs.o.valid):
            m.d.comb += [self.waddr.eq(po), self.wdata.eq(hs.o.payload.q[0]), self.wen.eq(1)]
            m.d.sync += [po.eq(po + 1), outs.eq(outs + 1)]

        px = Signal(self.abits)
        primed = Signal()
        widths_ok = ((R.geom(rec, "frac_bits") == ln.frac_bits) & (R.geom(rec, "recip_bits") == ln.recip_bits))
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.raddr.eq(scal.raddr)
                with m.If(self.go & ~widths_ok):
                    m.d.comb += [self.error.eq(1), self.error_code.eq(ErrorCode.BAD_GEOMETRY)]
                with m.Elif(self.go):
                    m.d.comb += scal.go.eq(1)
                    m.d.sync += [c.eq(0), hg.eq(0), outs.eq(0)]
                    m.next = "SCALARS"
            with m.State("SCALARS"):
                m.d.comb += [self.busy.eq(1), self.raddr.eq(scal.raddr)]
                with m.If(scal.done):
                    m.next = "ROW_GO"
            with m.State("ROW_GO"):
                m.d.comb += [self.busy.eq(1), rowf.go.eq(1), self.raddr.eq(rowf.raddr)]
                m.next = "ROW"
            with m.State("ROW"):
                m.d.comb += [self.busy.eq(1), self.raddr.eq(rowf.raddr)]
                with m.If(rowf.done):
                    m.next = "ROW_WRITE"
            with m.State("ROW_WRITE"):
                m.d.comb += [self.busy.eq(1), ln.prm.valid.eq(1), hs.prm.valid.eq(1)]
                with m.If(c == channels - 1):
                    m.d.sync += [px.eq(self.in_off[0] + R.oc0(rec)), po.eq(self.out_off[0] + R.oc0(rec)),
                                 c.eq(0), primed.eq(0)]
                    m.next = "FEED"
                with m.Else():
                    m.d.sync += c.eq(c + 1)
                    m.next = "ROW_GO"
            with m.State("FEED"):
                m.d.comb += [self.busy.eq(1), self.raddr.eq(px),
                             ln.i.valid.eq(primed), ln.i.payload.x[0].eq(self.rdata),
                             ln.i.payload.group.eq(c), ln.i.payload.last.eq(c == channels - 1)]
                m.d.sync += primed.eq(1)
                with m.If(primed & ln.i.ready):
                    m.d.sync += [px.eq(px + 1), primed.eq(0), c.eq(c + 1)]
                    with m.If(c == channels - 1):
                        m.next = "DRAIN"
            drain_state(m, self, outs == channels)
        return m


def lnorm_executor(cfg) -> StagedExecutor:
    return StagedExecutor(cfg, LnormCore)
