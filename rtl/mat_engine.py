"""MAT engine: lanes of multipliers + adder trees + int32 accumulators (Trio-ViT's M x N x L).

One engine instance holds ``L = replicas`` copies of an array of ``M =
mat_lanes`` lanes, each lane ``N = mat_mults`` multipliers wide. Input
channels are reduced inside a lane (adder tree), output channels are spread
across lanes, the input vector is broadcast to every lane, and the replicas
work on ``L`` different pixels (rows) with the same weights. It computes tiles
of a matrix product::

    out[p, m] = bias[m] + sum_k x'[p, k] * w'[m, k]      (int32, m < M, k < chunks * N)

for ``p`` over ``groups * L`` pixels, which covers

* pointwise and generic convolutions: ``x`` is the (im2col'd) input vector of
  a pixel, ``w`` the int8 filters of M output channels, ``bias`` the folded
  int32 bias (SPEC 2; the zero point of ``x`` is inside the bias);
* attention ``k^T v`` with the k-sum (SPEC 5.1): pixels are the d rows ``i``
  of kv, ``x = k[:, i]`` with ReLU-with-zero-point on the fly
  (``x' = max(x - z_k, 0)``, cmd ``relu``/``x_zero``), the reduction runs over
  tokens, lanes are the columns ``j`` of ``v`` with ``w' = v - z_v[j]``
  (cmd ``w_zero``, per lane, applied as the weights are loaded), and the
  ``ones`` lane mask makes a lane's weights 1, which yields ``ksum[i]`` (the
  padded ones column). ``sum_n kr (v - z_v) = sum_n kr v - z_v ksum``: the
  same integers as SPEC 5.1 by distributivity;
* attention ``q kv`` and ``q ks`` (SPEC 5.3): ``x = q`` rows with ReLU on the
  fly (``z_q``), lanes are the columns of ``kv`` (signed) and one lane ``ks``
  (unsigned codes), which is why the weight operand is ``max(act_bits,
  weight_bits) + 1`` bits signed.

Ports (``amaranth.lib.stream``; element 0 of an array at bit 0):

* ``cmd``: one beat per tile, :meth:`MatEngine.cmd_layout`: ``chunks`` (reduction length in
  words of N, 1 .. mat_wbuf_words), ``groups`` (pixel groups of L),
  ``load`` (1: take ``chunks`` new weight words on ``w`` first; 0: reuse the
  buffer), ``relu``/``x_zero``, ``w_zero[M]``, ``ones`` (lane mask), ``bias[M]``.
* ``w``: ``chunks`` beats of ``M*N`` weights, element ``m*N + n`` = lane m, tap ``c*N + n``.
* ``x``: ``groups * chunks`` beats of ``L*N`` codes, element ``l*N + n`` = pixel
  ``g*L + l``, tap ``c*N + n``; pixel-major (all chunks of a group, then the next group).
* ``o``: ``groups`` beats of ``L*M`` int32, element ``l*M + m``.

Multipliers (rtl/dsp_pack.py): replicas ``2i`` and ``2i+1`` multiply the same
weight word, so each of their ``M*N`` product pairs is one ``*`` on a packed
operand (``x[2i+1] * 2^18 + x[2i]``, one DSP48E2): ``M*N*ceil(L/2)`` multipliers
(an odd ``L`` leaves the last replica with ``M*N`` plain ones; activations wider
than 8 bits do not pack). Stage B registers the packed product ``P``; the low
replica's leaves are ``P[17:0]``, the high replica's ``P >> 18``, and the
correction bits (the low products' signs) are the carry-ins of the high
replica's adder-tree adders and accumulator (``N - 1`` adders + 1: one each),
so no cycle and no fabric adder is added.

Cycle behaviour (arch/cost.py's ``mat_tile_cycles``; ``T = log2(N)`` adder-tree levels when
``tree_pipeline`` else 0; measured by tb/test_mat_engine.py and recorded in
tb/baselines/cycles/mat_engine/): with no stalls, from the cycle the ``cmd`` beat is
accepted to the cycle the last ``o`` beat is accepted, inclusive::

    cycles(tile) = 1 + load * chunks + groups * chunks + T + 3

One weight word and one input beat per cycle; the pipeline is
issue -> multiply -> T tree levels -> accumulate/output register. A new
``cmd`` is accepted only once the previous tile has drained out of the
multiply/tree/accumulate stages (so each tile's bias stays put), so tiles run
back to back with ``cycles(tile)`` each. Useful MACs per tile are at most
``groups * L * chunks * N * M``; ``ideal = MACs / (L*M*N)``.
"""
from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned, Mux, Cat
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from arch import cost
from arch.config import AccelConfig
from rtl.dsp_pack import PackedMul, add_carry, packable


def _bits_for(n: int) -> int:
    return max(1, ceil_log2(n + 1))


class MatEngine(wiring.Component):
    GROUPS_BITS = 20  # pixel groups per tile: up to 2^20 - 1 (a 1024x1024 map needs 2^20 / L)

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        M, N, L = cfg.mat_lanes, cfg.mat_mults, cfg.replicas
        self.M, self.N, self.L = M, N, L
        self.a_bits = cfg.act_bits
        self.wop_bits = max(cfg.act_bits, cfg.weight_bits) + 1      # weight operand at the port
        self.wint_bits = self.wop_bits + 1                            # after w - w_zero
        self.depth = cfg.mat_wbuf_words
        self.tree_levels = cost.tree_depth(cfg)
        # replicas (2i, 2i+1), i < pairs, share each multiplier (rtl/dsp_pack.py); an odd L leaves
        # the last replica with its own multipliers
        self.pairs = L // 2 if packable(self.a_bits, self.wint_bits) else 0
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout(cfg))),
            "w": In(stream.Signature(data.ArrayLayout(signed(self.wop_bits), M * N))),
            "x": In(stream.Signature(data.ArrayLayout(unsigned(self.a_bits), L * N))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(cfg.acc_bits), L * M))),
            "busy": Out(1),
        })

    @classmethod
    def cmd_layout(cls, cfg: AccelConfig) -> data.StructLayout:
        return data.StructLayout({
            "chunks": unsigned(_bits_for(cfg.mat_wbuf_words)),
            "groups": unsigned(cls.GROUPS_BITS),
            "load": unsigned(1),
            "relu": unsigned(1),
            "x_zero": unsigned(cfg.act_bits),
            "w_zero": data.ArrayLayout(unsigned(cfg.act_bits), cfg.mat_lanes),
            "ones": unsigned(cfg.mat_lanes),
            "bias": data.ArrayLayout(signed(cfg.acc_bits), cfg.mat_lanes),
        })

    @staticmethod
    def tile_cycles(cfg: AccelConfig, chunks: int, groups: int, load: bool = True) -> int:
        """The docstring's formula, defined once in arch/cost.py (tests compare it with the simulation)."""
        return cost.mat_tile_cycles(cfg, chunks, groups, load)

    def elaborate(self, platform):
        m = Module()
        cfg, M, N, L = self.cfg, self.M, self.N, self.L
        acc_shape = signed(cfg.acc_bits)

        # --- weight buffer: one word = M*N weight operands after w_zero / ones --------
        wword = data.ArrayLayout(signed(self.wint_bits), M * N)
        m.submodules.wbuf = wbuf = memory.Memory(shape=wword, depth=self.depth, init=[])
        wr = wbuf.write_port()
        rd = wbuf.read_port()          # synchronous: data one cycle after the address

        cmd = Signal(self.cmd_layout(cfg))
        chunk = Signal(range(max(2, self.depth + 1)))
        group = Signal(self.GROUPS_BITS)

        # pipeline valid/first/last flags: stage A (issue), B (products), tree levels, C = output
        en = Signal()          # whole pipeline advances (the output register can take a result)
        m.d.comb += en.eq(~self.o.valid | self.o.ready)

        va, fa, la = Signal(), Signal(), Signal()
        xa = Signal(data.ArrayLayout(unsigned(self.a_bits), L * N))
        in_flight = Signal()

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(~in_flight)
                with m.If(self.cmd.valid & ~in_flight):
                    m.d.sync += [cmd.eq(self.cmd.payload), chunk.eq(0), group.eq(0)]
                    with m.If(self.cmd.payload.load):
                        m.next = "LOAD"
                    with m.Else():
                        m.next = "RUN"
            with m.State("LOAD"):
                m.d.comb += [self.w.ready.eq(1), self.busy.eq(1)]
                word = Signal(wword)
                for lane in range(M):
                    for n in range(N):
                        wv = self.w.payload[lane * N + n]
                        m.d.comb += word[lane * N + n].eq(
                            Mux(cmd.ones[lane], 1, wv - cmd.w_zero[lane]))
                m.d.comb += [wr.addr.eq(chunk), wr.data.eq(word), wr.en.eq(self.w.valid)]
                with m.If(self.w.valid):
                    with m.If(chunk == cmd.chunks - 1):
                        m.d.sync += chunk.eq(0)
                        m.next = "RUN"
                    with m.Else():
                        m.d.sync += chunk.eq(chunk + 1)
            with m.State("RUN"):
                m.d.comb += [self.x.ready.eq(en), self.busy.eq(1)]
                with m.If(self.x.valid & en):
                    with m.If(chunk == cmd.chunks - 1):
                        m.d.sync += chunk.eq(0)
                        with m.If(group == cmd.groups - 1):
                            m.next = "IDLE"
                        with m.Else():
                            m.d.sync += group.eq(group + 1)
                    with m.Else():
                        m.d.sync += chunk.eq(chunk + 1)

        # --- stage A: accept x, apply ReLU-with-zero-point, read the weight word ------
        fire_x = Signal()
        m.d.comb += fire_x.eq(self.x.valid & self.x.ready)
        m.d.comb += [rd.addr.eq(chunk), rd.en.eq(en)]
        with m.If(en):
            m.d.sync += [va.eq(fire_x), fa.eq(chunk == 0), la.eq(chunk == cmd.chunks - 1)]
            for i in range(L * N):
                xv = self.x.payload[i]
                diff = Signal(signed(self.a_bits + 1), name=f"xd{i}")
                m.d.comb += diff.eq(xv - cmd.x_zero)
                m.d.sync += xa[i].eq(Mux(cmd.relu, Mux(diff[-1], 0, diff), xv))

        # --- stage B: products (replicas 2i, 2i+1 share one multiplier, rtl/dsp_pack.py) -------
        # leaves[l][lane][n] is the product of replica l; a high replica's leaf is the packed
        # product's hi_raw and its borrow bit waits in borrows[l][lane] to be a carry-in below.
        prod_shape = signed(self.a_bits + self.wint_bits + 1)
        vb, fb, lb = Signal(), Signal(), Signal()
        leaves = [[[None] * N for lane in range(M)] for l in range(L)]
        borrows = [[[] for lane in range(M)] for l in range(L)]
        with m.If(en):
            m.d.sync += [vb.eq(va), fb.eq(fa), lb.eq(la)]
            for l in range(L):
                for lane in range(M):
                    for n in range(N):
                        w = rd.data[lane * N + n]
                        if l < 2 * self.pairs and l % 2 == 0:
                            pk = PackedMul(self.a_bits, self.wint_bits, name=f"pk{l}_{lane}_{n}")
                            m.d.sync += pk.p.eq(pk.product(xa[l * N + n], xa[(l + 1) * N + n], w))
                            leaves[l][lane][n], leaves[l + 1][lane][n] = pk.lo, pk.hi_raw
                            borrows[l + 1][lane].append(pk.borrow)
                        elif l >= 2 * self.pairs:
                            p = Signal(prod_shape, name=f"p{l}_{lane}_{n}")
                            m.d.sync += p.eq(xa[l * N + n] * w)
                            leaves[l][lane][n] = p

        # --- adder trees (registered levels when cfg.tree_pipeline) ---------------------
        # Each adder takes one pending borrow as its carry-in (free on the carry chain); a
        # tree of N leaves has N - 1 adders, the accumulator takes the last borrow.
        level = leaves
        vt, ft, lt = vb, fb, lb
        valids = [va, vb]
        width = prod_shape.width
        for lev in range(N.bit_length() - 1):
            width += 1
            nxt = []
            for l in range(L):
                row = []
                for lane in range(M):
                    cur, pend = level[l][lane], borrows[l][lane]
                    sums = []
                    for j in range(0, len(cur), 2):
                        s = Signal(signed(width), name=f"t{lev}_{l}_{lane}_{j // 2}")
                        add = cur[j] + cur[j + 1]
                        if pend:
                            add = add + pend.pop(0)
                        if cfg.tree_pipeline:
                            with m.If(en):
                                m.d.sync += s.eq(add)
                        else:
                            m.d.comb += s.eq(add)
                        sums.append(s)
                    row.append(sums)
                    if cfg.tree_pipeline:          # the borrows still pending move with their level
                        for i, c in enumerate(pend):
                            r = Signal(name=f"bw{lev}_{l}_{lane}_{i}")
                            with m.If(en):
                                m.d.sync += r.eq(c)
                            pend[i] = r
                nxt.append(row)
            level = nxt
            if cfg.tree_pipeline:
                v2, f2, l2 = Signal(name=f"vt{lev}"), Signal(name=f"ft{lev}"), Signal(name=f"lt{lev}")
                with m.If(en):
                    m.d.sync += [v2.eq(vt), f2.eq(ft), l2.eq(lt)]
                vt, ft, lt = v2, f2, l2
                valids.append(v2)

        # --- stage C: accumulate; the last chunk of a pixel group goes to the output ---
        accs = [[Signal(acc_shape, name=f"acc{l}_{lane}") for lane in range(M)] for l in range(L)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(en & vt):
            for l in range(L):
                for lane in range(M):
                    base = Mux(ft, cmd.bias[lane], accs[l][lane])
                    new = Signal(acc_shape, name=f"accn{l}_{lane}")
                    pend = borrows[l][lane]
                    if pend:      # the last borrow: the accumulator's carry-in
                        add = add_carry(base, level[l][lane][0], pend.pop())
                    else:
                        add = base + level[l][lane][0]
                    assert not pend, "every borrow of a packed pair is a carry-in exactly once"
                    m.d.comb += new.eq(add)
                    m.d.sync += accs[l][lane].eq(new)
                    with m.If(lt):
                        m.d.sync += self.o.payload[l * M + lane].eq(new)
            with m.If(lt):
                m.d.sync += self.o.valid.eq(1)

        # a tile is in flight while any stage after issue holds a beat
        m.d.comb += in_flight.eq(Cat(*valids).any())
        return m
