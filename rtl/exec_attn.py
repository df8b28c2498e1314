"""``MAT.ATTN_KV`` and ``MAT.ATTN_QKV``: LiteMLA's ReLU linear attention (golden/SPEC.md section 5)
on the MAT engine (rtl/mat_engine.py), one head after the other.

One core runs both halves (the record's opcode picks the address generation and the epilogue unit),
so ``attn_executor`` maps both opcodes to one executor: one engine, one scratch (rtl/machine.py
shares the instance of a factory named twice).

The qkv input holds, per head ``h``, the channels ``[3dh, 3dh + d)`` q, then k, then v (timm's
layout, golden/execute.py ``split_qkv``), each a map of ``N`` tokens (CHW: a channel's tokens are
consecutive bytes in the scratch). Both halves are matrix products cut into engine tiles of
``mat_lanes`` lanes: lanes ``0 .. M-2`` take ``M - 1`` consecutive columns ``j`` and the last lane
is the special column that every tile carries, so that a tile's result beat holds what the
epilogue needs together:

* **ATTN_KV** (SPEC 5.1, 5.2): pixels are the rows ``i`` of kv (``x = k[:, i]``, ReLU with ``z_k``
  on the fly), the reduction runs over the ``N`` tokens, lane ``j`` has the weights ``v[:, j]``
  less ``z_v`` (the engine's ``w_zero``) and the last lane is the ``ones`` lane, the k-sum. The
  int32 results go one per cycle through a one-lane requantizer (rtl/requant.py) whose table rows
  are ``M_kv/n_kv`` per column ``(h, j)``, then ``M_ks/n_ks`` per head; its output, 9 bits signed,
  is clamped to the record's ``lo .. hi`` (kv, signed) or to ``0 .. 2^kv_bits - 1`` (the k-sum of
  the first tile; the later tiles' copies are dropped).
* **ATTN_QKV** (SPEC 5.3 - 5.5): pixels are the tokens ``n`` (``x = q[n, :]``, ReLU with ``z_q``),
  the reduction runs over ``i < d``, lane ``j`` has the column ``kv[h, :, j]`` (signed) and the last
  lane the k-sum codes ``ks[h, :]``, so each beat pairs every numerator with its token's
  denominator for the log2 divider (rtl/divider.py, table rows ``M_o/n_o/z_out`` per column).
  Results are written at channel ``out_offset + h d + j`` of the output map.

The engine's weight and input beats are built from runs of consecutive scratch bytes, a row per
cycle (rtl/staged.py ``RowRun``; see the comment at the feed), a tile's weights before its inputs;
results drain through the unit while the next beats are gathered. Geometries the engine or the units cannot take stop the
operation with BAD_GEOMETRY before anything runs: ``ceil(K / mat_mults)`` weight words past the
engine's buffer (``K`` = tokens for ATTN_KV, ``d`` for ATTN_QKV), more table rows than the unit
holds, an operand wider than a byte, a qkv input that is not ``3 H d`` channels of ``N`` tokens.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo

from arch import encoding
from arch.regmap import ErrorCode
from rtl import record as R
from rtl.divider import Log2Divider
from rtl.mat_engine import MatEngine
from rtl.requant import Requant, clamp
from rtl.staged import Core, RowRun, ScalarFetch, StagedExecutor, drain_state


# the unit's table rows of each half: (epilogue, multiplier table, shift table, rows "HD" or "H")
KV_TABLES = (("kv", "M_kv", "n_kv", "HD"), ("kv", "M_ks", "n_ks", "H"))
# (the rows of the divisor's mantissa bit, "HDF", only when the operation has it)
QKV_TABLES = (("divide", "M_o", "n_o", "HD"), ("divide", "M_o1", "n_o1", "HDF"))


class AttnCore(Core):
    """Both attention halves on one MAT engine (module docstring)."""

    def elaborate(self, platform):
        m = Module()
        cfg, rec, ab = self.cfg, self.record, self.abits
        M, N, L = cfg.mat_lanes, cfg.mat_mults, cfg.replicas
        if M < 2 or N & (N - 1) or cfg.act_bits > 8:
            raise ValueError(f"{type(self).__name__}: needs mat_lanes >= 2, a power-of-two mat_mults and "
                             f"byte-wide activations (config {cfg.name})")
        J, lgN = M - 1, N.bit_length() - 1
        kv = Signal()                                   # ATTN_KV (else ATTN_QKV)
        m.d.comb += kv.eq(R.opcode(rec) == encoding.OPCODE_IDS["MAT.ATTN_KV"])

        m.submodules.engine = eng = MatEngine(cfg)
        # ATTN_KV's requantizer: 9 bits signed out (kv and the k-sum clamped at the write); its tag
        # is the element's scratch address
        m.submodules.rq = rq = Requant(cfg, lanes=1, out_shape=signed(cfg.act_bits + 1),
                                       tag_shape=data.StructLayout({"addr": ab, "ks": 1}))
        m.d.comb += [rq.lo.eq(-(1 << cfg.act_bits)), rq.hi.eq((1 << cfg.act_bits) - 1)]
        # ATTN_QKV's divider: its tag is the log2 code, so the write addresses wait in a FIFO, in order
        m.submodules.dv = dv = Log2Divider(cfg, lanes=1)
        m.submodules.addrs = addrs = fifo.SyncFIFO(width=ab, depth=2 * dv.LATENCY + 4)
        m.d.comb += [dv.lo.eq(R.geom(rec, "lo")), dv.hi.eq(R.geom(rec, "hi"))]

        # --- parameters: the scalars, then the unit's table rows (one (M, n) pair per row) ---------
        offs = {epi: R.param_offsets(m, rec, epi, cfg) for epi in ("kv", "divide")}
        scal = [(epi, name, R.param_bytes(cfg, fmt)) for epi in ("kv", "divide")
                for name, fmt, count in R.PARAMS[epi] if count == 1]
        # the scalars of both halves (those of the other half read bytes that are not used)
        m.submodules.fetch_s = fs = ScalarFetch(ab, [(name, nb, True) for _, name, nb in scal])
        m.submodules.fetch_r = fr = ScalarFetch(ab, [("M", R.param_bytes(cfg, "mult"), False),
                                                     ("n", R.param_bytes(cfg, "shift"), False)])
        for epi, name, _ in scal:
            m.d.comb += getattr(fs.addr, name).eq(self.p_off + offs[epi][name])
        m.d.comb += [fs.rdata.eq(self.rdata), fr.rdata.eq(self.rdata)]
        sv = fs.value
        mant = Signal()                                 # the divisor's mantissa bit (SPEC 5.4)
        m.d.comb += [mant.eq(R.geom(rec, "div_frac") != 0), dv.e_lo.eq(sv.e_lo), dv.frac.eq(mant)]

        # --- geometry --------------------------------------------------------------------------------
        x, qkv_out = R.operand(rec, 0), R.operand(rec, 3)
        H, d, ntok = (Signal(16, name="H"), Signal(16, name="d"), Signal(32, name="ntok"))
        P, K = Signal(32), Signal(32)                    # pixels, reduction length
        HD, chunks, groups, tiles = Signal(32), Signal(32), Signal(32), Signal(16)
        expect, written = Signal(48), Signal(48)
        pcount, jcount = Signal(33), Signal(17)
        rows_total = Signal(33)
        m.d.comb += [rows_total.eq(HD + Mux(kv, H, Mux(mant, HD, 0))), dv.f_rows.eq(HD)]
        wide = Cat(*[R.operand(rec, i).bits > 8 for i in range(3)]).any() | (~kv & (qkv_out.bits > 8))
        bad = Signal()
        m.d.comb += bad.eq((H == 0) | (d == 0) | (ntok == 0) | (chunks > cfg.mat_wbuf_words)
                           | (groups >= (1 << MatEngine.GROUPS_BITS)) | (rows_total > min(rq.depth, dv.rq.depth))
                           | (x.d0 != 3 * HD) | wide | (R.geom(rec, "kv_bits") > 8)
                           | (~kv & (qkv_out.plane != ntok)))

        # --- the feed: per head, per tile: cmd, the weight beats, the input beats ---------------------
        h, t, c, g = Signal(16), Signal(16), Signal(32), Signal(32)
        tj, gb = Signal(32), Signal(33)                 # first column of the tile, first pixel of the group
        xbase, wbase, sbase = Signal(40), Signal(40), Signal(40)
        wbeat = Signal(M * N * eng.wop_bits)
        xbeat = Signal(L * N * eng.a_bits)

        m.d.comb += [eng.cmd.payload.chunks.eq(chunks), eng.cmd.payload.groups.eq(groups),
                     eng.cmd.payload.load.eq(1), eng.cmd.payload.relu.eq(1),
                     eng.cmd.payload.x_zero.eq(Mux(kv, sv.z_k, sv.z_q)), eng.cmd.payload.ones.eq(Mux(kv, 1 << J, 0)),
                     eng.w.payload.eq(wbeat), eng.x.payload.eq(xbeat)]
        for lane in range(M):
            m.d.comb += eng.cmd.payload.bias[lane].eq(0)
            if lane < J:
                m.d.comb += eng.cmd.payload.w_zero[lane].eq(Mux(kv, sv.z_v, 0))

        phase_w = Signal()          # gathering / sending weight beats (else input beats)

        # The beats from runs of consecutive bytes, read a scratch row per cycle (RowRun) over a beat
        # filled first with what an element that is not read holds:
        # * ATTN_KV: a pixel's (row i of kv: k[:, i]) and a lane's (v[:, j]) taps are consecutive
        #   tokens: run r is pixel / lane r, up to N taps, element r N + n;
        # * ATTN_QKV: a tap's (channel i of q) L pixels are consecutive tokens, and its (row i of
        #   kv[h]) J lanes consecutive columns: run r is tap r, element l N + r; then the k-sum
        #   lane's N taps ks[h, i], one run, element J N + n.
        RL = max(N, L, J)
        krun = RowRun(m, ab, self.rword, self.word_bytes, RL)
        kr, kr_d = Signal(range(RL + 2)), Signal(range(RL + 2))   # the run, the one in flight
        kw_d, kks_d, ksx_d = Signal(), Signal(), Signal()
        k_left = K - (c << lgN)
        p_left, j_left = P - gb, d - tj

        def run(r):
            """Run r of the beat: (is the k-sum run, address, length, read it, the beat's last run)."""
            ks = ~kv & phase_w & (r == N)                         # ATTN_QKV's k-sum lane
            tap = (c << lgN) + r
            line = Mux(phase_w, tj + r, gb + r)                   # ATTN_KV: column j of v, or row i of k
            n = Mux(kv | ks, Mux(k_left < N, k_left, N),
                    Mux(phase_w, Mux(j_left < J, j_left, J), Mux(p_left < L, p_left, L)))
            ok = Mux(kv, Mux(phase_w, (r < J) & (line < d), (r < L) & (line < P)), ks | (tap < K))
            last = r == Mux(kv, Mux(phase_w, J - 1, L - 1), Mux(phase_w, N, N - 1))
            addr = Mux(kv, Mux(phase_w, wbase, xbase) + line * ntok + (c << lgN),
                       Mux(ks, sbase + (c << lgN), Mux(phase_w, wbase + tap * d + tj, xbase + tap * ntok + gb)))
            return ks, addr[:ab], n, ok, last

        ks_run, k_addr, k_len, k_ok, k_last = run(kr)
        _, n_addr, n_len, _, _ = run(kr + 1)
        with m.If(krun.active):
            m.d.sync += [kr_d.eq(kr), kw_d.eq(phase_w), kks_d.eq(ks_run), ksx_d.eq(~kv & phase_w & ~ks_run)]
        for jr, (en, byte) in enumerate(krun.landing(RL)):
            with m.If(en):
                el = Mux(kv, kr_d * N + jr, Mux(kks_d, J * N + jr, jr * N + kr_d))
                with m.If(kw_d):
                    m.d.sync += wbeat.word_select(el, eng.wop_bits).eq(Mux(ksx_d, byte.as_signed(), byte))
                with m.Else():
                    m.d.sync += xbeat.word_select(el, eng.a_bits).eq(byte)

        # --- the drain: result beats, one element a cycle into the unit -------------------------------
        obeat = Signal(data.ArrayLayout(signed(cfg.acc_bits), L * M))
        ohold = Signal()
        ol, om = Signal(range(L + 1)), Signal(range(M + 1))
        olM = Signal(range(L * M + 1))
        oh, ot, og = Signal(16), Signal(16), Signal(32)
        otj, ogb = Signal(32), Signal(33)
        m.d.comb += eng.o.ready.eq(~ohold)
        with m.If(eng.o.valid & ~ohold):
            m.d.sync += [obeat.eq(eng.o.payload), ohold.eq(1)]
        op, oj = Signal(33), Signal(33)
        m.d.comb += [op.eq(ogb + ol), oj.eq(otj + om)]
        acc = obeat[olM + om]
        ovalid, otake = Signal(), Signal()
        ri, di = rq.i.payload, dv.i.payload
        # ATTN_KV: kv[h, i, j] (lanes < J), the k-sum ks[h, i] (lane J of the first tile)
        with m.If(om < J):
            m.d.comb += [ri.group.eq(oh * d + oj), ri.tag.addr.eq(self.out_off[0] + (oh * d + op) * d + oj)]
        with m.Else():
            m.d.comb += [ri.group.eq(HD + oh), ri.tag.ks.eq(1), ri.tag.addr.eq(self.out_off[1] + oh * d + op)]
        # ATTN_QKV: num[n, j] (lanes < J) with den[n] (lane J), out at channel out_offset + h d + j
        m.d.comb += [ri.acc[0].eq(acc), di.num[0].eq(acc), di.den.eq(obeat[olM + J]), di.group.eq(oh * d + oj),
                     addrs.w_data.eq(self.out_off[0]
                                     + (R.geom(rec, "out_offset") + oh * d + oj) * qkv_out.plane + op)]
        with m.If(kv):
            m.d.comb += [ovalid.eq((op < d) & Mux(om < J, oj < d, ot == 0)),
                         rq.i.valid.eq(ohold & ovalid), otake.eq(rq.i.ready)]
        with m.Else():
            m.d.comb += [ovalid.eq((om < J) & (op < P) & (oj < d)),
                         dv.i.valid.eq(ohold & ovalid & addrs.w_rdy),
                         addrs.w_en.eq(dv.i.valid & dv.i.ready), otake.eq(dv.i.ready & addrs.w_rdy)]
        with m.If(ohold & (~ovalid | otake)):
            with m.If(om == M - 1):
                m.d.sync += om.eq(0)
                with m.If(ol == L - 1):
                    m.d.sync += [ol.eq(0), olM.eq(0), ohold.eq(0), og.eq(og + 1), ogb.eq(ogb + L)]
                    with m.If(og == groups - 1):
                        m.d.sync += [og.eq(0), ogb.eq(0), ot.eq(ot + 1), otj.eq(otj + J)]
                        with m.If(ot == tiles - 1):
                            m.d.sync += [ot.eq(0), otj.eq(0), oh.eq(oh + 1)]
                with m.Else():
                    m.d.sync += [ol.eq(ol + 1), olM.eq(olM + M)]
            with m.Else():
                m.d.sync += om.eq(om + 1)

        # results into the output regions
        m.d.comb += [rq.o.ready.eq(1), dv.o.ready.eq(1)]
        with m.If(rq.o.valid):
            q, tag = rq.o.payload.q[0], rq.o.payload.tag
            kmax = (Const(1, 1) << R.geom(rec, "kv_bits")[:4]) - 1       # kv_bits <= 8 (checked)
            m.d.comb += [self.wen.eq(1), self.waddr.eq(tag.addr),
                         self.wdata.eq(clamp(q, Mux(tag.ks, 0, R.geom(rec, "lo")),
                                             Mux(tag.ks, kmax, R.geom(rec, "hi"))))]
        with m.If(dv.o.valid):
            m.d.comb += [self.wen.eq(1), self.waddr.eq(addrs.r_data), self.wdata.eq(dv.o.payload.q[0]),
                         addrs.r_en.eq(1)]
        with m.If(self.wen):
            m.d.sync += written.eq(written + 1)

        # --- the sequence --------------------------------------------------------------------------
        r, tbl, grp = Signal(32), Signal(range(max(len(KV_TABLES), len(QKV_TABLES)) + 1)), Signal(32)
        for half, tables in ((kv, KV_TABLES), (~kv, QKV_TABLES)):
            for i, (epi, tm, tn, _) in enumerate(tables):      # row r of table pair tbl
                with m.If(half & (tbl == i)):
                    m.d.comb += [fr.addr.M.eq(self.p_off + offs[epi][tm] + r * R.param_bytes(cfg, "mult")),
                                 fr.addr.n.eq(self.p_off + offs[epi][tn] + r * R.param_bytes(cfg, "shift"))]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.go):
                    xs = x.plane
                    m.d.sync += [H.eq(R.geom(rec, "heads")), d.eq(R.geom(rec, "dim")), ntok.eq(xs),
                                 P.eq(Mux(kv, R.geom(rec, "dim"), xs)), K.eq(Mux(kv, xs, R.geom(rec, "dim"))),
                                 HD.eq(R.geom(rec, "heads") * R.geom(rec, "dim")),
                                 groups.eq(0), tiles.eq(0), pcount.eq(0), jcount.eq(0), written.eq(0),
                                 ohold.eq(0), ol.eq(0), om.eq(0), olM.eq(0), oh.eq(0), ot.eq(0), og.eq(0),
                                 otj.eq(0), ogb.eq(0)]
                    m.next = "PREP"
            with m.State("PREP"):
                # ceil(K / N) by a shift; ceil(P / L) and ceil(d / J) by counting (no divider)
                m.d.comb += self.busy.eq(1)
                m.d.sync += chunks.eq((K + N - 1) >> lgN)
                with m.If(pcount < P):
                    m.d.sync += [pcount.eq(pcount + L), groups.eq(groups + 1)]
                with m.If(jcount < d):
                    m.d.sync += [jcount.eq(jcount + J), tiles.eq(tiles + 1)]
                with m.If((pcount >= P) & (jcount >= d)):
                    m.d.sync += expect.eq(Mux(kv, HD * (d + 1), HD * P))
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += [self.busy.eq(1), self.raddr.eq(fs.raddr)]
                with m.If(bad):
                    m.next = "ERROR"
                with m.Else():
                    m.d.comb += fs.go.eq(1)
                    m.next = "SCALARS"
            with m.State("ERROR"):
                m.d.comb += [self.busy.eq(1), self.error.eq(1), self.error_code.eq(ErrorCode.BAD_GEOMETRY)]
                m.next = "IDLE"
            with m.State("SCALARS"):
                m.d.comb += [self.busy.eq(1), self.raddr.eq(fs.raddr)]
                with m.If(fs.done):
                    m.d.sync += [r.eq(0), tbl.eq(0), grp.eq(0)]
                    m.next = "ROW"
            with m.State("ROW"):
                m.d.comb += [self.busy.eq(1), self.raddr.eq(fr.raddr), fr.go.eq(1)]
                m.next = "ROW_WAIT"
            with m.State("ROW_WAIT"):
                m.d.comb += [self.busy.eq(1), self.raddr.eq(fr.raddr)]
                with m.If(fr.done):
                    m.next = "ROW_PRM"
            with m.State("ROW_PRM"):
                m.d.comb += self.busy.eq(1)
                for unit, z in ((rq, 0), (dv, sv.z_out)):
                    prm = unit.prm.payload
                    m.d.comb += [prm.group.eq(grp), prm.row.m[0].eq(fr.value.M), prm.row.n[0].eq(fr.value.n),
                                 prm.row.z[0].eq(z)]
                m.d.comb += [rq.prm.valid.eq(kv), dv.prm.valid.eq(~kv)]
                with m.If(Mux(kv, rq.prm.ready, dv.prm.ready)):
                    m.d.sync += [grp.eq(grp + 1), r.eq(r + 1)]
                    m.next = "ROW"
                    for half, tables in ((kv, KV_TABLES), (~kv, QKV_TABLES)):
                        for i, (_, _, _, rows) in enumerate(tables):
                            with m.If(half & (tbl == i) & (r == (H if rows == "H" else HD) - 1)):
                                m.d.sync += [r.eq(0), tbl.eq(i + 1)]
                                if i + 1 < len(tables) and tables[i + 1][3] == "HDF":
                                    with m.If(~mant):       # no rows of the mantissa bit: done
                                        m.d.sync += h.eq(0)
                                        m.next = "HEAD"
                                elif i == len(tables) - 1:
                                    m.d.sync += h.eq(0)
                                    m.next = "HEAD"
            with m.State("HEAD"):
                m.d.comb += self.busy.eq(1)
                hd3 = h * 3 * d
                with m.If(kv):          # k and v of head h
                    m.d.sync += [xbase.eq(self.in_off[0] + (hd3 + d) * ntok),
                                 wbase.eq(self.in_off[0] + (hd3 + 2 * d) * ntok)]
                with m.Else():          # q of head h, its kv and k-sum
                    m.d.sync += [xbase.eq(self.in_off[0] + hd3 * ntok), wbase.eq(self.in_off[1] + h * d * d),
                                 sbase.eq(self.in_off[2] + h * d)]
                m.d.sync += [t.eq(0), tj.eq(0)]
                m.next = "CMD"
            with m.State("CMD"):
                m.d.comb += [self.busy.eq(1), eng.cmd.valid.eq(1)]
                with m.If(eng.cmd.ready):
                    m.d.sync += [c.eq(0), phase_w.eq(1)]
                    m.next = "FILL"
            with m.State("SEND"):
                m.d.comb += [self.busy.eq(1), eng.w.valid.eq(phase_w), eng.x.valid.eq(~phase_w)]
                with m.If(Mux(phase_w, eng.w.ready, eng.x.ready)):
                    m.d.sync += c.eq(c + 1)
                    m.next = "FILL"
                    with m.If(c == chunks - 1):
                        m.d.sync += c.eq(0)
                        with m.If(phase_w):              # the tile's weights are in: its inputs next
                            m.d.sync += [phase_w.eq(0), g.eq(0), gb.eq(0)]
                        with m.Else():
                            m.d.sync += [g.eq(g + 1), gb.eq(gb + L)]
                            with m.If(g == groups - 1):
                                m.d.sync += [t.eq(t + 1), tj.eq(tj + J)]
                                m.next = "CMD"
                                with m.If(t == tiles - 1):
                                    m.d.sync += h.eq(h + 1)
                                    m.next = "HEAD"
                                    with m.If(h == H - 1):
                                        m.next = "DRAIN"
            with m.State("FILL"):                                 # c, phase_w, gb, tj are the beat's now
                # the elements that are not read: v's padding taps z_v (so w' = 0), the ones lane 0, x 0
                m.d.comb += self.busy.eq(1)
                with m.If(phase_w & kv):
                    m.d.sync += wbeat.eq(Cat(*([sv.z_v[:eng.wop_bits]] * (J * N)), Const(0, eng.wop_bits * N)))
                with m.Elif(phase_w):
                    m.d.sync += wbeat.eq(0)
                with m.Else():
                    m.d.sync += xbeat.eq(0)
                _, a0, n0, _, _ = run(Const(0, kr.shape()))
                m.d.sync += [kr.eq(0), *krun.begin(a0, n0)]
                m.next = "RUNS"
            with m.State("RUNS"):                               # run kr: pixel (x) or lane (w)
                m.d.comb += self.busy.eq(1)

                def next_run():
                    with m.If(k_last):
                        m.next = "LAND"
                    with m.Else():
                        m.d.sync += [kr.eq(kr + 1), *krun.begin(n_addr, n_len)]
                with m.If(k_ok):
                    m.d.comb += [krun.active.eq(1), self.raddr.eq(krun.addr)]
                    with m.If(krun.end):
                        next_run()
                with m.Else():                                    # a lane or pixel past the map: not read
                    next_run()
            with m.State("LAND"):                              # the last row lands
                m.d.comb += self.busy.eq(1)
                m.next = "SEND"
            drain_state(m, self, written == expect)
        return m


def attn_executor(cfg) -> StagedExecutor:
    """One executor for ``MAT.ATTN_KV`` and ``MAT.ATTN_QKV`` (map both opcodes to this factory)."""
    return StagedExecutor(cfg, AttnCore)
