"""``MAT.ATTN_KV`` and ``MAT.ATTN_QKV``: LiteMLA's ReLU linear attention (golden/SPEC.md section 5)
on the MAT engine (rtl/mat_engine.py), one head after the other.

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

Correctness first, as rtl/staged.py: the engine's weight and input beats are gathered one byte per
cycle from the scratch (one read port), a tile's weights before its inputs; results drain through
the unit while the next beats are gathered. Geometries the engine or the units cannot take stop the
operation with BAD_GEOMETRY before anything runs: ``ceil(K / mat_mults)`` weight words past the
engine's buffer (``K`` = tokens for ATTN_KV, ``d`` for ATTN_QKV), more table rows than the unit
holds, an operand wider than a byte, a qkv input that is not ``3 H d`` channels of ``N`` tokens.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo

from arch.regmap import ErrorCode
from rtl import record as R
from rtl.divider import Log2Divider
from rtl.mat_engine import MatEngine
from rtl.requant import Requant, clamp
from rtl.staged import Core, ScalarFetch, StagedExecutor


class _AttnCore(Core):
    """The shared body; subclasses name the half (``KV``), its epilogue and its table pairs."""
    KV: bool
    EPILOGUE: str
    TABLES: tuple          # (multiplier table, shift table, rows: "HD" or "H") per unit table range

    def elaborate(self, platform):
        m = Module()
        cfg, rec, ab = self.cfg, self.record, self.abits
        M, N, L = cfg.mat_lanes, cfg.mat_mults, cfg.replicas
        if M < 2 or N & (N - 1) or cfg.act_bits > 8:
            raise ValueError(f"{type(self).__name__}: needs mat_lanes >= 2, a power-of-two mat_mults and "
                             f"byte-wide activations (config {cfg.name})")
        J, lgN, kv = M - 1, N.bit_length() - 1, self.KV

        m.submodules.engine = eng = MatEngine(cfg)
        if kv:
            unit = Requant(cfg, lanes=1, out_shape=signed(cfg.act_bits + 1),
                           tag_shape=data.StructLayout({"addr": ab, "ks": 1}))
            m.d.comb += [unit.lo.eq(-(1 << cfg.act_bits)), unit.hi.eq((1 << cfg.act_bits) - 1)]
        else:
            unit = Log2Divider(cfg, lanes=1)
            # the divider's tag is the log2 code: the write addresses wait in a FIFO, in order
            m.submodules.addrs = addrs = fifo.SyncFIFO(width=ab, depth=2 * unit.LATENCY + 4)
            m.d.comb += [unit.lo.eq(R.geom(rec, "lo")), unit.hi.eq(R.geom(rec, "hi"))]
        m.submodules.unit = unit

        # --- parameters: the scalars, then the unit's table rows (one (M, n) pair per row) ---------
        offs = R.param_offsets(m, rec, self.EPILOGUE, cfg)
        scal = [(name, R.param_bytes(cfg, fmt), True) for name, fmt, count in R.PARAMS[self.EPILOGUE]
                if count == 1]
        m.submodules.fetch_s = fs = ScalarFetch(ab, scal)
        m.submodules.fetch_r = fr = ScalarFetch(ab, [("M", R.param_bytes(cfg, "mult"), False),
                                                     ("n", R.param_bytes(cfg, "shift"), False)])
        for name, _, _ in scal:
            m.d.comb += getattr(fs.addr, name).eq(self.p_off + offs[name])
        m.d.comb += [fs.rdata.eq(self.rdata), fr.rdata.eq(self.rdata)]
        sv = fs.value
        z_x = sv.z_k if kv else sv.z_q
        if not kv:
            m.d.comb += unit.e_lo.eq(sv.e_lo)

        # --- geometry --------------------------------------------------------------------------------
        x = R.operand(rec, 0)
        outs = [R.operand(rec, 1), R.operand(rec, 2)] if kv else [R.operand(rec, 3)]
        used = [x] + outs + ([] if kv else [R.operand(rec, 1), R.operand(rec, 2)])
        H, d, ntok = (Signal(16, name="H"), Signal(16, name="d"), Signal(32, name="ntok"))
        P, K = Signal(32), Signal(32)                    # pixels, reduction length
        HD, chunks, groups, tiles = Signal(32), Signal(32), Signal(32), Signal(16)
        expect, written = Signal(48), Signal(48)
        pcount, jcount = Signal(33), Signal(17)
        rows_total = Signal(33)
        m.d.comb += rows_total.eq(HD + (H if kv else 0))
        bad = Signal()
        m.d.comb += bad.eq((H == 0) | (d == 0) | (ntok == 0) | (chunks > cfg.mat_wbuf_words)
                           | (groups >= (1 << MatEngine.GROUPS_BITS)) | (rows_total > unit_depth(unit))
                           | (x.d0 != 3 * HD) | Cat(*[o.bits > 8 for o in used]).any() | (R.geom(rec, "kv_bits") > 8)
                           | (0 if kv else outs[0].plane != ntok))

        # --- the feed: per head, per tile: cmd, the weight beats, the input beats ---------------------
        h, t, c, g = Signal(16), Signal(16), Signal(32), Signal(32)
        tj, gb = Signal(32), Signal(33)                 # first column of the tile, first pixel of the group
        xbase, wbase, sbase = Signal(40), Signal(40), Signal(40)
        e = Signal(range(max(M, L) * N + 1))            # element of the beat being gathered
        wbeat = Signal(M * N * eng.wop_bits)
        xbeat = Signal(L * N * eng.a_bits)
        pend, pend_w, pend_rd, pend_sx = Signal(), Signal(), Signal(), Signal()
        pend_e = Signal.like(e)
        pend_k = Signal(signed(eng.wop_bits))

        m.d.comb += [eng.cmd.payload.chunks.eq(chunks), eng.cmd.payload.groups.eq(groups),
                     eng.cmd.payload.load.eq(1), eng.cmd.payload.relu.eq(1), eng.cmd.payload.x_zero.eq(z_x),
                     eng.w.payload.eq(wbeat), eng.x.payload.eq(xbeat)]
        for lane in range(M):
            m.d.comb += eng.cmd.payload.bias[lane].eq(0)
            if kv and lane < J:
                m.d.comb += eng.cmd.payload.w_zero[lane].eq(sv.z_v)
        if kv:
            m.d.comb += eng.cmd.payload.ones.eq(1 << J)

        # the element e of the beat being gathered: a scratch byte (rd) or a constant (kc)
        lane, n_ = e >> lgN, e[:lgN] if lgN else Const(0, 1)
        k = Signal(33)
        m.d.comb += k.eq(Cat(n_, c) if lgN else c)
        w_rd, w_addr, w_sx, w_kc = Signal(), Signal(48), Signal(), Signal(signed(eng.wop_bits))
        j = Signal(33)
        m.d.comb += j.eq(tj + lane)
        with m.If(lane < J):
            m.d.comb += w_rd.eq((j < d) & (k < K))
            if kv:          # v[:, j]: tokens consecutive; a padded tap gets w_zero, so w' = 0
                m.d.comb += [w_addr.eq(wbase + j * ntok + k), w_kc.eq(sv.z_v)]
            else:           # kv[h, :, j]: row-major (d, d), signed
                m.d.comb += [w_addr.eq(wbase + k * d + j), w_sx.eq(1)]
        if not kv:          # the k-sum lane: ks[h, :]
            with m.Else():
                m.d.comb += [w_rd.eq(k < K), w_addr.eq(sbase + k)]
        p = Signal(33)
        m.d.comb += p.eq(gb + lane)
        x_rd, x_addr = Signal(), Signal(48)
        m.d.comb += x_rd.eq((p < P) & (k < K))
        if kv:              # k[:, i] of row (pixel) i = p: tokens consecutive
            m.d.comb += x_addr.eq(xbase + p * ntok + k)
        else:               # q[n, :] of token (pixel) n = p: a channel i = k apart by the map
            m.d.comb += x_addr.eq(xbase + k * ntok + p)

        # a byte asked for in one cycle lands in its beat element the next
        m.d.sync += pend.eq(0)
        with m.If(pend):
            byte = self.rdata
            v = Mux(pend_rd, Mux(pend_sx, byte.as_signed(), byte), pend_k)
            with m.If(pend_w):
                m.d.sync += wbeat.word_select(pend_e, eng.wop_bits).eq(v)
            with m.Else():
                m.d.sync += xbeat.word_select(pend_e, eng.a_bits).eq(v)

        phase_w = Signal()          # gathering / sending weight beats (else input beats)
        size = Mux(phase_w, M * N, L * N)

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
        uin = unit.i.payload
        if kv:
            with m.If(om < J):
                m.d.comb += [ovalid.eq((op < d) & (oj < d)), uin.group.eq(oh * d + oj),
                             uin.tag.addr.eq(self.out_off[0] + (oh * d + op) * d + oj)]
            with m.Else():
                m.d.comb += [ovalid.eq((op < d) & (ot == 0)), uin.group.eq(HD + oh), uin.tag.ks.eq(1),
                             uin.tag.addr.eq(self.out_off[1] + oh * d + op)]
            m.d.comb += [uin.acc[0].eq(acc), unit.i.valid.eq(ohold & ovalid), otake.eq(unit.i.ready)]
        else:
            m.d.comb += [ovalid.eq((om < J) & (op < P) & (oj < d)), uin.num[0].eq(acc),
                         uin.den.eq(obeat[olM + J]), uin.group.eq(oh * d + oj),
                         addrs.w_data.eq(self.out_off[0]
                                         + (R.geom(rec, "out_offset") + oh * d + oj) * outs[0].plane + op),
                         unit.i.valid.eq(ohold & ovalid & addrs.w_rdy),
                         addrs.w_en.eq(unit.i.valid & unit.i.ready), otake.eq(unit.i.ready & addrs.w_rdy)]
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
        m.d.comb += unit.o.ready.eq(1)
        with m.If(unit.o.valid):
            m.d.sync += written.eq(written + 1)
            m.d.comb += self.wen.eq(1)
            if kv:
                q, tag = unit.o.payload.q[0], unit.o.payload.tag
                kmax = (Const(1, 1) << R.geom(rec, "kv_bits")[:4]) - 1       # kv_bits <= 8 (checked)
                m.d.comb += [self.waddr.eq(tag.addr),
                             self.wdata.eq(clamp(q, Mux(tag.ks, 0, R.geom(rec, "lo")),
                                                 Mux(tag.ks, kmax, R.geom(rec, "hi"))))]
            else:
                m.d.comb += [self.waddr.eq(addrs.r_data), self.wdata.eq(unit.o.payload.q[0]), addrs.r_en.eq(1)]

        # --- the sequence --------------------------------------------------------------------------
        r, tbl, grp = Signal(32), Signal(range(len(self.TABLES) + 1)), Signal(32)
        prm = unit.prm.payload
        for i, (tm, tn, _) in enumerate(self.TABLES):      # row r of table pair tbl
            with m.If(tbl == i):
                m.d.comb += [fr.addr.M.eq(self.p_off + offs[tm] + r * R.param_bytes(cfg, "mult")),
                             fr.addr.n.eq(self.p_off + offs[tn] + r * R.param_bytes(cfg, "shift"))]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.go):
                    xs = x.plane
                    m.d.sync += [H.eq(R.geom(rec, "heads")), d.eq(R.geom(rec, "dim")), ntok.eq(xs),
                                 P.eq(R.geom(rec, "dim") if kv else xs), K.eq(xs if kv else R.geom(rec, "dim")),
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
                    m.d.sync += expect.eq(HD * (d + 1) if kv else HD * P)
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
                m.d.comb += [self.busy.eq(1), unit.prm.valid.eq(1), prm.group.eq(grp),
                             prm.row.m[0].eq(fr.value.M), prm.row.n[0].eq(fr.value.n),
                             prm.row.z[0].eq(0 if kv else sv.z_out)]
                with m.If(unit.prm.ready):
                    m.d.sync += [grp.eq(grp + 1), r.eq(r + 1)]
                    m.next = "ROW"
                    for i, (_, _, rows) in enumerate(self.TABLES):
                        with m.If((tbl == i) & (r == (HD if rows == "HD" else H) - 1)):
                            m.d.sync += [r.eq(0), tbl.eq(i + 1)]
                            if i == len(self.TABLES) - 1:
                                m.d.sync += h.eq(0)
                                m.next = "HEAD"
            with m.State("HEAD"):
                m.d.comb += self.busy.eq(1)
                hd3 = h * 3 * d
                if kv:
                    m.d.sync += [xbase.eq(self.in_off[0] + (hd3 + d) * ntok),
                                 wbase.eq(self.in_off[0] + (hd3 + 2 * d) * ntok)]
                else:
                    m.d.sync += [xbase.eq(self.in_off[0] + hd3 * ntok), wbase.eq(self.in_off[1] + h * d * d),
                                 sbase.eq(self.in_off[2] + h * d)]
                m.d.sync += [t.eq(0), tj.eq(0)]
                m.next = "CMD"
            with m.State("CMD"):
                m.d.comb += [self.busy.eq(1), eng.cmd.valid.eq(1)]
                with m.If(eng.cmd.ready):
                    m.d.sync += [c.eq(0), e.eq(0), phase_w.eq(1)]
                    m.next = "GATHER"
            with m.State("GATHER"):
                m.d.comb += [self.busy.eq(1), self.raddr.eq(Mux(phase_w, w_addr, x_addr))]
                m.d.sync += [pend.eq(1), pend_w.eq(phase_w), pend_e.eq(e), e.eq(e + 1),
                             pend_rd.eq(Mux(phase_w, w_rd, x_rd)), pend_sx.eq(phase_w & w_sx),
                             pend_k.eq(Mux(phase_w & (lane < J), w_kc, 0))]
                with m.If(e == size - 1):
                    m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.busy.eq(1), eng.w.valid.eq(phase_w & ~pend), eng.x.valid.eq(~phase_w & ~pend)]
                with m.If(Mux(phase_w, eng.w.ready, eng.x.ready) & ~pend):
                    m.d.sync += [c.eq(c + 1), e.eq(0)]
                    m.next = "GATHER"
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
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                with m.If(written == expect):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m


def unit_depth(unit) -> int:
    """Rows of the unit's per-channel parameter table."""
    return unit.rq.depth if isinstance(unit, Log2Divider) else unit.depth


class AttnKvCore(_AttnCore):
    """``MAT.ATTN_KV``: k^T [v | 1] of every head, then kv per (head, column) and the k-sum per head
    requantized."""
    KV, EPILOGUE = True, "kv"
    TABLES = (("M_kv", "n_kv", "HD"), ("M_ks", "n_ks", "H"))


class AttnQkvCore(_AttnCore):
    """``MAT.ATTN_QKV``: q [kv | ks] of every head, the log2 divisor and the shift division."""
    KV, EPILOGUE = False, "divide"
    TABLES = (("M_o", "n_o", "HD"),)


def attn_kv_executor(cfg) -> StagedExecutor:
    return StagedExecutor(cfg, AttnKvCore)


def attn_qkv_executor(cfg) -> StagedExecutor:
    return StagedExecutor(cfg, AttnQkvCore)
