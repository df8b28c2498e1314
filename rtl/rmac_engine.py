"""R-MAC engine: an S x T array of multiply-accumulate PEs for depthwise convolution (Trio-ViT's S x T x L).

PE ``(s, t)`` of replica ``l`` owns one output: pixel ``s`` of an output-row
segment of ``S = rmac_rows`` pixels, channel ``t`` of ``T = rmac_cols``
channels; replica ``l`` works on output row ``oy + l`` with the same weights.
Each PE accumulates over the kernel taps, one tap per cycle (output
stationary), so the array does ``L*S*T`` MACs per cycle.

Depthwise mode (``pw = 0``; kernel ``kh x kw`` up to 5x5, stride 1 or 2,
padding up to 2): for every segment the feeder sends the ``kh`` input row
segments the window needs, one beat per row, each ``W_SEG = (S-1)*2 + 5``
positions x ``T`` channels (position ``j`` is input column
``x0*stride - pad + j``). The engine computes from its own row/column counters
which positions lie outside the ``h x w`` input and substitutes the channel's
zero-point code ``z[t]`` (SPEC 0: padding uses the code of real 0), so the
feeder's values there are ignored (a flag per position beside the row
register; the code is substituted as a tap reads the position). A row beat is
loaded into a shift register; for ``kx = 0 .. kw-1`` PE ``s`` reads position
``s*stride`` and the register shifts by one: each input row is fetched once per
segment and reused across the ``kw`` taps and the ``S`` pixels.

Multipliers (rtl/dsp_pack.py): pixels ``2i`` and ``2i+1`` of a replica meet
channel ``t``'s weight in the same cycle, so each such pair of PEs shares one
``*`` on a packed operand (one DSP48E2): ``ceil(S/2)*T*L`` multipliers (an odd
``S`` leaves its last pixel's PEs with plain ones; activations wider than 8 bits
do not pack). Pixels rather than replicas are paired because ``S`` is even in
every preset (tiny has one replica) and holds for any replica count the DSP
budget picks. The high PE accumulates ``P >> 18`` with the low product's sign as
its accumulator's carry-in (the exact correction, no extra adder or cycle).

Pointwise mode (``pw = 1``, usable when the MAT engine is busy): ``kw = 1``,
``kh = K`` taps (input channels); beat ``k`` carries pixel ``s``'s code of
input channel ``k`` at position ``s`` channel 0, broadcast to the ``T`` PEs of
the row, which hold ``T`` output channels. No padding.

Ports (``amaranth.lib.stream``, element 0 at bit 0):

* ``cmd``: :meth:`RmacEngine.cmd_layout`: ``kh``, ``kw``, ``stride``, ``pad``, ``pw``,
  ``load``, ``h``/``w`` (input size), ``rows`` (output row groups of L rows;
  pointwise: pixel groups of L*S), ``xsegs`` (segments per output row),
  ``z[T]``, ``bias[T]``. (Unchanged by double buffering.)
* ``wt``: ``kh*kw`` beats of ``T`` int8 weights (tap ``ky*kw + kx``), when ``load``.
* ``x``: ``rows * xsegs * kh`` beats of ``L*W_SEG*T`` codes, element
  ``(l*W_SEG + j)*T + t``; order: row group, segment, ky.
* ``o``: ``rows * xsegs`` beats of ``L*S*T`` int32, element ``(l*S + s)*T + t``.
* ``busy``: a command has been accepted and its last result is not yet handed over.

Double-buffered weights, overlapped commands (as rtl/mat_engine.py): two
weight buffers (the halves of one memory) and a one-deep slot for the *next*
command beside the *current* (issuing) one. A ``cmd`` is accepted whenever
the slot is free (in the cycle the command before it starts, at the
earliest); with ``load`` its ``wt`` beats go into the buffer the current
command does not read while the current command issues its taps. The next
command becomes current once its weights are in (at the earliest in the cycle
of its last ``wt`` beat) and the current one issues its last tap; in that
cycle it takes its first row beat, its positions outside the input marked with
its own ``pad`` / ``h`` / ``w`` / ``stride`` / ``pw``, so its first tap follows
the previous command's last tap at once while the previous command's products
drain. ``z``, ``stride`` and ``pw`` act when a tap is issued (the issuing
command's); the command's ``bias`` travels down the pipeline with the taps.
``load = 0`` reads the buffer loaded last in command order
(rtl/rmac_schedule.py ``max_rows`` cuts a pointwise channel group into such
commands).

Cycle behaviour (no stalls: ``x`` always valid, ``o`` always ready, ``wt`` always
available; from the first ``cmd`` handshake to the last ``o`` handshake,
inclusive; arch/cost.py's ``rmac_cmds_cycles`` / ``back_to_back``; checked by
tb/test_rmac_engine.py, recorded in tb/baselines/cycles/rmac_engine/), commands
``i = 0 .. n-1`` back to back::

    I[i] = rows * xsegs * kh * kw       (taps, one per cycle)
    W[i] = load * kh * kw               (weight beats), W[n] = 0
    cycles = 1 + max(1, W[0]) + sum_i max(I[i], W[i+1]) + 3

The next row beat is taken in the cycle of a row's last tap, so taps issue
back to back within and across commands; ``+3`` is the PE input / multiply /
accumulate-output pipeline behind the last tap. A command alone that loads:
``1 + kh*kw + rows*xsegs*kh*kw + 3`` (one cycle less than before double
buffering: its first row beat is taken with its last weight beat); one that
reuses its weights: ``2 + rows*xsegs*kh*kw + 3`` (as before). The
commands of one layer have the same ``kh*kw <= I``: ``n`` of them take
``1 + kh*kw + n*I + 3``. Useful MACs: ``Ho*Wo*C*kh*kw`` for a depthwise
layer, ``ideal = MACs / (L*S*T)``; the gap to ideal is the padding of the last
segment / row group / channel group.
"""
from __future__ import annotations

import operator
from functools import reduce

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from arch.config import AccelConfig

from arch import cost
from rtl.dsp_pack import PackedMul, add_carry, packable
from rtl.wbuf_read import prefetched_word
from arch.timing import KMAX, PADMAX, SMAX  # noqa: F401  (SMAX re-exported for the feeders)

COORD_BITS = 14  # signed input coordinates (maps up to 8191 pixels a side)


def _bits_for(n: int) -> int:
    return max(1, ceil_log2(n + 1))


class RmacEngine(wiring.Component):
    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        self.S, self.T, self.L = cfg.rmac_rows, cfg.rmac_cols, cfg.replicas
        self.wseg = cost.rmac_segment_width(cfg)
        self.depth = self.buffer_depth(cfg)
        # pixels (2i, 2i+1), i < pairs, of each replica share each multiplier (rtl/dsp_pack.py);
        # an odd S leaves the last pixel with its own multipliers
        self.pairs = self.S // 2 if packable(cfg.act_bits, cfg.weight_bits) else 0
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout(cfg))),
            "wt": In(stream.Signature(data.ArrayLayout(signed(cfg.weight_bits), self.T))),
            "x": In(stream.Signature(data.ArrayLayout(unsigned(cfg.act_bits), self.L * self.wseg * self.T))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(cfg.acc_bits), self.L * self.S * self.T))),
            "busy": Out(1),
        })

    @staticmethod
    def buffer_depth(cfg: AccelConfig) -> int:
        return cost.rmac_buffer_depth(cfg)

    @staticmethod
    def w_seg(cfg: AccelConfig) -> int:
        return cost.rmac_segment_width(cfg)

    @classmethod
    def cmd_layout(cls, cfg: AccelConfig) -> data.StructLayout:
        depth = cls.buffer_depth(cfg)
        return data.StructLayout({
            "kh": unsigned(_bits_for(depth)),
            "kw": unsigned(_bits_for(KMAX)),
            "stride": unsigned(2),
            "pad": unsigned(2),
            "pw": unsigned(1),
            "load": unsigned(1),
            "h": unsigned(COORD_BITS - 1),
            "w": unsigned(COORD_BITS - 1),
            "rows": unsigned(16),
            "xsegs": unsigned(12),
            "z": data.ArrayLayout(unsigned(cfg.act_bits), cfg.rmac_cols),
            "bias": data.ArrayLayout(signed(cfg.acc_bits), cfg.rmac_cols),
        })

    @staticmethod
    def cmd_cycles(kh: int, kw: int, rows: int, xsegs: int, load: bool = True) -> int:
        """One command alone: the docstring's formula, defined once in arch/cost.py."""
        return cost.rmac_cmd_cycles(kh, kw, rows, xsegs, load)

    @staticmethod
    def op_cycles(geometry) -> int:
        """Commands (dicts of kh, kw, rows, xsegs[, load], as rtl/rmac_schedule.py's ``geometry``)
        back to back: the docstring's formula, defined once in arch/cost.py (tests compare it
        with the simulation)."""
        return cost.rmac_cmds_cycles(geometry)

    def elaborate(self, platform):
        m = Module()
        cfg, S, T, L, WS, D = self.cfg, self.S, self.T, self.L, self.wseg, self.depth
        a_bits = cfg.act_bits
        cmd_l = self.cmd_layout(cfg)
        bias_l = data.ArrayLayout(signed(cfg.acc_bits), T)

        # --- two weight buffers (ping-pong): the halves of one memory, buffer b at b*D .. b*D + D-1
        m.submodules.wbuf = wbuf = memory.Memory(shape=data.ArrayLayout(signed(cfg.weight_bits), T),
                                                 depth=2 * D, init=[])
        wr = wbuf.write_port()
        rd = wbuf.read_port()

        def waddr(buf, tap):
            if D & (D - 1) == 0:
                return Cat(tap[:ceil_log2(D)], buf)
            return Mux(buf, tap + D, tap)

        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)

        # --- the next command: accepted, its weights loading into the idle buffer ------------
        nxt = Signal(cmd_l)
        nxt_valid, nxt_loaded, nxt_buf = Signal(), Signal(), Signal()
        last_buf = Signal()                                   # the buffer loaded last (command order)
        ltap = Signal(range(D + 1))
        lkx = Signal(range(KMAX + 1))
        lky = Signal(range(D + 1))
        loading = Signal()
        m.d.comb += [loading.eq(nxt_valid & nxt.load & ~nxt_loaded), self.wt.ready.eq(loading)]
        wt_fire, wt_last = Signal(), Signal()
        l_last_kx, l_last_ky = Signal(), Signal()     # lkx == kw - 1, lky == kh - 1: registers, as below
        m.d.comb += [wt_fire.eq(self.wt.valid & loading), wt_last.eq(l_last_kx & l_last_ky),
                     wr.addr.eq(waddr(nxt_buf, ltap)), wr.data.eq(self.wt.payload), wr.en.eq(wt_fire)]
        # walk (ky, kx) like the compute loop: no kh*kw multiplier needed
        with m.If(wt_fire):
            with m.If(l_last_kx):
                m.d.sync += [lkx.eq(0), l_last_kx.eq(nxt.kw == 1)]
                with m.If(l_last_ky):
                    m.d.sync += [ltap.eq(0), lky.eq(0), nxt_loaded.eq(1), l_last_ky.eq(nxt.kh == 1)]
                with m.Else():
                    m.d.sync += [ltap.eq(ltap + 1), lky.eq(lky + 1), l_last_ky.eq(lky + 2 == nxt.kh)]
            with m.Else():
                m.d.sync += [ltap.eq(ltap + 1), lkx.eq(lkx + 1), l_last_kx.eq(lkx + 2 == nxt.kw)]

        # --- the current command: tap within the segment, kx within the row, ky row, segment,
        # row group; cur_step: its row register holds a row beat (taps can issue)
        cur = Signal(cmd_l)
        cur_valid, cur_buf, cur_step = Signal(), Signal(), Signal()
        tap = Signal(range(D + 1))
        kx = Signal(range(KMAX + 1))
        ky = Signal(range(D + 1))
        xs = Signal(12)
        rg = Signal(16)
        iy0 = Signal(signed(COORD_BITS))   # oy*stride - pad of replica 0's output row
        ic0 = Signal(signed(COORD_BITS))   # first input column of the segment
        stepx = Signal(signed(COORD_BITS))  # S*stride
        stepy = Signal(signed(COORD_BITS))  # L*stride

        # kx == kw - 1, ky == kh - 1, xs == xsegs - 1, rg == rows - 1: registers set with their
        # counters, so the wide compares stay off the issue -> done -> promote path (ECP5 Fmax)
        last_kx, last_ky, last_xs, last_rg = Signal(), Signal(), Signal(), Signal()
        # ky + 1, ic0 + stepx, iy0 + stepy: registers set with ky, ic0, iy0 (the next kernel row,
        # segment and row group are a choice, not an adder, on the row-flag path: ECP5 Fmax)
        ky1, ic_seg, iy_grp = Signal.like(ky), Signal.like(ic0), Signal.like(iy0)
        n_ky = Signal.like(ky)
        n_ic0, n_iy0 = Signal.like(ic0), Signal.like(iy0)
        m.d.comb += [
            n_ky.eq(Mux(last_ky, 0, ky1)),
            n_ic0.eq(Mux(last_ky, Mux(last_xs, -cur.pad, ic_seg), ic0)),
            n_iy0.eq(Mux(last_ky & last_xs, iy_grp, iy0)),
        ]

        issue, done, promote = Signal(), Signal(), Signal()
        m.d.comb += [issue.eq(cur_valid & cur_step & en),
                     done.eq(issue & last_kx & last_ky & last_xs & last_rg),
                     # the next command becomes current once its weights are in (in the cycle of
                     # its last wt beat at the earliest) and the current one issues its last tap
                     promote.eq(nxt_valid & (nxt_loaded | (wt_fire & wt_last)) & (~cur_valid | done))]

        # the row beat taken this cycle (x.ready): the current command's first (or stalled) row,
        # its next row in the cycle of a row's last tap (taps stay back to back), or the promoted
        # command's first row (its taps follow the previous command's last tap at once). Its
        # coordinates and the fields that mark its positions outside the input are that command's.
        load_row = Signal()
        # Each candidate row's outside-the-input flags are computed from registers, side by side,
        # and the row taken picks its flags at the end: the choice (promote, done: wide compares)
        # and the coordinate arithmetic are not chained (ECP5 Fmax). No flag has an adder before
        # its compare: the bounds w - j and h - l*stride are registers set at promote, the kernel
        # row's top (iy0 + ky, iy0 + ky + 1) registers set with the counters, and the promoted
        # command's first row (-pad + j, -pad + l*stride: small constants) a table of its fields.
        PW = T * a_bits
        row_pad = Signal(L * WS)
        CB = COORD_BITS + 1
        w_j = [Signal(signed(CB), name=f"w_{j}") for j in range(WS)]          # cur.w - j
        h_l = [Signal(signed(CB), name=f"h_{l}") for l in range(L)]           # cur.h - l*stride
        y_ky, y_ky1 = Signal(signed(CB)), Signal(signed(CB))                  # iy0 + ky, iy0 + ky + 1
        first_col = Signal(WS)                      # the first segment's column flags (ic0 = -pad)

        def above(v, c):
            """``v > c`` for an unsigned ``v`` and a constant ``c >= 0``: the bits above ``c``'s, then a
            compare of at most ``c``'s width (one LUT level where a compare would be a carry chain)."""
            k = c.bit_length()
            hi = v[k:].any() if len(v) > k else 0
            if c == (1 << k) - 1:                                # (all ones: no k-bit value is above it)
                return hi
            return hi | (v[:k] > c)

        def not_below(v, c):
            """``v >= -c`` for a signed ``v`` and a constant ``c >= 0``: the sign, or (v negative) its low
            bits, without a carry chain."""
            if c == 0:
                return ~v[-1]
            k = c.bit_length()
            return ~v[-1] | (v[k:].all() & (v[:k] >= (1 << k) - c))

        def first_ok(c, size, d):
            """Whether ``-c.pad + d`` lies in ``[0, size)`` (``d`` a constant; ``c.pad`` one of 0..PADMAX)."""
            res = 0
            for p in range(PADMAX + 1):
                ok = (d >= p) and above(size, d - p)
                res = Mux(c.pad == p, ok, res)
            return res

        def flags(tag, col_ok, row_ok):
            f = Signal(L * WS, name=f"pad_{tag}")
            for l in range(L):
                m.d.comb += f[l * WS:(l + 1) * WS].eq(~(col_ok & row_ok[l].replicate(WS)))
            return f

        def cols(tag, ic):
            """Column flags (1 = inside) of a row beat whose first column is ``ic`` (the current command)."""
            ok = Signal(WS, name=f"colok_{tag}")
            m.d.comb += ok.eq(Cat(cur.pw | (not_below(ic, j) & (ic < w_j[j])) for j in range(WS)))
            return ok

        def rows(y):
            """Replica l's row flag (1 = inside) for replica 0's input row ``y`` (the current command)."""
            return [cur.pw | (Mux(cur.stride == 2, not_below(y, 2 * l), not_below(y, l)) & (y < h_l[l])) for l in range(L)]

        col_p = Signal(WS)
        m.d.comb += col_p.eq(Cat(nxt.pw | first_ok(nxt, nxt.w, j) for j in range(WS)))
        row_p = [nxt.pw | Mux(nxt.stride == 2, first_ok(nxt, nxt.h, 2 * l), first_ok(nxt, nxt.h, l))
                 for l in range(L)]
        col_0 = cols("0", ic0)
        pad_promote = flags("p", col_p, row_p)
        pad_same = flags("s", col_0, rows(y_ky))
        pad_ky = flags("k", col_0, rows(y_ky1))                       # the next kernel row
        pad_seg = flags("x", cols("x", ic_seg), rows(iy0))            # the next segment
        pad_grp = flags("g", first_col, rows(iy_grp))                 # the next row group
        # which row is taken: one-hot selects from the control, then an AND-OR of the flags, so a
        # flag's compare passes two LUT levels, not a priority chain of five choices
        stall_row, nxt_row = Signal(), Signal()             # nxt_row: a row's last tap takes the next row
        m.d.comb += [stall_row.eq(cur_valid & ~cur_step), nxt_row.eq(~promote & issue & last_kx & ~done),
                     self.x.ready.eq(promote | stall_row | nxt_row)]
        taken = [(promote, pad_promote), (~promote & stall_row, pad_same), (nxt_row & ~last_ky, pad_ky),
                 (nxt_row & last_ky & ~last_xs, pad_seg), (nxt_row & last_ky & last_xs, pad_grp)]
        m.d.comb += row_pad.eq(reduce(operator.or_, (f & sel.replicate(L * WS) for sel, f in taken)))
        m.d.comb += load_row.eq(self.x.valid & self.x.ready)

        with m.If(cur_valid & ~cur_step & self.x.valid):
            m.d.sync += cur_step.eq(1)
        with m.If(issue):
            with m.If(last_kx):
                m.d.sync += [kx.eq(0), ky.eq(n_ky), ic0.eq(n_ic0), iy0.eq(n_iy0), last_kx.eq(cur.kw == 1),
                             ky1.eq(n_ky + 1), ic_seg.eq(n_ic0 + stepx), iy_grp.eq(n_iy0 + stepy),
                             last_ky.eq(Mux(last_ky, cur.kh == 1, ky + 2 == cur.kh))]
                n_yk = Mux(last_ky, n_iy0, y_ky1)
                m.d.sync += [y_ky.eq(n_yk), y_ky1.eq(n_yk + 1)]
                with m.If(last_ky):
                    m.d.sync += tap.eq(0)
                    with m.If(last_xs):
                        m.d.sync += [xs.eq(0), rg.eq(rg + 1), last_xs.eq(cur.xsegs == 1),
                                     last_rg.eq(rg + 2 == cur.rows)]
                    with m.Else():
                        m.d.sync += [xs.eq(xs + 1), last_xs.eq(xs + 2 == cur.xsegs)]
                with m.Else():
                    m.d.sync += tap.eq(tap + 1)
                with m.If(done):
                    m.d.sync += cur_valid.eq(0)
                with m.Elif(~self.x.valid):
                    m.d.sync += cur_step.eq(0)        # the next row beat has not come: wait for it
            with m.Else():
                m.d.sync += [kx.eq(kx + 1), tap.eq(tap + 1), last_kx.eq(kx + 2 == cur.kw)]
        nxt_stepx, nxt_stepy = Signal.like(stepx), Signal.like(stepy)   # the promoted command's steps
        m.d.comb += [nxt_stepx.eq(Mux(nxt.stride == 2, 2 * S, S)), nxt_stepy.eq(Mux(nxt.stride == 2, 2 * L, L))]
        with m.If(promote):
            m.d.sync += [cur.eq(nxt), cur_buf.eq(nxt_buf), cur_valid.eq(1), cur_step.eq(load_row),
                         tap.eq(0), kx.eq(0), ky.eq(0), xs.eq(0), rg.eq(0),
                         last_kx.eq(nxt.kw == 1), last_ky.eq(nxt.kh == 1), last_xs.eq(nxt.xsegs == 1),
                         last_rg.eq(nxt.rows == 1),
                         iy0.eq(-nxt.pad), ic0.eq(-nxt.pad), ky1.eq(1),
                         ic_seg.eq(-nxt.pad + nxt_stepx), iy_grp.eq(-nxt.pad + nxt_stepy),
                         stepx.eq(nxt_stepx), stepy.eq(nxt_stepy),
                         y_ky.eq(-nxt.pad), y_ky1.eq(1 - nxt.pad), first_col.eq(col_p),
                         *[w_j[j].eq(nxt.w - j) for j in range(WS)],
                         *[h_l[l].eq(nxt.h - Mux(nxt.stride == 2, 2 * l, l)) for l in range(L)],
                         nxt_valid.eq(0)]

        # --- accept: a cmd enters the free next-command slot (or the one emptied this cycle); with
        # load it writes the buffer the current command does not read, else it reuses the last loaded
        m.d.comb += self.cmd.ready.eq(~nxt_valid | promote)
        with m.If(self.cmd.valid & self.cmd.ready):
            p = self.cmd.payload
            m.d.sync += [nxt.eq(p), nxt_valid.eq(1), nxt_loaded.eq(~p.load), ltap.eq(0), lkx.eq(0), lky.eq(0),
                         l_last_kx.eq(p.kw == 1), l_last_ky.eq(p.kh == 1),
                         nxt_buf.eq(last_buf ^ p.load), last_buf.eq(last_buf ^ p.load)]

        # --- row register: load, or shift by one per tap ------------------------------------------
        # (row register of each replica: W_SEG positions x T codes, position 0 at bit 0; beside
        # it one flag per position: outside the input, i.e. the zero point is substituted when a
        # tap reads it, with the issuing command's own z. Vector-wide statements keep the
        # generated Verilog small for the paper preset.)
        R = [Signal(WS * PW, name=f"row{l}") for l in range(L)]
        Rpad = [Signal(WS, name=f"rowpad{l}") for l in range(L)]
        # The flags load whenever a row is asked for (x.ready), taken or not, so x.valid stays off
        # their path (ECP5 Fmax): a row asked for and not taken leaves the array waiting (cur_step = 0)
        # until it comes, and its flags are then computed again (the stalled row's).
        for l in range(L):
            with m.If(load_row):
                m.d.sync += R[l].eq(self.x.payload.as_value()[l * WS * PW:(l + 1) * WS * PW])
            with m.Elif(issue):
                m.d.sync += R[l].eq(R[l] >> PW)
            with m.If(self.x.ready):
                m.d.sync += Rpad[l].eq(row_pad[l * WS:(l + 1) * WS])
            with m.Elif(issue):
                m.d.sync += Rpad[l].eq(Rpad[l] >> 1)

        # --- stage A: PE inputs (zero point where the window leaves the input) + weight read; the
        # command's bias travels with the data --------------------------------------------------
        va, fa, la = Signal(), Signal(), Signal()
        vb, fb, lb = Signal(), Signal(), Signal()
        ba, bb = Signal(bias_l), Signal(bias_l)
        xa_vec = [[Signal(PW, name=f"xa{l}_{s}") for s in range(S)] for l in range(L)]
        zv = cur.z.as_value()
        # the (buffer, tap) the next cycle issues from: this cycle's, stepped by an issue, or the
        # promoted command's first tap; its weight word is registered here (rtl/wbuf_read.py)
        n_buf, n_tap = Signal(), Signal.like(tap)
        m.d.comb += [n_buf.eq(cur_buf), n_tap.eq(tap)]
        with m.If(issue):
            m.d.comb += n_tap.eq(Mux(last_kx & last_ky, 0, tap + 1))
        with m.If(promote):
            m.d.comb += [n_buf.eq(nxt_buf), n_tap.eq(0)]
        wa = prefetched_word(m, rd, wr, wbuf.shape, waddr(n_buf, n_tap), en)
        with m.If(en):
            m.d.sync += [va.eq(issue), fa.eq(tap == 0), la.eq(last_kx & last_ky), ba.eq(cur.bias)]
            for l in range(L):
                for s in range(S):
                    # one 4-way choice per PE input, decided once per (replica, pixel): its position
                    # (stride 1), position 2s (stride 2), channel 0 of its position broadcast to the
                    # T PEs (pointwise), or the zero point (the position lies outside the input)
                    pos = lambda j: R[l][j * PW:(j + 1) * PW]
                    j2 = min(2 * s, WS - 1)
                    st2 = cur.stride == 2
                    sel = Signal(2, name=f"xsel{l}_{s}")
                    m.d.comb += sel.eq(Mux(cur.pw, 2, Mux(Mux(st2, Rpad[l][j2], Rpad[l][s]), 3, st2)))
                    bcast = Cat(*[R[l][s * PW:s * PW + a_bits]] * T)   # pointwise: channel 0 to all PEs
                    m.d.sync += xa_vec[l][s].eq(Mux(sel[1], Mux(sel[0], zv, bcast), Mux(sel[0], pos(j2), pos(s))))
        xa = [[[xa_vec[l][s][t * a_bits:(t + 1) * a_bits] for t in range(T)] for s in range(S)]
              for l in range(L)]

        # --- stage B: products (pixels 2i, 2i+1 of a replica share one multiplier, rtl/dsp_pack.py) --
        # prod[l][s][t] is PE (l, s, t)'s product; a high pixel's is the packed product's hi_raw
        # and its borrow bit is the carry-in of that PE's accumulator (borrow[l][s][t]).
        pshape = signed(a_bits + cfg.weight_bits + 1)
        prod = [[[None] * T for s in range(S)] for l in range(L)]
        borrow = [[[None] * T for s in range(S)] for l in range(L)]
        with m.If(en):
            m.d.sync += [vb.eq(va), fb.eq(fa), lb.eq(la), bb.eq(ba)]
            for l in range(L):
                for s in range(S):
                    for t in range(T):
                        if s < 2 * self.pairs and s % 2 == 0:
                            pk = PackedMul(a_bits, cfg.weight_bits, name=f"pk{l}_{s}_{t}")
                            m.d.sync += pk.p.eq(pk.product(xa[l][s][t], xa[l][s + 1][t], wa[t]))
                            prod[l][s][t], prod[l][s + 1][t] = pk.lo, pk.hi_raw
                            borrow[l][s + 1][t] = pk.borrow
                        elif s >= 2 * self.pairs:
                            pp = Signal(pshape, name=f"pp{l}_{s}_{t}")
                            m.d.sync += pp.eq(xa[l][s][t] * wa[t])
                            prod[l][s][t] = pp

        # --- stage C: accumulate; a segment's last tap goes to the output register --------------
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(en & vb):
            for l in range(L):
                for s in range(S):
                    for t in range(T):
                        acc = Signal(signed(cfg.acc_bits), name=f"acc{l}_{s}_{t}")
                        new = Signal(signed(cfg.acc_bits), name=f"accn{l}_{s}_{t}")
                        base = Mux(fb, bb[t], acc)
                        if borrow[l][s][t] is not None:      # the packed pair's correction as carry-in
                            m.d.comb += new.eq(add_carry(base, prod[l][s][t], borrow[l][s][t]))
                        else:
                            m.d.comb += new.eq(base + prod[l][s][t])
                        m.d.sync += acc.eq(new)
                        with m.If(lb):
                            m.d.sync += self.o.payload[(l * S + s) * T + t].eq(new)
            with m.If(lb):
                m.d.sync += self.o.valid.eq(1)

        # busy: a command is accepted and has not handed its last result to the output register
        m.d.comb += self.busy.eq(nxt_valid | cur_valid | va | vb | self.o.valid)
        return m
