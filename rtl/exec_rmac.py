"""``RMAC.DW`` and ``RMAC.PW``: depthwise and pointwise convolutions on the R-MAC engine.

The core does in hardware what rtl/rmac_schedule.py plans on the host: per group of ``T =
rmac_cols`` of the operation's output channels ``[oc0, oc1)`` it

1. reads each channel's parameters (folded bias, padding zero point ``z_x``, the epilogue's
   ``M``/``n``/``z_out`` and for ``hswish`` the pre-activation requant and the knee) from the
   parameter block (:class:`~rtl.staged.ScalarFetch`) and writes the epilogue units' table rows
   (row = channel within the operation);
2. sends the engine one command (``load = 1``; ``z`` and ``bias`` of the group's channels), the
   weight beats (``kh*kw`` taps of ``T`` int8) and the row beats: depthwise ``rows*xsegs*kh``
   beats of ``L*W_SEG*T`` codes (positions outside the input are read from wherever the address
   arithmetic points: the engine substitutes ``z`` there), pointwise ``rows*cin`` beats carrying
   pixel ``s`` of input channel ``k`` at position ``s``, channel 0.

Every beat is gathered from the scratch a row per cycle (address out, row the next cycle): each run
of consecutive bytes (a row segment of one channel and replica) takes the rows it touches, then the
beat is handed over. Independently, the engine's output beats are unrolled one accumulator per cycle into
the epilogue (:class:`~rtl.requant.Requant`, followed for ``hswish`` by
:class:`~rtl.hswish.Hardswish` with the pre-activation range ``[pre_lo, pre_hi]``), each tagged
with its CHW scratch address ``out_off[0] + (oc0 + c) * oh * ow + pixel``; padding PEs (channels
past ``oc1``, pixels past the map) are dropped. ``done`` once every output code is written.

Geometries the core cannot run stop the operation with BAD_GEOMETRY before anything is computed:
an epilogue other than requant / hswish, elements wider than a byte, more channels than the
epilogue tables hold; depthwise: kernel past KMAX, stride other than 1 or 2, padding past PADMAX,
``groups != cin != cout``; pointwise: anything but a 1x1 stride-1 unpadded ungrouped conv, or more
input channels than the engine's weight buffer holds (its taps).
"""
from __future__ import annotations

from types import SimpleNamespace

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data

from arch import cost, encoding
from arch.timing import KMAX, PADMAX
from rtl import record as R
from rtl.hswish import Hardswish
from rtl.requant import Requant, group_bits, table_depth
from rtl.rmac_engine import COORD_BITS, RmacEngine
from rtl.staged import Core, RowRun, ScalarFetch, StagedExecutor, checked_start, odometer

EPILOGUES = ("requant", "hswish")
DW, PW = encoding.OPCODE_IDS["RMAC.DW"], encoding.OPCODE_IDS["RMAC.PW"]


class _Gather:
    """Builds one engine beat from the scratch a row per cycle (:class:`~rtl.staged.RowRun`): the runs
    of bytes ``base + t*A + l*B + j``, ``j < nj``, for ``t < nt``, ``l < nl`` (nested in that order)
    land in bytes ``(l*WS + j)*T + t`` of ``beat`` (the engine's element order for a row beat; a weight
    beat is ``nl = nj = 1``). ``start(...)`` gives the statements that begin a beat; while the owner
    holds ``active`` the rows' addresses go out on ``addr``; ``last`` marks the final one. ``view`` is
    the beat with the row in flight already in place: complete in the cycle the last row lands."""

    def __init__(self, m: Module, cfg, abits: int, rword, word_bytes: int):
        S, T, L = cfg.rmac_rows, cfg.rmac_cols, cfg.replicas
        WS = cost.rmac_segment_width(cfg)
        # ``split`` (rmac_rows a power of two): one run of L*S bytes is the L segments of S bytes, byte
        # j at (j // S, j % S) -- a pointwise row beat's L replicas' pixels, consecutive in the input
        self.split_ok = S & (S - 1) == 0
        self.split = Signal()
        self.run = run = RowRun(m, abits, rword, word_bytes, max(WS, L * S))
        self.beat = Signal(data.ArrayLayout(unsigned(8), L * WS * T))
        self.view = Signal(data.ArrayLayout(unsigned(8), L * WS * T))
        m.d.comb += self.view.eq(self.beat)
        m.d.sync += self.beat.eq(self.view)
        self.active, self.last, self.addr = run.active, Signal(), run.addr
        self.a, self.b = Signal(abits), Signal(abits)
        self.n = [Signal(range(T + 1)), Signal(range(L + 1))]
        self.i = [Signal(range(T + 1)), Signal(range(L + 1))]
        self.tptr = Signal(abits)                                # base + t*A
        (nt, nl), (t, l) = self.n, self.i
        m.d.comb += self.last.eq(run.active & (t == nt - 1) & (l == nl - 1) & run.end)
        pl, pt = Signal(range(L + 1)), Signal(range(T + 1))      # the run of the row in flight
        with m.If(run.active):
            m.d.sync += [pl.eq(l), pt.eq(t)]
            with m.If(run.end):
                odometer(m, [(l, nl), (t, nt)])
                m.d.sync += run.begin(Mux(l == nl - 1, self.tptr + self.a, run.ptr + self.b)[:abits], run.n)
                with m.If(l == nl - 1):
                    m.d.sync += self.tptr.eq(self.tptr + self.a)
        for j, (en, byte) in enumerate(run.landing(max(WS, L * S))):
            with m.If(en):
                at = (pl * WS + j) * T + pt
                if self.split_ok:
                    lg = S.bit_length() - 1
                    at = Mux(self.split, ((j >> lg) * WS + (j & (S - 1))) * T, at)
                m.d.comb += self.view[at].eq(byte)

    def start(self, base, a, b, nt, nl, nj, split=False) -> list:
        return [self.a.eq(a), self.b.eq(b), *(s.eq(0) for s in self.i), self.tptr.eq(base), self.split.eq(split),
                *self.run.begin(base, nj), *(s.eq(v) for s, v in zip(self.n, (nt, nl)))]


class RmacCore(Core):
    def _decode(self, m: Module) -> SimpleNamespace:
        """The record's fields the core uses, and the engine's loop counts."""
        cfg, rec = self.cfg, self.record
        S, L = cfg.rmac_rows, cfg.replicas
        g = lambda name: R.geom(rec, name)                        # noqa: E731
        d = SimpleNamespace(**{n: g(n) for n in ("k", "stride", "pad", "cin", "cout", "groups", "h", "w", "oh", "ow",
                                                  "lo", "hi", "pre_lo", "pre_hi")})
        d.oc0 = R.oc0(rec)
        d.is_pw = R.opcode(rec) == PW
        d.is_hs = R.epilogue_id(rec) == encoding.EPILOGUE_IDS["hswish"]
        d.C, d.plane, d.oplane = Signal(16), Signal(32), Signal(32)
        m.d.comb += [d.C.eq(R.oc1(rec) - d.oc0), d.plane.eq(d.h * d.w), d.oplane.eq(d.oh * d.ow)]
        # rows / segments of the engine's command: depthwise output rows of L, segments of S pixels;
        # pointwise pixel groups of L*S
        d.dw_rows, d.dw_xsegs = (d.oh + L - 1) // L, (d.ow + S - 1) // S
        d.pw_rows = (d.oplane + S * L - 1) // (S * L)
        return d

    def _geometry_ok(self, d: SimpleNamespace):
        """What the core runs (else BAD_GEOMETRY): see the module docstring."""
        cfg, rec = self.cfg, self.record
        depth = RmacEngine.buffer_depth(cfg)
        big = 1 << (COORD_BITS - 1)
        common = ((((R.epilogue_id(rec) == encoding.EPILOGUE_IDS["requant"]) | d.is_hs)
                   & (R.n_inputs(rec) == 1) & (R.n_outputs(rec) == 1)
                   & (d.oc0 < R.oc1(rec)) & (R.oc1(rec) <= d.cout) & (d.C <= cfg.norm_max_channels)
                   & (R.operand(rec, 0).bits <= cfg.act_bits) & (R.operand(rec, 1).bits <= cfg.act_bits)
                   & (d.h < big) & (d.w < big)))
        dw = ((R.opcode(rec) == DW) & (d.k >= 1) & (d.k <= KMAX) & ((d.stride == 1) | (d.stride == 2))
              & (d.pad <= PADMAX) & (d.groups == d.cin) & (d.cin == d.cout) & (d.dw_xsegs < 1 << 12)
              & (d.dw_rows < 1 << 16))
        pw = ((d.k == 1) & (d.stride == 1) & (d.pad == 0) & (d.groups == 1) & (d.cin >= 1) & (d.cin <= depth)
              & (d.oh == d.h) & (d.ow == d.w) & (d.pw_rows < 1 << 16))
        return common & Mux(d.is_pw, pw, dw)

    def _params(self, m: Module, d: SimpleNamespace, ch, rq: Requant, hs: Hardswish) -> ScalarFetch:
        """Channel ``ch``'s parameters (every hswish table; requant's where the op's epilogue is requant),
        written into the epilogue units' table rows ``ch`` on ``done``."""
        cfg, ab = self.cfg, self.abits
        offs = {e: R.param_offsets(m, self.record, e, cfg) for e in EPILOGUES}
        fields = [(name, R.param_bytes(cfg, fmt), fmt in ("zero_point", "acc")) for name, fmt, _ in R.PARAMS["hswish"]]
        m.submodules.fetch = fetch = ScalarFetch(ab, fields)
        m.d.comb += fetch.rdata.eq(self.rdata)
        for name, nbytes, _ in fields:
            off = offs["hswish"][name]
            if name in offs["requant"]:
                off = Mux(d.is_hs, off, offs["requant"][name])
            idx = Mux(d.is_pw, 0, d.oc0 + ch) if name == "z_x" else ch    # z_x: per input channel
            m.d.comb += getattr(fetch.addr, name).eq((self.p_off + off + idx * nbytes)[:ab])
        v, hsw = fetch.value, d.is_hs
        m.d.comb += [rq.prm.valid.eq(fetch.done), rq.prm.payload.group.eq(ch),
                     rq.prm.payload.row.m[0].eq(Mux(hsw, v.pre_M, v.M)),
                     rq.prm.payload.row.n[0].eq(Mux(hsw, v.pre_n, v.n)),
                     rq.prm.payload.row.z[0].eq(Mux(hsw, v.pre_z, v.z_out)),
                     hs.prm.valid.eq(fetch.done & hsw), hs.prm.payload.group.eq(ch),
                     hs.prm.payload.row.m[0].eq(v.M), hs.prm.payload.row.n[0].eq(v.n),
                     hs.prm.payload.row.z[0].eq(v.z_out), hs.prm.payload.row.zp[0].eq(v.z_p),
                     hs.prm.payload.row.t3[0].eq(v.t3)]
        return fetch

    def _results(self, m: Module, d: SimpleNamespace, eng: RmacEngine, rq: Requant, hs: Hardswish, rows, xsegs,
                 written):
        """Each output beat unrolled one accumulator per cycle into the epilogue (padding PEs dropped),
        tagged with its scratch address; the epilogue's codes written to the scratch, counted in
        ``written``."""
        cfg, ab = self.cfg, self.abits
        S, T, L, A = cfg.rmac_rows, cfg.rmac_cols, cfg.replicas, cfg.acc_bits
        obuf = Signal(L * S * T * A)
        have = Signal()
        og = Signal(16)                                           # the beat's first channel
        oa, ob = Signal(16), Signal(12)                           # its row group (pixel group), segment
        ol, os_, ot = Signal(range(L + 1)), Signal(range(S + 1)), Signal(range(T + 1))
        with m.If(self.go):
            m.d.sync += [og.eq(0), oa.eq(0), ob.eq(0), ol.eq(0), os_.eq(0), ot.eq(0), have.eq(0), written.eq(0)]
        m.d.comb += eng.o.ready.eq(~have)
        with m.If(eng.o.valid & ~have):
            m.d.sync += [obuf.eq(eng.o.payload.as_value()), have.eq(1)]
        c = og + ot
        oy, ox = oa * L + ol, ob * S + os_
        p = oa * (L * S) + ol * S + os_
        use = Signal()
        m.d.comb += use.eq(have & (c < d.C) & Mux(d.is_pw, p < d.oplane, (oy < d.oh) & (ox < d.ow)))
        pix = Mux(d.is_pw, p, oy * d.ow + ox)
        m.d.comb += [rq.i.valid.eq(use), rq.i.payload.acc[0].eq(obuf[:A]), rq.i.payload.group.eq(c),
                     rq.i.payload.tag.addr.eq((self.out_off[0] + (d.oc0 + c) * d.oplane + pix)[:ab]),
                     rq.i.payload.tag.ch.eq(c)]
        with m.If(have & (~use | rq.i.ready)):                    # elements in order (l, s, t): shift
            m.d.sync += obuf.eq(obuf >> A)
            wraps = odometer(m, [(ot, T), (os_, S), (ol, L), (ob, xsegs), (oa, rows)])
            with m.If(wraps[2]):                                  # the beat is done
                m.d.sync += have.eq(0)
            with m.If(wraps[4]):                                  # the channel group is done
                m.d.sync += og.eq(og + T)

        # requant -> (hswish, after the pre-activation requant clamped to [pre_lo, pre_hi]) -> scratch
        m.d.comb += [rq.lo.eq(Mux(d.is_hs, d.pre_lo, d.lo)), rq.hi.eq(Mux(d.is_hs, d.pre_hi, d.hi)),
                     hs.lo.eq(d.lo), hs.hi.eq(d.hi),
                     hs.i.valid.eq(rq.o.valid & d.is_hs), hs.i.payload.p[0].eq(rq.o.payload.q[0]),
                     hs.i.payload.group.eq(rq.o.payload.tag.ch), hs.i.payload.tag.eq(rq.o.payload.tag),
                     rq.o.ready.eq(Mux(d.is_hs, hs.i.ready, 1)), hs.o.ready.eq(1)]
        fin = Mux(d.is_hs, hs.o.valid, rq.o.valid)
        m.d.comb += [self.wen.eq(fin), self.wdata.eq(Mux(d.is_hs, hs.o.payload.q[0], rq.o.payload.q[0])),
                     self.waddr.eq(Mux(d.is_hs, hs.o.payload.tag.addr, rq.o.payload.tag.addr))]
        with m.If(fin):
            m.d.sync += written.eq(written + 1)

    def elaborate(self, platform):
        m = Module()
        cfg, ab = self.cfg, self.abits
        S, T, L = cfg.rmac_rows, cfg.rmac_cols, cfg.replicas
        WS = cost.rmac_segment_width(cfg)
        depth = RmacEngine.buffer_depth(cfg)
        m.submodules.eng = eng = RmacEngine(cfg)
        # the epilogue, one code per cycle, tagged with its scratch address and channel
        tag_l = data.StructLayout({"addr": unsigned(ab), "ch": unsigned(group_bits(table_depth(cfg, 1)))})
        m.submodules.rq = rq = Requant(cfg, lanes=1, tag_shape=tag_l)
        m.submodules.hs = hs = Hardswish(cfg, lanes=1, tag_shape=tag_l)

        d = self._decode(m)
        ok = Signal()
        m.d.comb += ok.eq(self._geometry_ok(d))
        rows, xsegs = Signal(16), Signal(12)
        taps = Signal(range(depth + 1))                           # weight beats (kh * kw)
        kk = Mux(d.is_pw, d.cin, d.k)                             # row beats per (row group, segment)
        written, total = Signal(32), Signal(32)
        self._results(m, d, eng, rq, hs, rows, xsegs, written)

        c0 = Signal(16)                                           # the group's first channel
        t = Signal(range(T + 1))
        ch = Signal(16)
        m.d.comb += ch.eq(c0 + t)
        fetch = self._params(m, d, ch, rq, hs)
        gat = _Gather(m, cfg, ab, self.rword, self.word_bytes)
        cmd = Signal(RmacEngine.cmd_layout(cfg))
        m.d.comb += eng.cmd.payload.eq(cmd)
        for e in range(L * WS * T):
            m.d.comb += eng.x.payload[e].eq(gat.view[e])
        # weights: a block of up to WS taps of the T channels is T runs (channel t's taps are consecutive
        # bytes of its filter), gathered at once into the beat register as [tap][channel]; the block's
        # weight beats are then handed over one per cycle
        wj = Signal(range(WS + 1))                                # the block's tap being handed over
        for e in range(T):
            m.d.comb += eng.wt.payload[e].eq(gat.view.as_value().word_select(wj * T + e, 8))

        tap = Signal(range(depth + 1))                            # the block's first tap

        def weight_block(first):
            left = taps - first
            return gat.start((wptr + first)[:ab], taps, 0, T, 1, Mux(left < WS, left, WS))
        a, b, q = Signal(16), Signal(12), Signal(range(depth + 1))   # row group, segment, ky / input channel
        wptr = Signal(ab)                                         # the group's weights
        dw_base = (self.in_off[0] + (d.oc0 + c0) * d.plane + (a * (L * d.stride) - d.pad + q) * d.w
                   + b * (S * d.stride) - d.pad)
        pw_base = self.in_off[0] + q * d.plane + a * (S * L)

        xlast = Signal()                                          # the row beat being gathered is the group's last

        def launch_x():
            """Start gathering row beat (a, b, q) and step (a, b, q) to the next one."""
            with m.If(d.is_pw):                                   # pixel s of input channel q at position s
                if gat.split_ok:                                  # the L*S pixels are consecutive: one run
                    m.d.sync += gat.start(pw_base[:ab], 0, 0, 1, 1, L * S, split=True)
                else:
                    m.d.sync += gat.start(pw_base[:ab], 0, S, 1, L, S)
            with m.Else():                                        # input row (oy*stride - pad + ky) of T channels
                m.d.sync += gat.start(dw_base[:ab], d.plane[:ab], (d.stride * d.w)[:ab], T, L, WS)
            m.d.sync += xlast.eq(odometer(m, [(q, kk), (b, xsegs), (a, rows)])[-1])

        with m.FSM():
            with checked_start(m, self, ok, "FETCH"):
                m.d.sync += [rows.eq(Mux(d.is_pw, d.pw_rows, d.dw_rows)), xsegs.eq(Mux(d.is_pw, 1, d.dw_xsegs)),
                             taps.eq(Mux(d.is_pw, d.cin, d.k * d.k)), c0.eq(0), t.eq(0), wptr.eq(self.w_off),
                             total.eq(d.C * d.oplane), a.eq(0), b.eq(0), q.eq(0)]
            # per group of T channels: parameters, command, weight beats, row beats
            with m.State("FETCH"):                                # channel c0 + t's parameters
                m.d.comb += [self.busy.eq(1), self.raddr.eq(fetch.raddr)]
                with m.If(ch < d.C):
                    m.d.comb += fetch.go.eq(1)
                    m.next = "FETCH_WAIT"
                with m.Else():                                    # a padding channel of the last group
                    m.d.sync += [cmd.bias[t].eq(0), cmd.z[t].eq(0)]
                    m.next = "NEXT_CH"
            with m.State("FETCH_WAIT"):
                m.d.comb += [self.busy.eq(1), self.raddr.eq(fetch.raddr)]
                with m.If(fetch.done):
                    m.d.sync += [cmd.bias[t].eq(fetch.value.bias), cmd.z[t].eq(Mux(d.is_pw, 0, fetch.value.z_x))]
                    m.next = "NEXT_CH"
            with m.State("NEXT_CH"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += t.eq(t + 1)
                m.next = "FETCH"
                with m.If(t == T - 1):
                    m.d.sync += [cmd.kh.eq(kk), cmd.kw.eq(Mux(d.is_pw, 1, d.k)),
                                 cmd.stride.eq(Mux(d.is_pw, 1, d.stride)), cmd.pad.eq(Mux(d.is_pw, 0, d.pad)),
                                 cmd.pw.eq(d.is_pw), cmd.load.eq(1), cmd.h.eq(d.h), cmd.w.eq(d.w),
                                 cmd.rows.eq(rows), cmd.xsegs.eq(xsegs), tap.eq(0)]
                    m.next = "CMD"
            with m.State("CMD"):
                m.d.comb += [self.busy.eq(1), eng.cmd.valid.eq(1)]
                with m.If(eng.cmd.ready):
                    m.d.sync += [*weight_block(0), wj.eq(0)]
                    m.next = "WT_GATHER"
            with m.State("WT_GATHER"):                            # tap ``tap`` of the T channels
                m.d.comb += [self.busy.eq(1), gat.active.eq(1), self.raddr.eq(gat.addr)]
                with m.If(gat.last):
                    m.next = "WT_BEAT"
            with m.State("WT_BEAT"):
                m.d.comb += [self.busy.eq(1), eng.wt.valid.eq(1)]
                with m.If(eng.wt.ready):
                    m.d.sync += wj.eq(wj + 1)
                    with m.If(wj == gat.run.n - 1):               # the block's last tap
                        m.d.sync += [tap.eq(tap + gat.run.n), wj.eq(0)]
                        with m.If(tap + gat.run.n == taps):
                            m.next = "X_START"
                        with m.Else():
                            m.d.sync += weight_block(tap + gat.run.n)
                            m.next = "WT_GATHER"
            with m.State("X_START"):                              # the group's first row beat
                m.d.comb += self.busy.eq(1)
                launch_x()
                m.next = "X_GATHER"
            with m.State("X_GATHER"):
                m.d.comb += [self.busy.eq(1), gat.active.eq(1), self.raddr.eq(gat.addr)]
                with m.If(gat.last):
                    m.next = "X_BEAT"
            with m.State("X_BEAT"):
                m.d.comb += [self.busy.eq(1), eng.x.valid.eq(1)]
                with m.If(eng.x.ready):
                    with m.If(xlast):                             # the group is fed
                        m.d.sync += [c0.eq(c0 + T), t.eq(0), wptr.eq(wptr + taps * T)]
                        m.next = "FETCH"
                        with m.If(c0 + T >= d.C):
                            m.next = "DRAIN"
                    with m.Else():                                # the next row beat, at once
                        launch_x()
                        m.next = "X_GATHER"
            with m.State("DRAIN"):                                # the epilogue's last codes
                m.d.comb += self.busy.eq(1)
                with m.If(written == total):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m


def rmac_executor(cfg) -> StagedExecutor:
    return StagedExecutor(cfg, RmacCore)
