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
  words of N, 1 .. mat_wbuf_words), ``groups`` (pixel groups of L, 1 .. 2^20 - 1),
  ``load`` (1: take ``chunks`` new weight words on ``w`` into the idle weight buffer;
  0: reuse the buffer loaded last, see below), ``relu``/``x_zero``, ``w_zero[M]``,
  ``ones`` (lane mask), ``bias[M]``. (Unchanged by double buffering.)
* ``w``: ``chunks`` beats of ``M*N`` weights per tile with ``load``, element ``m*N + n`` =
  lane m, tap ``c*N + n``.
* ``x``: ``groups * chunks`` beats of ``L*N`` codes, element ``l*N + n`` = pixel
  ``g*L + l``, tap ``c*N + n``; pixel-major (all chunks of a group, then the next group).
* ``o``: ``groups`` beats of ``L*M`` int32, element ``l*M + m``.
* ``busy``: a tile has been accepted and its last result is not yet handed over.

Double-buffered weights, overlapped tiles: the engine holds two weight buffers
(the two halves of one ``amaranth.lib.memory`` memory: the BRAM count of one
buffer of 256 words stays, since a word is hundreds of bits wide and a BRAM
has 512 rows) and a one-deep slot for the *next* tile beside the *current*
(issuing) one:

* a ``cmd`` is accepted whenever the slot is free, i.e. in the cycle the tile
  before it starts issuing at the earliest; with ``load`` its ``w`` beats (one
  per cycle) are written, ``w_zero`` / ``ones`` applied, into the buffer that
  the current tile does not read, while the current tile issues;
* the next tile becomes current (its first ``x`` beat the cycle after) once its
  weights are in (at the earliest in the cycle of its last ``w`` beat) and the
  current tile has issued its last ``x`` beat; the earlier tile's beats drain
  through the multiply / tree / accumulate stages while it issues;
* ``relu`` / ``x_zero`` act when a beat is issued; the tile's ``bias`` travels
  down the pipeline with each beat (a register per stage, M words), so the
  accumulator of a pixel group's first chunk takes the bias of its own tile
  while several tiles are in flight;
* ``load = 0``: the tile reads the buffer loaded last in command order (the
  weights of the closest earlier ``cmd`` with ``load``), the natural reuse for a
  controller that cuts one column tile's pixels into several commands
  (rtl/mat_schedule.py ``max_groups``). The other buffer is not addressable: the
  next ``load`` writes it.

Multipliers (rtl/dsp_pack.py): replicas ``2i`` and ``2i+1`` multiply the same
weight word, so each of their ``M*N`` product pairs is one ``*`` on a packed
operand (``x[2i+1] * 2^18 + x[2i]``, one DSP48E2): ``M*N*ceil(L/2)`` multipliers
(an odd ``L`` leaves the last replica with ``M*N`` plain ones; activations wider
than 8 bits do not pack). Stage B registers the packed product ``P``; the low
replica's leaves are ``P[17:0]``, the high replica's ``P >> 18``, and the
correction bits (the low products' signs) are the carry-ins of the high
replica's adder-tree adders and accumulator (``N - 1`` adders + 1: one each),
so no cycle and no fabric adder is added.

Cycle behaviour (arch/cost.py's ``mat_tiles_cycles`` / ``back_to_back``; ``T = log2(N)``
adder-tree levels when ``tree_pipeline`` else 0; measured by tb/test_mat_engine.py and
recorded in tb/baselines/cycles/mat_engine/): tiles ``i = 0 .. n-1`` sent back to back
with no stalls (``x`` always valid, ``o`` always ready, ``w`` always available), from
the first ``cmd`` handshake to the last ``o`` handshake, inclusive::

    I[i] = groups[i] * chunks[i]        (issue cycles: one x beat per cycle)
    W[i] = load[i] * chunks[i]          (weight beats), W[n] = 0
    cycles = 1 + max(1, W[0]) + sum_i max(I[i], W[i+1]) + T + 3

The first tile pays its handshake and its weight load (a first tile without
``load`` one cycle to start); each tile then holds the issue slot for the longer
of its own issue and the next tile's weight load; the last tile's beats drain
through the multiply register, ``T`` tree levels and the accumulate / output
register. A tile alone that loads: ``1 + chunks + groups*chunks + T + 3`` (as
before double buffering); one that reuses its weights: ``2 + groups*chunks + T +
3`` (one cycle more than before). The tiles of one product share ``chunks``, so
``W <= I`` and ``n`` tiles take ``1 + chunks + n*groups*chunks + T + 3``: one load
and one drain per product instead of per tile. Useful MACs per tile are at most
``groups * L * chunks * N * M``; ``ideal = MACs / (L*M*N)``.
"""
from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned, Mux, Cat
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from arch import cost, timing
from arch.config import AccelConfig
from rtl.dsp_pack import PackedMul, add_carry, packable
from rtl.wbuf_read import prefetched_word


def _bits_for(n: int) -> int:
    return max(1, ceil_log2(n + 1))


class MatEngine(wiring.Component):
    GROUPS_BITS = timing.MAT_GROUPS_BITS  # pixel groups per tile: up to 2^20 - 1 (a 1024x1024 map needs 2^20 / L)

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
        """One tile alone: the docstring's formula, defined once in arch/cost.py."""
        return cost.mat_tile_cycles(cfg, chunks, groups, load)

    @staticmethod
    def op_cycles(cfg: AccelConfig, tiles) -> int:
        """Tiles ``(chunks, groups[, load])`` back to back: the docstring's formula, defined once in
        arch/cost.py (tests compare it with the simulation)."""
        return cost.mat_tiles_cycles(cfg, tiles)

    def elaborate(self, platform):
        m = Module()
        cfg, M, N, L, D = self.cfg, self.M, self.N, self.L, self.depth
        acc_shape = signed(cfg.acc_bits)
        cmd_l = self.cmd_layout(cfg)
        bias_l = data.ArrayLayout(acc_shape, M)

        # --- two weight buffers (ping-pong): the halves of one memory, buffer b at b*D .. b*D + D-1
        # (one memory keeps the BRAM count: a word is M*N*wint_bits wide, so the depth fits the
        # BRAMs' 512 rows for D <= 256). One word = M*N weight operands after w_zero / ones.
        wword = data.ArrayLayout(signed(self.wint_bits), M * N)
        m.submodules.wbuf = wbuf = memory.Memory(shape=wword, depth=2 * D, init=[])
        wr = wbuf.write_port()
        rd = wbuf.read_port()          # issued a cycle ahead, its word registered (rtl/wbuf_read.py)

        def waddr(buf, word):
            if D & (D - 1) == 0:
                return Cat(word[:ceil_log2(D)], buf)
            return Mux(buf, word + D, word)

        en = Signal()          # whole pipeline advances (the output register can take a result)
        m.d.comb += en.eq(~self.o.valid | self.o.ready)

        # --- the next tile: accepted, its weights loading into the idle buffer ---------------
        nxt = Signal(cmd_l)
        nxt_valid, nxt_loaded, nxt_buf = Signal(), Signal(), Signal()
        last_buf = Signal()                                   # the buffer loaded last (command order)
        lchunk = Signal(range(max(2, D + 1)))
        loading = Signal()
        m.d.comb += [loading.eq(nxt_valid & nxt.load & ~nxt_loaded), self.w.ready.eq(loading)]
        w_fire, w_last = Signal(), Signal()          # w_last: lchunk == chunks - 1, kept in a register
        m.d.comb += w_fire.eq(self.w.valid & loading)
        word = Signal(wword)
        for lane in range(M):
            for n in range(N):
                wv = self.w.payload[lane * N + n]
                m.d.comb += word[lane * N + n].eq(Mux(nxt.ones[lane], 1, wv - nxt.w_zero[lane]))
        m.d.comb += [wr.addr.eq(waddr(nxt_buf, lchunk)), wr.data.eq(word), wr.en.eq(w_fire)]
        with m.If(w_fire):
            with m.If(w_last):
                m.d.sync += [lchunk.eq(0), nxt_loaded.eq(1), w_last.eq(nxt.chunks == 1)]
            with m.Else():
                m.d.sync += [lchunk.eq(lchunk + 1), w_last.eq(lchunk + 2 == nxt.chunks)]

        # --- the current tile: issues one x beat per cycle ---------------------------------------
        cur = Signal(cmd_l)
        cur_valid, cur_buf = Signal(), Signal()
        chunk = Signal(range(max(2, D + 1)))
        group = Signal(self.GROUPS_BITS)
        m.d.comb += self.x.ready.eq(cur_valid & en)
        fire_x, done = Signal(), Signal()
        # chunk == chunks - 1 and group == groups - 1, kept in registers (set with the counters) so
        # that the wide compares stay off the issue -> promote -> accept path (ECP5 Fmax)
        last_chunk, last_group = Signal(), Signal()
        m.d.comb += [fire_x.eq(self.x.valid & self.x.ready), done.eq(fire_x & last_chunk & last_group)]
        with m.If(fire_x):
            with m.If(last_chunk):
                m.d.sync += [chunk.eq(0), last_chunk.eq(cur.chunks == 1)]
                with m.If(done):
                    m.d.sync += [group.eq(0), cur_valid.eq(0)]
                with m.Else():
                    m.d.sync += [group.eq(group + 1), last_group.eq(group + 2 == cur.groups)]
            with m.Else():
                m.d.sync += [chunk.eq(chunk + 1), last_chunk.eq(chunk + 2 == cur.chunks)]

        # --- promote: the next tile becomes current once its weights are in (in the cycle of its
        # last w beat at the earliest) and the current tile has issued its last x beat -------------
        promote = Signal()
        m.d.comb += promote.eq(nxt_valid & (nxt_loaded | (w_fire & w_last)) & (~cur_valid | done))
        with m.If(promote):
            m.d.sync += [cur.eq(nxt), cur_buf.eq(nxt_buf), cur_valid.eq(1), chunk.eq(0), group.eq(0),
                         last_chunk.eq(nxt.chunks == 1), last_group.eq(nxt.groups == 1), nxt_valid.eq(0)]

        # --- accept: a cmd enters the free next-tile slot (or the one emptied this cycle); with
        # load it writes the buffer the current tile does not read, else it reuses the last loaded
        m.d.comb += self.cmd.ready.eq(~nxt_valid | promote)
        with m.If(self.cmd.valid & self.cmd.ready):
            p = self.cmd.payload
            m.d.sync += [nxt.eq(p), nxt_valid.eq(1), nxt_loaded.eq(~p.load), lchunk.eq(0),
                         w_last.eq(p.chunks == 1), nxt_buf.eq(last_buf ^ p.load), last_buf.eq(last_buf ^ p.load)]

        # --- stage A: accept x, apply ReLU-with-zero-point, read the weight word ------
        # pipeline valid/first/last flags and the tile's bias travel with the data: stage A (issue),
        # B (products), tree levels, C = output
        va, fa, la = Signal(), Signal(), Signal()
        ba = Signal(bias_l)
        xa = Signal(data.ArrayLayout(unsigned(self.a_bits), L * N))
        # the (buffer, chunk) the next cycle issues from: this cycle's, stepped by an issue, or the
        # promoted tile's first chunk
        n_buf, n_chunk = Signal(), Signal.like(chunk)
        m.d.comb += [n_buf.eq(cur_buf), n_chunk.eq(chunk)]
        with m.If(fire_x):
            m.d.comb += n_chunk.eq(Mux(last_chunk, 0, chunk + 1))
        with m.If(promote):
            m.d.comb += [n_buf.eq(nxt_buf), n_chunk.eq(0)]
        wa = prefetched_word(m, rd, wr, wword, waddr(n_buf, n_chunk), en)   # the issued beat's weights
        with m.If(en):
            m.d.sync += [va.eq(fire_x), fa.eq(chunk == 0), la.eq(last_chunk), ba.eq(cur.bias)]
            for i in range(L * N):
                xv = self.x.payload[i]
                diff = Signal(signed(self.a_bits + 1), name=f"xd{i}")
                m.d.comb += diff.eq(xv - cur.x_zero)
                m.d.sync += xa[i].eq(Mux(cur.relu, Mux(diff[-1], 0, diff), xv))

        # --- stage B: products (replicas 2i, 2i+1 share one multiplier, rtl/dsp_pack.py) -------
        # leaves[l][lane][n] is the product of replica l; a high replica's leaf is the packed
        # product's hi_raw and its borrow bit waits in borrows[l][lane] to be a carry-in below.
        prod_shape = signed(self.a_bits + self.wint_bits + 1)
        vb, fb, lb = Signal(), Signal(), Signal()
        bb = Signal(bias_l)
        leaves = [[[None] * N for lane in range(M)] for l in range(L)]
        borrows = [[[] for lane in range(M)] for l in range(L)]
        with m.If(en):
            m.d.sync += [vb.eq(va), fb.eq(fa), lb.eq(la), bb.eq(ba)]
            for l in range(L):
                for lane in range(M):
                    for n in range(N):
                        w = wa[lane * N + n]
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
        vt, ft, lt, bt = vb, fb, lb, bb
        valids = [va, vb]
        width = prod_shape.width
        for lev in range(N.bit_length() - 1):
            width += 1
            nlev = []
            for l in range(L):
                row = []
                for lane in range(M):
                    ins, pend = level[l][lane], borrows[l][lane]
                    sums = []
                    for j in range(0, len(ins), 2):
                        s = Signal(signed(width), name=f"t{lev}_{l}_{lane}_{j // 2}")
                        add = ins[j] + ins[j + 1]
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
                nlev.append(row)
            level = nlev
            if cfg.tree_pipeline:
                v2, f2, l2 = Signal(name=f"vt{lev}"), Signal(name=f"ft{lev}"), Signal(name=f"lt{lev}")
                b2 = Signal(bias_l, name=f"bt{lev}")
                with m.If(en):
                    m.d.sync += [v2.eq(vt), f2.eq(ft), l2.eq(lt), b2.eq(bt)]
                vt, ft, lt, bt = v2, f2, l2, b2
                valids.append(v2)

        # --- stage C: accumulate; the last chunk of a pixel group goes to the output ---
        accs = [[Signal(acc_shape, name=f"acc{l}_{lane}") for lane in range(M)] for l in range(L)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(en & vt):
            for l in range(L):
                for lane in range(M):
                    base = Mux(ft, bt[lane], accs[l][lane])
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

        # busy: a tile is accepted and has not handed its last result to the output register
        m.d.comb += self.busy.eq(nxt_valid | cur_valid | Cat(*valids).any() | self.o.valid)
        return m
