"""``MAT.CONV`` and ``MAT.LINEAR``: convolutions and vector x matrix products on the MAT engine.

The core does in hardware what rtl/mat_schedule.py plans on the host. The operation's output
channels ``[oc0, oc1)`` are cut into tiles of at most ``M = mat_lanes`` channels that never straddle
a convolution group (grouped 1x1 convs: a tile's lanes share their input channels). Per tile it

1. reads its lanes' parameters (folded bias; the epilogue's ``M``/``n``/``z_out``, for ``hswish``
   the pre-activation requant and the knee) from the parameter block, each field of the ``M``
   lanes one run of its table (:class:`~rtl.staged.RowRun`), and writes the epilogue units' table
   row 0;
2. sends the engine one command (``chunks = ceil(K / N)`` words of the ``K = cin/groups * k * k``
   taps, every pixel group of ``L = replicas`` output pixels, ``load = 1``, the lanes' biases), the
   ``chunks`` weight beats (lane ``m``, tap ``c N + n``: byte ``w_off + (ch + m) K + c N + n`` of the
   ``[oc1 - oc0, cin/groups, k, k]`` weights; 0 past ``K`` and for unused lanes) and the input beats
   (pixel group, then chunk; element ``l N + n`` = pixel ``g L + l``, tap ``c N + n``: the input code
   at ``(ci, oy stride - pad + ky, ox stride - pad + kx)``, the channel's padding code ``z_x[ci]``
   outside the map (the low byte of its int16 table entry: SPEC 0/2), 0 past ``K``);
3. hands the engine's ``L x M`` accumulators pixel by pixel (pixels past the map dropped) to the
   epilogue: :class:`~rtl.requant.Requant` (``requant``; ``logits`` with ``z = 0`` and the output
   tensor's signed range, as golden's ``logits_requant``; ``hswish``: the pre-activation requant to
   ``[pre_lo, pre_hi]``, then :class:`~rtl.hswish.Hardswish`), and writes each lane's code at
   ``out_off[0] + ((oc0 + ch) * plane + pixel) * bytes`` (little-endian; 2 bytes for logits).

A tile starts once the one before it is written (its table row is then free). A weight beat is
``M`` runs of ``N`` taps, read a scratch row per cycle. The input beats (an im2col: padding,
strides and the ``z_x`` substitution) are gathered byte by byte through the scratch read port
(address registered, data two cycles later), but once per conv group, not once per tile: before a
group's first tile they are written in beat order, each on whole scratch rows, into the free scratch
past the operation's regions, and every tile streams them from there at a row per cycle (one beat per
cycle when ``L N`` bytes fit a row). When they do not fit (:func:`stages_inputs` is the Python
mirror), each tile gathers its own. ``MAT.LINEAR`` is the 1x1 case on a 1x1 map. Geometries the core cannot run stop the operation with BAD_GEOMETRY before anything is
computed (:func:`geometry_ok` is the Python mirror of the check).
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data

from arch import encoding
from arch.regmap import ErrorCode
from arch.timing import MAT_GROUPS_BITS
from rtl import record as R
from rtl.hswish import Hardswish
from rtl.mat_engine import MatEngine
from rtl.requant import Requant
from rtl.staged import Core, RowRun, RowWrite, StagedExecutor, checked_start, regions, scratch_depth

EPILOGUES = ("requant", "hswish", "logits")
LINEAR = encoding.OPCODE_IDS["MAT.LINEAR"]
CONV = encoding.OPCODE_IDS["MAT.CONV"]


def _shape(cfg, opcode: str, g: dict) -> tuple[dict, int, int]:
    """The geometry as the core runs it (``MAT.LINEAR``: a 1x1 conv on a 1x1 map), its reduction words
    ``ceil(cin / groups * k * k / N)`` and pixel groups ``ceil(oh * ow / L)``."""
    if opcode == "MAT.LINEAR":
        g = dict(g, h=1, w=1, oh=1, ow=1, k=1, stride=1, pad=0, groups=1)
    chunks = -(-(g["cin"] // max(1, g["groups"]) * g["k"] ** 2) // cfg.mat_mults)
    return g, chunks, -(-g["oh"] * g["ow"] // cfg.replicas)


def geometry_ok(cfg, opcode: str, epilogue: str, g: dict, oc0: int, oc1: int, x_bits: int, out_bits: int,
                n_in: int = 1, n_out: int = 1) -> bool:
    """What :class:`MatCore` runs (Python mirror of its BAD_GEOMETRY check)."""
    g, chunks, pixel_groups = _shape(cfg, opcode, g)
    out_max = cfg.logit_bits if epilogue == "logits" else cfg.act_bits
    ok = (opcode in ("MAT.CONV", "MAT.LINEAR") and epilogue in EPILOGUES and n_in == 1 and n_out == 1
          and 0 <= oc0 < oc1 <= g["cout"] and x_bits <= cfg.act_bits and 1 <= out_bits <= out_max
          and g.get("w_bits", cfg.weight_bits) <= cfg.weight_bits
          and g["k"] >= 1 and g["stride"] >= 1 and g["groups"] >= 1)
    if not ok or g["cin"] % g["groups"] or g["cout"] % g["groups"]:
        return False
    return 1 <= chunks <= cfg.mat_wbuf_words and 1 <= pixel_groups < 1 << MAT_GROUPS_BITS


def stages_inputs(cfg, prog, op) -> bool:
    """Whether :class:`MatCore` gathers ``op``'s input beats once into the free scratch and streams
    them to every tile (else each tile gathers its own): the beats of one conv group must fit."""
    _, chunks, pixel_groups = _shape(cfg, op.opcode, op.geom)
    beats = pixel_groups * chunks
    row = cfg.axi_data_bits // 8
    return regions(prog, op)["free"] + beats * -(-(cfg.replicas * cfg.mat_mults) // row) * row <= scratch_depth(cfg)


class MatCore(Core):
    """The MAT.CONV / MAT.LINEAR core (module docstring): tiles of output channels on the engine."""

    def elaborate(self, platform):
        m = Module()
        cfg, rec, ab = self.cfg, self.record, self.abits
        M, N, L = cfg.mat_lanes, cfg.mat_mults, cfg.replicas
        if N & (N - 1):
            raise ValueError(f"MatCore: mat_mults = {N} must be a power of two")
        logN = N.bit_length() - 1
        wrap = lambda v: v[:ab]                                   # noqa: E731  scratch addresses wrap
        g = lambda name: R.geom(rec, name)                        # noqa: E731
        x_op, o_op = R.operand(rec, 0), R.operand(rec, 1)

        m.submodules.eng = eng = MatEngine(cfg)
        ob = max(cfg.logit_bits, cfg.act_bits + 1)                # the first requant: codes or logits
        m.submodules.rq = rq = Requant(cfg, lanes=M, out_shape=signed(ob), tag_shape=unsigned(32))
        m.submodules.hs = hs = Hardswish(cfg, lanes=M, tag_shape=unsigned(32))

        # --- the operation (MAT.LINEAR: a 1x1 conv on a 1x1 map) ---------------------------------
        lin = R.opcode(rec) == LINEAR
        e_id = R.epilogue_id(rec)
        is_hs = e_id == encoding.EPILOGUE_IDS["hswish"]
        is_lg = e_id == encoding.EPILOGUE_IDS["logits"]
        one = lambda name: Mux(lin, 1, g(name))                   # noqa: E731
        H, W, OH, OW, k, stride, groups = (one(n) for n in ("h", "w", "oh", "ow", "k", "stride", "groups"))
        pad = Mux(lin, 0, g("pad"))
        cin, cout = g("cin"), g("cout")
        C = Signal(16)
        m.d.comb += C.eq(R.oc1(rec) - R.oc0(rec))
        oeb = o_op.elem_bytes
        base_ok = ((R.opcode(rec) == CONV) | lin) & (R.n_inputs(rec) == 1) & (R.n_outputs(rec) == 1)
        base_ok &= (e_id == encoding.EPILOGUE_IDS["requant"]) | is_hs | is_lg
        base_ok &= (R.oc0(rec) < R.oc1(rec)) & (R.oc1(rec) <= cout) & (x_op.bits <= cfg.act_bits)
        base_ok &= (o_op.bits >= 1) & (o_op.bits <= Mux(is_lg, cfg.logit_bits, cfg.act_bits))
        base_ok &= (g("w_bits") <= cfg.weight_bits) & (k >= 1) & (stride >= 1) & (groups >= 1)

        # set up once per operation (registered products, quotients by counting)
        plane, P, kk, K = Signal(32), Signal(32), Signal(16), Signal(32)
        cin_g, cout_g, n_grp = Signal(16), Signal(16), Signal(MAT_GROUPS_BITS + 1)
        acc_i, acc_o, acc_p = Signal(17), Signal(17), Signal(33)
        chunks = Signal(range(cfg.mat_wbuf_words + 2))
        d_row, d_ch, d_orow, poff0 = (Signal(signed(34), name=n) for n in ("d_row", "d_ch", "d_orow", "poff0"))
        gstep, pstep = Signal(32), Signal(32)
        # the tile: first channel (within the op), its group, lanes used
        ch, rem, lanes = Signal(16), Signal(16), Signal(range(M + 1))
        gbase, gbase_off = Signal(16), Signal(32)                 # the group's first input channel, its offset
        wtile, otile = Signal(32), Signal(32)

        # --- parameters: each field of the tile's lanes is a run of its table (requant's tables where
        # hswish has none), read a scratch row per cycle --------------------------------------------
        B = self.word_bytes
        offs = {e: R.param_offsets(m, rec, e, cfg) for e in EPILOGUES}
        fields = R.param_fields(cfg, "hswish", ["bias", "pre_M", "pre_n", "pre_z", "t3", "z_p", "M", "n", "z_out"])
        pmax = M * max(nb for _, nb, _ in fields)                 # the longest field run
        prun = RowRun(m, ab, self.rword, B, pmax)
        raw = {name: Signal(8 * M * nbytes, name=f"raw_{name}") for name, nbytes, _ in fields}
        field_run = []
        for name, nbytes, _ in fields:
            off = offs["hswish"][name]
            if name in offs["requant"]:
                off = Mux(is_hs, off, Mux(is_lg, offs["logits"].get(name, 0), offs["requant"][name]))
            field_run.append(prun.begin(wrap(self.p_off + off + ch * nbytes), M * nbytes))
        pf, pf_d = Signal(range(len(fields) + 1)), Signal(range(len(fields) + 1))
        with m.If(prun.active):
            m.d.sync += pf_d.eq(pf)
        for j, (en, byte) in enumerate(prun.landing(pmax)):
            with m.If(en):
                with m.Switch(pf_d):
                    for f, (name, nbytes, _) in enumerate(fields):
                        if j < M * nbytes:
                            with m.Case(f):
                                m.d.sync += raw[name].word_select(j, 8).eq(byte)
        zx_off = Mux(is_hs, offs["hswish"]["z_x"], Mux(is_lg, offs["logits"]["z_x"], offs["requant"]["z_x"]))
        zx_bytes = R.param_fields(cfg, "requant", ["z_x"])[0][1]
        bias = Signal(data.ArrayLayout(signed(cfg.acc_bits), M))
        rq_row, hs_row = Signal(rq.prm_layout["row"].shape), Signal(hs.prm_layout["row"].shape)
        m.d.comb += [rq.prm.payload.row.eq(rq_row), hs.prm.payload.row.eq(hs_row),
                     rq.prm.payload.group.eq(0), hs.prm.payload.group.eq(0)]

        def latch_lanes():
            """Every lane's fetched values (0 for a lane past the tile) into the rows and the biases."""
            for i in range(M):
                v = {name: raw[name].word_select(i, 8 * nb).as_signed() if sgn else raw[name].word_select(i, 8 * nb)
                     for name, nb, sgn in fields}
                val = lambda x: Mux(i < lanes, x, 0)              # noqa: E731
                m.d.sync += [bias[i].eq(val(v["bias"])),
                             rq_row.m[i].eq(val(Mux(is_hs, v["pre_M"], v["M"]))),
                             rq_row.n[i].eq(val(Mux(is_hs, v["pre_n"], v["n"]))),
                             rq_row.z[i].eq(val(Mux(is_hs, v["pre_z"], Mux(is_lg, 0, v["z_out"])))),
                             hs_row.m[i].eq(val(v["M"])), hs_row.n[i].eq(val(v["n"])), hs_row.z[i].eq(val(v["z_out"])),
                             hs_row.zp[i].eq(val(v["z_p"])), hs_row.t3[i].eq(val(v["t3"]))]

        # --- gather: beat bytes through the scratch read port (address registered, byte 2 later) --
        E = L * N
        beat = Signal(8 * E)
        issue, i_addr, i_zero = Signal(), Signal(ab), Signal()
        i_idx = Signal(range(E))
        v1, z1, v2, z2 = Signal(), Signal(), Signal(), Signal()
        a1 = Signal(ab)
        idx1, idx2 = Signal(range(E)), Signal(range(E))
        m.d.sync += [v1.eq(issue), a1.eq(i_addr), z1.eq(i_zero), idx1.eq(i_idx), v2.eq(v1), z2.eq(z1), idx2.eq(idx1)]
        with m.If(v2):
            m.d.sync += beat.word_select(idx2, 8).eq(Mux(z2, 0, self.rdata))
        e = Signal(range(E + 2))                                  # element issued (then 2 to land)
        ln, nn = Signal(range(L + 1)), Signal(range(N + 1))       # beat position: replica, tap
        m.d.comb += i_idx.eq(Cat(nn[:logN], ln) if logN else ln)

        # weights: lane l, taps c N .. c N + N - 1 are a run of N bytes from wtile + l K + c N, read a
        # scratch row per cycle (wrun.ptr: the lane's run; the next lane's is K on)
        c = Signal(range(cfg.mat_wbuf_words + 1))
        tw0 = Signal(32)
        m.d.comb += tw0.eq(c << logN)
        wrun = RowRun(m, ab, self.rword, B, N)
        wln, wl_d = Signal(range(M + 1)), Signal(range(M + 1))   # the lane being read, the one in flight
        with m.If(wrun.active):
            m.d.sync += wl_d.eq(wln)
        # the weight beat, and its view with the row in flight in place: the engine takes a beat in the
        # cycle its last row lands
        wbeat, wview = Signal(8 * M * N), Signal(8 * M * N)
        m.d.comb += wview.eq(wbeat)
        m.d.sync += wbeat.eq(wview)
        for n, (en, byte) in enumerate(wrun.landing(N)):
            for lane in range(M):
                with m.If(en & (wl_d == lane)):
                    keep = (lane < lanes) & (tw0 + n < K)
                    m.d.comb += wview.word_select(lane * N + n, 8).eq(Mux(keep, byte, 0))
        for j in range(M * N):
            m.d.comb += eng.w.payload[j].eq(wview.word_select(j, 8).as_signed())

        # inputs: a tap cursor T (tap t, input channel ci, ky, kx, toff = ci plane + ky W + kx) with
        # its copy T0 at the chunk's first tap, a pixel cursor P (p, oy, ox, iy0 = oy stride - pad,
        # ix0, poff = iy0 W + ix0) with its copy P0 at the pixel group's first pixel
        tcur = dict(t=Signal(32), ci=Signal(16), ky=Signal(8), kx=Signal(8), toff=Signal(32))
        t0 = {n: Signal(s.shape(), name=f"{n}_0") for n, s in tcur.items()}
        pcur = dict(p=Signal(32), oy=Signal(16), ox=Signal(16), iy0=Signal(signed(18)), ix0=Signal(signed(18)),
                    poff=Signal(signed(34)))
        p0 = {n: Signal(s.shape(), name=f"{n}_0") for n, s in pcur.items()}
        tap_first = dict(t=0, ci=gbase, ky=0, kx=0, toff=gbase_off)
        pix_first = dict(p=0, oy=0, ox=0, iy0=-pad, ix0=-pad, poff=poff0)

        def tap_next(cur):
            kx_end, ky_end = cur["kx"] == k - 1, cur["ky"] == k - 1
            return dict(t=cur["t"] + 1, kx=Mux(kx_end, 0, cur["kx"] + 1),
                        ky=Mux(kx_end, Mux(ky_end, 0, cur["ky"] + 1), cur["ky"]),
                        ci=Mux(kx_end & ky_end, cur["ci"] + 1, cur["ci"]),
                        toff=cur["toff"] + Mux(kx_end, Mux(ky_end, d_ch, d_row), 1))

        def pix_next(cur):
            end = cur["ox"] == OW - 1
            return dict(p=cur["p"] + 1, ox=Mux(end, 0, cur["ox"] + 1), oy=Mux(end, cur["oy"] + 1, cur["oy"]),
                        ix0=Mux(end, -pad, cur["ix0"] + stride), iy0=Mux(end, cur["iy0"] + stride, cur["iy0"]),
                        poff=cur["poff"] + Mux(end, d_orow, stride))

        def put(dst, src):
            m.d.sync += [dst[n].eq(src[n]) for n in dst]

        iy, ix = Signal(signed(19)), Signal(signed(19))
        m.d.comb += [iy.eq(pcur["iy0"] + tcur["ky"]), ix.eq(pcur["ix0"] + tcur["kx"])]
        inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        x_addr = Mux(inside, self.in_off[0] + tcur["toff"] + pcur["poff"],
                     self.p_off + zx_off + tcur["ci"] * zx_bytes)
        x_zero = (tcur["t"] >= K) | (pcur["p"] >= P)
        xc, xg = Signal(range(cfg.mat_wbuf_words + 1)), Signal(MAT_GROUPS_BITS + 1)   # chunk, pixel group
        # --- staged inputs: the operation's input beats gathered once, in beat order, past the regions --
        # (a tile of M channels re-reads every input beat; gathering each of them once per conv group
        # and streaming them to every tile as whole scratch rows saves ceil(cout_g / M) - 1 gathers)
        WB = -(-(L * N) // B)                                     # scratch rows per input beat
        BW = WB * B
        depth = scratch_depth(cfg)
        nbeats, xneed = Signal(MAT_GROUPS_BITS + 1 + 16), Signal(48)
        staged, prepped, pre = Signal(), Signal(), Signal()
        prep_gbase = Signal(16)
        xw = Signal(32)                                           # the beat being written (pre-pass)
        stream = Signal()                                         # X_STREAM: inputs from the staged beats
        sa, pa = Signal(32), Signal(32)                           # the row to read now, the one read before
        siw, rw = Signal(range(WB + 1)), Signal(range(WB + 1))    # its index in the beat, the one read before
        sib = Signal(MAT_GROUPS_BITS + 1 + 16)                    # beats whose rows have all been read
        rv = Signal()                                             # a row read the cycle before
        sbuf = Signal(8 * B * max(WB - 1, 1))
        xsrc = Signal(8 * L * N)
        last_row = rv & (rw == WB - 1)
        with m.If(stream):
            m.d.comb += xsrc.eq(Cat(sbuf[:8 * B * (WB - 1)], self.rword)[:8 * L * N] if WB > 1
                                else self.rword[:8 * L * N])
        with m.Else():
            m.d.comb += xsrc.eq(beat[:8 * L * N])
        for j in range(L * N):
            m.d.comb += eng.x.payload[j].eq(xsrc.word_select(j, 8))
        m.d.comb += [eng.cmd.payload.chunks.eq(chunks), eng.cmd.payload.groups.eq(n_grp),
                     eng.cmd.payload.load.eq(1), eng.cmd.payload.bias.eq(bias)]

        # --- results: engine beats pixel by pixel into the epilogue, codes lane by lane out -------
        sl, opx = Signal(range(L + 1)), Signal(32)                # replica within the beat, its pixel
        pix = Signal(32)
        m.d.comb += pix.eq(opx + sl)
        keep = pix < P
        for j in range(M):
            m.d.comb += rq.i.payload.acc[j].eq(eng.o.payload.as_value().word_select(sl * M + j, cfg.acc_bits)
                                               .as_signed())
        m.d.comb += [rq.i.payload.group.eq(0), rq.i.payload.tag.eq(pix), rq.i.valid.eq(eng.o.valid & keep)]
        with m.If(eng.o.valid & (rq.i.ready | ~keep)):
            with m.If(sl == L - 1):
                m.d.comb += eng.o.ready.eq(1)
                m.d.sync += [sl.eq(0), opx.eq(opx + L)]
            with m.Else():
                m.d.sync += sl.eq(sl + 1)
        lim = (Const(1, 32) << (o_op.bits - 1)[:5])[:ob]
        m.d.comb += [rq.lo.eq(Mux(is_hs, g("pre_lo"), Mux(is_lg, -lim, g("lo")))),
                     rq.hi.eq(Mux(is_hs, g("pre_hi"), Mux(is_lg, lim - 1, g("hi")))),
                     hs.lo.eq(g("lo")), hs.hi.eq(g("hi")),
                     hs.i.payload.group.eq(0), hs.i.payload.tag.eq(rq.o.payload.tag)]
        for j in range(M):
            m.d.comb += hs.i.payload.p[j].eq(rq.o.payload.q[j])
        res_valid, res_tag = Signal(), Signal(32)
        res_q = Signal(data.ArrayLayout(signed(ob), M))
        res_ready = Signal()
        with m.If(is_hs):
            m.d.comb += [hs.i.valid.eq(rq.o.valid), rq.o.ready.eq(hs.i.ready), res_valid.eq(hs.o.valid),
                         res_tag.eq(hs.o.payload.tag), hs.o.ready.eq(res_ready)]
            for j in range(M):
                m.d.comb += res_q[j].eq(hs.o.payload.q[j])
        with m.Else():
            m.d.comb += [res_valid.eq(rq.o.valid), res_tag.eq(rq.o.payload.tag), rq.o.ready.eq(res_ready),
                         res_q.eq(rq.o.payload.q)]
        # results are collected a pixel group (L pixels) at a time, two groups deep; a full group is
        # written lane by lane, each lane's L codes one run of consecutive bytes (RowWrite)
        cbuf = [Signal(data.ArrayLayout(signed(ob), L * M), name=f"cbuf{i}") for i in range(2)]
        cfull = [Signal(name=f"cfull{i}") for i in range(2)]
        cfirst = [Signal(32, name=f"cfirst{i}") for i in range(2)]      # the group's first pixel
        ccount = [Signal(range(L + 1), name=f"ccount{i}") for i in range(2)]
        cb, cl = Signal(), Signal(range(L + 1))                   # the bank collecting, its next slot
        wbk = Signal()                                            # the bank being written
        wl = Signal(range(M + 1))                                 # its lane being written
        lofs = Signal(32)                                         # wl * pstep
        tile_done = Signal()
        owr = RowWrite(m, ab, B, 2 * L)
        with m.Switch(cb):
            for i in range(2):
                with m.Case(i):
                    m.d.comb += res_ready.eq(~cfull[i])
        with m.If(res_valid & res_ready):
            last_px = (cl == L - 1) | (res_tag == P - 1)
            for i in range(2):
                with m.If(cb == i):
                    for l in range(L):
                        with m.If(cl == l):
                            m.d.sync += [cbuf[i][l * M + j].eq(res_q[j]) for j in range(M)]
                    with m.If(cl == 0):
                        m.d.sync += cfirst[i].eq(res_tag)
                    with m.If(last_px):
                        m.d.sync += [cfull[i].eq(1), ccount[i].eq(cl + 1)]
            m.d.sync += cl.eq(Mux(last_px, 0, cl + 1))
            with m.If(last_px):
                m.d.sync += cb.eq(~cb)

        def begin_lane(i, lane, lofs_v):
            """Bank i's codes of ``lane`` as one run (pixel by pixel, little-endian ``oeb`` bytes each)."""
            codes = [cbuf[i][l * M + lane] for l in range(L)]
            run = Mux(oeb == 2, Cat(*(c[:16] for c in codes)), Cat(*(c[:8] for c in codes)))
            return owr.begin(wrap(otile + lofs_v + cfirst[i] * oeb), ccount[i] * oeb, run)

        wfull = Mux(wbk, cfull[1], cfull[0])
        wstart = Signal()                                         # a lane's run is being written
        m.d.comb += [owr.active.eq(wstart), self.waddr.eq(owr.addr), self.wrow.eq(owr.row),
                     self.wmask.eq(Mux(wstart, owr.mask, 0))]
        with m.If(wfull & ~wstart):                               # the group's first lane
            for i in range(2):
                with m.If(wbk == i):
                    m.d.sync += begin_lane(i, 0, 0)
            m.d.sync += [wstart.eq(1), wl.eq(0), lofs.eq(0)]
        with m.If(wstart & owr.end):
            with m.If(wl == lanes - 1):                           # the group is written
                m.d.sync += [wstart.eq(0), wbk.eq(~wbk), wl.eq(0), lofs.eq(0)]
                for i in range(2):
                    with m.If(wbk == i):
                        m.d.sync += cfull[i].eq(0)
                        with m.If(cfirst[i] + ccount[i] == P):
                            m.d.sync += tile_done.eq(1)
                        with m.If(cfull[1 - i]):                  # the other group is waiting: its first lane
                            m.d.sync += [*begin_lane(1 - i, 0, 0), wstart.eq(1)]
            with m.Else():                                        # the next lane, at once
                for i in range(2):
                    with m.If(wbk == i):
                        m.d.sync += begin_lane(i, wl + 1, lofs + pstep)
                m.d.sync += [wl.eq(wl + 1), lofs.eq(lofs + pstep)]
        with m.If(pre):                                           # the pre-pass writes the gathered bytes
            m.d.comb += [self.waddr.eq(wrap(xw + idx2)), self.wdata.eq(Mux(z2, 0, self.rdata)), self.wen.eq(v2)]

        # --- the pointwise pre-pass: a transpose ------------------------------------------------------
        # (1x1, stride 1, unpadded: a beat's taps are N input channels, its pixels L consecutive ones)
        # per chunk and block of PB pixels: N runs of PB bytes (channel n's pixels) into tbuf, then the
        # block's PB / L beats, each a fixed permutation of tbuf, written on whole rows
        PB = L * max(1, B // L)
        GB = PB // L                                              # beats per block
        pw_pre = ~lin & (k == 1) & (stride == 1) & (pad == 0)   # (a linear: one pixel, the gather is cheaper)
        trun = RowRun(m, ab, self.rword, B, PB)
        tbuf = Signal(data.ArrayLayout(unsigned(8), N * PB))
        tn, tn_d = Signal(range(N + 1)), Signal(range(N + 1))     # channel being read, the one in flight
        tc = Signal(range(cfg.mat_wbuf_words + 1))                # chunk
        tg = Signal(MAT_GROUPS_BITS + 1)                          # pixel group of the beat being written
        ti, tr = Signal(range(GB + 1)), Signal(range(WB + 1))     # beat within the block, row within the beat
        tcb, tblk = Signal(32), Signal(32)                        # channel tc N's first byte, the block's
        pbeat, cstride, nplane = Signal(32), Signal(32), Signal(32)
        with m.If(trun.active):
            m.d.sync += tn_d.eq(tn)
        for j, (en, byte) in enumerate(trun.landing(PB)):
            for n in range(N):
                with m.If(en & (tn_d == n)):
                    m.d.sync += tbuf[n * PB + j].eq(byte)
        tbeat = Signal(8 * BW)
        with m.Switch(ti):
            for i in range(GB):
                with m.Case(i):
                    m.d.comb += tbeat.eq(Cat(*(Mux(((tc << logN) + n < K) & (tg * L + l < P), tbuf[n * PB + i * L + l], 0)
                                               for l in range(L) for n in range(N))))

        def next_beat():
            """The next input beat (chunk, then pixel group); true at the tile's last one."""
            with m.If(xc == chunks - 1):
                m.d.sync += [xc.eq(0), xg.eq(xg + 1)]
            with m.Else():
                m.d.sync += xc.eq(xc + 1)
            return (xc == chunks - 1) & (xg == n_grp - 1)

        def first_beat():
            put(tcur, tap_first)
            put(t0, tap_first)
            put(pcur, pix_first)
            put(p0, pix_first)
            m.d.sync += [xc.eq(0), xg.eq(0), e.eq(0), ln.eq(0), nn.eq(0)]

        # --- the sequence ----------------------------------------------------------------------
        with m.FSM():
            with checked_start(m, self, base_ok, "DIVIDE"):
                m.d.sync += [plane.eq(x_op.plane), P.eq(OH * OW), kk.eq(k * k), pstep.eq(o_op.plane * oeb),
                             d_row.eq(W - (k - 1)), d_ch.eq(x_op.plane - (k - 1) * W - (k - 1)),
                             d_orow.eq(stride * W - (OW - 1) * stride), poff0.eq(-(pad * W) - pad),
                             acc_i.eq(0), acc_o.eq(0), acc_p.eq(0), cin_g.eq(0), cout_g.eq(0), n_grp.eq(0)]
            with m.State("DIVIDE"):                               # cin / groups, cout / groups, ceil(P / L)
                m.d.comb += self.busy.eq(1)
                with m.If(acc_i < cin):
                    m.d.sync += [acc_i.eq(acc_i + groups), cin_g.eq(cin_g + 1)]
                with m.If(acc_o < cout):
                    m.d.sync += [acc_o.eq(acc_o + groups), cout_g.eq(cout_g + 1)]
                with m.If(acc_p < P):
                    m.d.sync += [acc_p.eq(acc_p + L), n_grp.eq(n_grp + 1)]
                with m.If((acc_i >= cin) & (acc_o >= cout) & (acc_p >= P)):
                    m.d.sync += [K.eq(cin_g * kk), gstep.eq(cin_g * plane), rem.eq(R.oc0(rec)), ch.eq(0),
                                 gbase.eq(0), gbase_off.eq(0)]
                    m.next = "LOCATE"
                    with m.If((acc_i != cin) | (acc_o != cout) | (n_grp >= 1 << MAT_GROUPS_BITS) | (n_grp == 0)):
                        m.d.comb += [self.error.eq(1), self.error_code.eq(ErrorCode.BAD_GEOMETRY)]
                        m.next = "IDLE"
            with m.State("LOCATE"):                               # oc0's group: oc0 / cout_g
                m.d.comb += self.busy.eq(1)
                m.d.sync += chunks.eq((K + N - 1) >> logN)
                with m.If(rem >= cout_g):
                    m.d.sync += [rem.eq(rem - cout_g), gbase.eq(gbase + cin_g), gbase_off.eq(gbase_off + gstep)]
                with m.Else():
                    m.next = "FIT"
            with m.State("FIT"):                                  # do the staged beats fit the scratch?
                m.d.comb += self.busy.eq(1)
                m.d.sync += nbeats.eq(n_grp * chunks)
                m.next = "FIT_NEED"
            with m.State("FIT_NEED"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [xneed.eq(nbeats * BW), prepped.eq(0), cstride.eq(chunks * BW), nplane.eq(plane << logN)]
                m.next = "FIT_CHECK"
            with m.State("FIT_CHECK"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += staged.eq(self.free_off + xneed <= depth)
                m.next = "TILE"
            with m.State("TILE"):
                m.d.comb += self.busy.eq(1)
                to_stage = staged & (~prepped | (prep_gbase != gbase))
                left, in_grp = C - ch, cout_g - rem
                n_l = Mux((left < M) & (left < in_grp), left, Mux(in_grp < M, in_grp, M))
                with m.If((chunks > cfg.mat_wbuf_words) | (chunks == 0)):
                    m.d.comb += [self.error.eq(1), self.error_code.eq(ErrorCode.BAD_GEOMETRY)]
                    m.next = "IDLE"
                with m.Elif(ch >= C):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
                with m.Elif(to_stage & pw_pre):                   # the group's beats, once: a transpose
                    m.d.sync += [tc.eq(0), tg.eq(0), tn.eq(0), ti.eq(0), tr.eq(0), pbeat.eq(self.free_off),
                                 tcb.eq(self.in_off[0] + gbase_off), tblk.eq(self.in_off[0] + gbase_off),
                                 *trun.begin(wrap(self.in_off[0] + gbase_off), PB)]
                    m.next = "PT_READ"
                with m.Elif(to_stage):                            # ... or gathered byte by byte
                    first_beat()
                    m.d.sync += [pre.eq(1), xw.eq(self.free_off)]
                    m.next = "X_GATHER"
                with m.Else():
                    m.d.sync += [lanes.eq(n_l), pf.eq(0), *field_run[0], wtile.eq(self.w_off + ch * K),
                                 otile.eq(self.out_off[0] + (R.oc0(rec) + ch) * pstep), tile_done.eq(0),
                                 sl.eq(0), opx.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):                                # the tile's parameters, field pf
                m.d.comb += [self.busy.eq(1), prun.active.eq(1), self.raddr.eq(prun.addr)]
                with m.If(prun.end):
                    m.d.sync += pf.eq(pf + 1)
                    with m.Switch(pf):
                        for f in range(len(fields) - 1):
                            with m.Case(f):
                                m.d.sync += field_run[f + 1]
                    with m.If(pf == len(fields) - 1):
                        m.next = "FETCH_WAIT"
            with m.State("FETCH_WAIT"):                           # the last row lands
                m.d.comb += self.busy.eq(1)
                m.next = "LATCH"
            with m.State("LATCH"):
                m.d.comb += self.busy.eq(1)
                latch_lanes()
                m.next = "ROW"
            with m.State("ROW"):                                  # the tile's table rows (always ready)
                m.d.comb += [self.busy.eq(1), rq.prm.valid.eq(1), hs.prm.valid.eq(1)]
                m.next = "CMD"
            with m.State("CMD"):
                m.d.comb += [self.busy.eq(1), eng.cmd.valid.eq(1)]
                with m.If(eng.cmd.ready):
                    m.d.sync += [c.eq(0), wln.eq(0), *wrun.begin(wtile, N)]
                    m.next = "W_GATHER"
            with m.State("W_GATHER"):                             # weight word c: lane wln's run
                m.d.comb += [self.busy.eq(1), wrun.active.eq(wln < M), self.raddr.eq(wrun.addr)]
                with m.If(wrun.active & wrun.end):
                    m.d.sync += [wln.eq(wln + 1), *wrun.begin(wrap(wrun.ptr + K), N)]
                with m.If(wrun.active & wrun.end & (wln == M - 1)):    # the last lane's last row
                    m.next = "W_BEAT"
            with m.State("W_BEAT"):
                m.d.comb += [self.busy.eq(1), eng.w.valid.eq(1)]
                with m.If(eng.w.ready):
                    m.d.sync += [c.eq(c + 1), wln.eq(0), *wrun.begin(wrap(wtile + ((c + 1) << logN)), N)]
                    with m.If(c == chunks - 1):
                        first_beat()
                        with m.If(staged):
                            m.d.sync += [stream.eq(1), sa.eq(self.free_off), siw.eq(0), sib.eq(0), rv.eq(0)]
                            m.next = "X_STREAM"
                        with m.Else():
                            m.next = "X_GATHER"
                    with m.Else():
                        m.next = "W_GATHER"
            with m.State("PT_READ"):                              # channel tc N + tn of the block
                m.d.comb += [self.busy.eq(1), trun.active.eq(1), self.raddr.eq(trun.addr)]
                with m.If(trun.end):
                    m.d.sync += [tn.eq(tn + 1), *trun.begin(wrap(trun.ptr + plane), PB)]    # the next channel
                    with m.If(tn == N - 1):
                        m.next = "PT_LAND"
            with m.State("PT_LAND"):                              # the last row lands in tbuf
                m.d.comb += self.busy.eq(1)
                m.next = "PT_WRITE"
            with m.State("PT_WRITE"):                             # row tr of beat ti of the block
                m.d.comb += [self.busy.eq(1), self.waddr.eq(wrap(pbeat + tr * B)),
                             self.wrow.eq(tbeat.word_select(tr, 8 * B)), self.wmask.eq((1 << B) - 1)]
                m.d.sync += tr.eq(tr + 1)
                with m.If(tr == WB - 1):
                    m.d.sync += [tr.eq(0), ti.eq(ti + 1), tg.eq(tg + 1), pbeat.eq(pbeat + cstride)]
                    block_done = (ti == GB - 1) | (tg == n_grp - 1)
                    with m.If(block_done):
                        m.d.sync += [ti.eq(0), tn.eq(0)]
                        with m.If(tg == n_grp - 1):               # the chunk's last group: the next chunk
                            nxt = tcb + nplane                    # the next chunk's first channel
                            m.d.sync += [tc.eq(tc + 1), tg.eq(0), pbeat.eq(self.free_off + (tc + 1) * BW), tcb.eq(nxt),
                                         tblk.eq(nxt), *trun.begin(wrap(nxt), PB)]
                            with m.If(tc == chunks - 1):
                                m.d.sync += [prepped.eq(1), prep_gbase.eq(gbase)]
                                m.next = "TILE"
                            with m.Else():
                                m.next = "PT_READ"
                        with m.Else():                            # the next block of the chunk
                            m.d.sync += [tblk.eq(tblk + PB), *trun.begin(wrap(tblk + PB), PB)]
                            m.next = "PT_READ"
            with m.State("X_GATHER"):                             # chunk xc of pixel group xg
                m.d.comb += [self.busy.eq(1), self.raddr.eq(a1)]
                m.d.comb += [issue.eq(e < L * N), i_addr.eq(wrap(x_addr)), i_zero.eq(x_zero)]
                m.d.sync += e.eq(e + 1)
                with m.If(e < L * N):
                    with m.If(nn != N - 1):
                        m.d.sync += nn.eq(nn + 1)
                        put(tcur, tap_next(tcur))
                    with m.Elif(ln != L - 1):                     # the next pixel, the chunk's taps again
                        m.d.sync += [nn.eq(0), ln.eq(ln + 1)]
                        put(tcur, t0)
                        put(pcur, pix_next(pcur))
                    with m.Elif(xc == chunks - 1):                # the next pixel group, from tap 0
                        m.d.sync += [nn.eq(0), ln.eq(0)]
                        put(tcur, tap_first)
                        put(t0, tap_first)
                        put(pcur, pix_next(pcur))
                        put(p0, pix_next(pcur))
                    with m.Else():                                # the next chunk, the group's pixels again
                        m.d.sync += [nn.eq(0), ln.eq(0)]
                        put(tcur, tap_next(tcur))
                        put(t0, tap_next(tcur))
                        put(pcur, p0)
                with m.If(e == L * N + 1):
                    with m.If(pre):                               # the beat's last byte is being written
                        m.d.sync += [e.eq(0), xw.eq(xw + BW)]
                        with m.If(next_beat()):
                            m.d.sync += [pre.eq(0), prepped.eq(1), prep_gbase.eq(gbase)]
                            m.next = "TILE"
                    with m.Else():
                        m.next = "X_BEAT"
            with m.State("X_BEAT"):
                m.d.comb += [self.busy.eq(1), eng.x.valid.eq(1)]
                with m.If(eng.x.ready):
                    m.d.sync += e.eq(0)
                    with m.If(next_beat()):
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "X_GATHER"
            with m.State("X_STREAM"):
                # a row per cycle: the beat's last row goes to the engine straight from the read port
                # (the ones before it from sbuf); while the engine holds a beat its last row is read again
                m.d.comb += [self.busy.eq(1), eng.x.valid.eq(last_row)]
                with m.If(last_row & ~eng.x.ready):
                    m.d.comb += self.raddr.eq(wrap(pa))
                with m.Else():
                    more = sib < nbeats
                    m.d.comb += self.raddr.eq(wrap(sa))
                    m.d.sync += [rv.eq(more), rw.eq(siw), pa.eq(sa)]
                    with m.If(more):
                        m.d.sync += sa.eq(sa + B)
                        with m.If(siw == WB - 1):
                            m.d.sync += [siw.eq(0), sib.eq(sib + 1)]
                        with m.Else():
                            m.d.sync += siw.eq(siw + 1)
                    if WB > 1:
                        with m.If(rv & (rw != WB - 1)):
                            with m.Switch(rw):
                                for i in range(WB - 1):
                                    with m.Case(i):
                                        m.d.sync += sbuf.word_select(i, 8 * B).eq(self.rword)
                    with m.If(last_row):                          # the engine took the beat
                        with m.If(next_beat()):
                            m.d.sync += stream.eq(0)
                            m.next = "DRAIN"
            with m.State("DRAIN"):                                # the tile's last code written
                m.d.comb += self.busy.eq(1)
                with m.If(tile_done & ~eng.o.valid):          # (and the last engine beat let go)
                    m.d.sync += [ch.eq(ch + lanes), rem.eq(rem + lanes)]
                    with m.If(rem + lanes == cout_g):
                        m.d.sync += [rem.eq(0), gbase.eq(gbase + cin_g), gbase_off.eq(gbase_off + gstep)]
                    m.next = "TILE"
        return m


def mat_executor(cfg) -> StagedExecutor:
    return StagedExecutor(cfg, MatCore)
