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
feeder's values there are ignored. A row beat is loaded into a shift register;
for ``kx = 0 .. kw-1`` PE ``s`` reads position ``s*stride`` and the register
shifts by one: each input row is fetched once per segment and reused across
the ``kw`` taps and the ``S`` pixels.

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
  ``z[T]``, ``bias[T]``.
* ``wt``: ``kh*kw`` beats of ``T`` int8 weights (tap ``ky*kw + kx``), when ``load``.
* ``x``: ``rows * xsegs * kh`` beats of ``L*W_SEG*T`` codes, element
  ``(l*W_SEG + j)*T + t``; order: row group, segment, ky.
* ``o``: ``rows * xsegs`` beats of ``L*S*T`` int32, element ``(l*S + s)*T + t``.

Cycle behaviour (no stalls; from the ``cmd`` handshake to the last ``o``
handshake, inclusive; checked by tb/test_rmac_engine.py, recorded in
tb/baselines/cycles/rmac_engine/)::

    cycles(cmd) = 1 + load*kh*kw + 1 + rows*xsegs*kh*kw + 3

The next row beat is taken in the cycle of a row's last tap, so taps issue
back to back; the ``+1`` is the first row beat, ``+3`` the multiply /
accumulate / output pipeline. Useful MACs: ``Ho*Wo*C*kh*kw`` for a depthwise
layer, ``ideal = MACs / (L*S*T)``; the gap to ideal is the padding of the last
segment / row group / channel group.
"""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from arch.config import AccelConfig

from arch import cost
from rtl.dsp_pack import PackedMul, add_carry, packable
from arch.timing import KMAX, PADMAX, SMAX  # noqa: F401  (re-exported for the feeders)

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
        """The docstring's formula, defined once in arch/cost.py (tests compare it with the simulation)."""
        return cost.rmac_cmd_cycles(kh, kw, rows, xsegs, load)

    def elaborate(self, platform):
        m = Module()
        cfg, S, T, L, WS = self.cfg, self.S, self.T, self.L, self.wseg
        a_bits = cfg.act_bits
        cmd = Signal(self.cmd_layout(cfg))

        m.submodules.wbuf = wbuf = memory.Memory(shape=data.ArrayLayout(signed(cfg.weight_bits), T),
                                                 depth=self.depth, init=[])
        wr = wbuf.write_port()
        rd = wbuf.read_port()

        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)

        # counters: tap within the segment, kx within the row, ky row, segment, row group
        tap = Signal(range(self.depth + 1))
        kx = Signal(range(KMAX + 1))
        ky = Signal(range(self.depth + 1))
        xs = Signal(12)
        rg = Signal(16)
        iy0 = Signal(signed(COORD_BITS))   # oy*stride - pad of replica 0's output row
        ic0 = Signal(signed(COORD_BITS))   # first input column of the segment
        stepx = Signal(signed(COORD_BITS))  # S*stride
        stepy = Signal(signed(COORD_BITS))  # L*stride

        # the row beat's coordinates: current (ky, xs, rg) while waiting in ROW,
        # the next ones when a beat is taken in the cycle of a row's last tap
        last_kx = kx == cmd.kw - 1
        last_ky = ky == cmd.kh - 1
        last_xs = xs == cmd.xsegs - 1
        last_rg = rg == cmd.rows - 1
        n_ky = Signal.like(ky)
        n_ic0, n_iy0 = Signal.like(ic0), Signal.like(iy0)
        m.d.comb += [
            n_ky.eq(Mux(last_ky, 0, ky + 1)),
            n_ic0.eq(Mux(last_ky, Mux(last_xs, -cmd.pad, ic0 + stepx), ic0)),
            n_iy0.eq(Mux(last_ky & last_xs, iy0 + stepy, iy0)),
        ]

        # row register of each replica: W_SEG positions x T codes, position 0 at bit 0
        # (vector-wide statements keep the generated Verilog small for the paper preset)
        PW = T * a_bits
        R = [Signal(WS * PW, name=f"row{l}") for l in range(L)]

        load_row = Signal()       # an x beat is taken this cycle
        issue = Signal()          # a tap is issued this cycle
        row_ky, row_ic0, row_iy0 = Signal.like(ky), Signal.like(ic0), Signal.like(iy0)
        in_flight = Signal()
        va, fa, la = Signal(), Signal(), Signal()
        vb, fb, lb = Signal(), Signal(), Signal()

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(~in_flight)
                with m.If(self.cmd.valid & ~in_flight):
                    p = self.cmd.payload
                    m.d.sync += [cmd.eq(p), tap.eq(0), kx.eq(0), ky.eq(0), xs.eq(0), rg.eq(0),
                                 iy0.eq(-p.pad), ic0.eq(-p.pad),
                                 stepx.eq(Mux(p.stride == 2, 2 * S, S)),
                                 stepy.eq(Mux(p.stride == 2, 2 * L, L))]
                    with m.If(p.load):
                        m.next = "LOAD"
                    with m.Else():
                        m.next = "ROW"
            with m.State("LOAD"):
                m.d.comb += [self.wt.ready.eq(1), self.busy.eq(1),
                             wr.addr.eq(tap), wr.data.eq(self.wt.payload), wr.en.eq(self.wt.valid)]
                # walk (ky, kx) like the compute loop: no kh*kw multiplier needed
                with m.If(self.wt.valid):
                    with m.If(last_kx):
                        m.d.sync += kx.eq(0)
                        with m.If(last_ky):
                            m.d.sync += [tap.eq(0), ky.eq(0)]
                            m.next = "ROW"
                        with m.Else():
                            m.d.sync += [tap.eq(tap + 1), ky.eq(ky + 1)]
                    with m.Else():
                        m.d.sync += [tap.eq(tap + 1), kx.eq(kx + 1)]
            with m.State("ROW"):
                m.d.comb += [self.busy.eq(1), self.x.ready.eq(1),
                             row_ky.eq(ky), row_ic0.eq(ic0), row_iy0.eq(iy0)]
                with m.If(self.x.valid):
                    m.d.comb += load_row.eq(1)
                    m.next = "STEP"
            with m.State("STEP"):
                m.d.comb += [self.busy.eq(1), issue.eq(en),
                             row_ky.eq(n_ky), row_ic0.eq(n_ic0), row_iy0.eq(n_iy0)]
                done = last_kx & last_ky & last_xs & last_rg
                with m.If(en):
                    with m.If(last_kx):
                        m.d.sync += [kx.eq(0), ky.eq(n_ky), ic0.eq(n_ic0), iy0.eq(n_iy0)]
                        with m.If(last_ky):
                            m.d.sync += tap.eq(0)
                            with m.If(last_xs):
                                m.d.sync += xs.eq(0)
                                m.d.sync += rg.eq(rg + 1)
                            with m.Else():
                                m.d.sync += xs.eq(xs + 1)
                        with m.Else():
                            m.d.sync += tap.eq(tap + 1)
                        with m.If(done):
                            m.next = "IDLE"
                        with m.Else():
                            # take the next row beat now so the taps stay back to back
                            m.d.comb += self.x.ready.eq(1)
                            with m.If(self.x.valid):
                                m.d.comb += load_row.eq(1)
                            with m.Else():
                                m.next = "ROW"
                    with m.Else():
                        m.d.sync += [kx.eq(kx + 1), tap.eq(tap + 1)]

        # --- row register: load with padding substitution, or shift by one per tap ------
        col_ok = Signal(WS)
        for j in range(WS):
            c = Signal(signed(COORD_BITS + 1), name=f"col{j}")
            m.d.comb += [c.eq(row_ic0 + j), col_ok[j].eq(cmd.pw | ((c >= 0) & (c < cmd.w)))]
        for l in range(L):
            r = Signal(signed(COORD_BITS + 2), name=f"irow{l}")
            m.d.comb += r.eq(row_iy0 + Mux(cmd.stride == 2, 2 * l, l) + row_ky)
            row_ok = Signal(name=f"rowok{l}")
            m.d.comb += row_ok.eq(cmd.pw | ((r >= 0) & (r < cmd.h)))
            xrow = self.x.payload.as_value()[l * WS * PW:(l + 1) * WS * PW]
            zv = cmd.z.as_value()
            with m.If(load_row):
                m.d.sync += R[l].eq(Cat(*[Mux(row_ok & col_ok[j], xrow[j * PW:(j + 1) * PW], zv)
                                          for j in range(WS)]))
            with m.Elif(issue):
                m.d.sync += R[l].eq(R[l] >> PW)

        # --- stage A: PE inputs + weight read -------------------------------------------------
        xa_vec = [[Signal(PW, name=f"xa{l}_{s}") for s in range(S)] for l in range(L)]
        m.d.comb += [rd.addr.eq(tap), rd.en.eq(en)]
        with m.If(en):
            m.d.sync += [va.eq(issue), fa.eq(tap == 0), la.eq(last_kx & last_ky)]
            for l in range(L):
                for s in range(S):
                    pos = lambda j: R[l][j * PW:(j + 1) * PW]
                    dw = Mux(cmd.stride == 2, pos(min(2 * s, WS - 1)), pos(s))
                    bcast = Cat(*[R[l][s * PW:s * PW + a_bits]] * T)   # pointwise: channel 0 to all PEs
                    m.d.sync += xa_vec[l][s].eq(Mux(cmd.pw, bcast, dw))
        xa = [[[xa_vec[l][s][t * a_bits:(t + 1) * a_bits] for t in range(T)] for s in range(S)]
              for l in range(L)]

        # --- stage B: products (pixels 2i, 2i+1 of a replica share one multiplier, rtl/dsp_pack.py) --
        # prod[l][s][t] is PE (l, s, t)'s product; a high pixel's is the packed product's hi_raw
        # and its borrow bit is the carry-in of that PE's accumulator (borrow[l][s][t]).
        pshape = signed(a_bits + cfg.weight_bits + 1)
        prod = [[[None] * T for s in range(S)] for l in range(L)]
        borrow = [[[None] * T for s in range(S)] for l in range(L)]
        with m.If(en):
            m.d.sync += [vb.eq(va), fb.eq(fa), lb.eq(la)]
            for l in range(L):
                for s in range(S):
                    for t in range(T):
                        if s < 2 * self.pairs and s % 2 == 0:
                            pk = PackedMul(a_bits, cfg.weight_bits, name=f"pk{l}_{s}_{t}")
                            m.d.sync += pk.p.eq(pk.product(xa[l][s][t], xa[l][s + 1][t], rd.data[t]))
                            prod[l][s][t], prod[l][s + 1][t] = pk.lo, pk.hi_raw
                            borrow[l][s + 1][t] = pk.borrow
                        elif s >= 2 * self.pairs:
                            pp = Signal(pshape, name=f"pp{l}_{s}_{t}")
                            m.d.sync += pp.eq(xa[l][s][t] * rd.data[t])
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
                        base = Mux(fb, cmd.bias[t], acc)
                        if borrow[l][s][t] is not None:      # the packed pair's correction as carry-in
                            m.d.comb += new.eq(add_carry(base, prod[l][s][t], borrow[l][s][t]))
                        else:
                            m.d.comb += new.eq(base + prod[l][s][t])
                        m.d.sync += acc.eq(new)
                        with m.If(lb):
                            m.d.sync += self.o.payload[(l * S + s) * T + t].eq(new)
            with m.If(lb):
                m.d.sync += self.o.valid.eq(1)

        m.d.comb += in_flight.eq(va | vb)
        return m
