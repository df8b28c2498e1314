"""Integer LayerNorm of the head (golden/SPEC.md section 7), one token at a time.

    d = x - z_x;  S1 = sum d;  V = C sum d^2 - S1^2 + eps_int
    R = isqrt(2^(2 RB) // max(V, 1))                     (about 2^RB / sqrt(V), RB = recip_bits)
    y[c] = rshift_round((C d[c] - S1) R, RB - frac_bits)
    out[c] = clamp(z_out + rshift_round(y[c] G[c] + B[c], n_g[c]), lo, hi)

The head applies LayerNorm once per image to one vector of ``C`` channels,
so this unit is sequential and small rather than fast:

1. ``ACC``: take the token's ``ceil(C / lanes)`` beats (one per cycle), store
   ``d`` in a token buffer (``lib.memory``) and accumulate ``S1`` and
   ``S2 = sum d^2``. Lanes past ``C`` in the last group must carry ``z_x``
   (``d = 0`` adds nothing). The beat flagged ``last`` ends the token.
2. ``VAR``: ``V`` (``LAYERNORM_VAR_CYCLES`` = 4 cycles: the products ``C S2``
   and ``S1^2`` as partial products and two adder levels, then their
   difference; one cycle held all of it, 15 ns on the ECP5).
3. ``DIV``: ``2^(2 RB) // max(V, 1)`` by restoring division, one quotient bit
   per cycle (``2 RB + 1`` cycles).
4. ``SQRT``: digit-by-digit integer square root, one result bit per cycle
   (``1 + RB + 1`` cycles), exact floor like golden's ``math.isqrt``; 1 cycle
   to latch ``R``.
5. ``OUT``: read the buffer group by group through a 13-stage stall pipeline
   (read; ``C d``; ``- S1``; ``* R`` in partial products and three adder
   levels; constant rounding shift; ``* G``; ``+ B``; the variable shift by
   ``n_g``, rounding and zero point, saturation: requant's ``round_clamp``) and
   return to ``ACC`` when the last output beat has left.

Streams: ``i`` beats carry ``x`` (``lanes`` codes), ``group`` and ``last``;
``o`` beats carry ``q`` for groups ``0 .. G-1`` in order. ``prm`` writes a
group's per-channel ``G`` (signed 16-bit), ``B`` (signed 48-bit), ``n_g`` and
``z`` (the output zero point: per channel, as the following hardswish's
pre-activation is). Configuration ports: ``channels`` (C), ``z_x``,
``eps_int`` (41 bits), ``lo``, ``hi``.

Defaults follow golden/SPEC.md section 7: ``recip_bits`` RB = K = 31 (a 62-bit
dividend), ``frac_bits`` = F = 10; SPEC's finer variant K = 47, F = 16 is the
same hardware with wider registers (tested too).

Timing (no stalls): a token of ``G`` groups takes ``G`` input cycles, then
``calc_cycles(RB)`` = 4 + (2 RB + 1) + 1 + (RB + 1) + 1 = 3 RB + 8 cycles
(101 for RB = 31), then its ``G`` output beats leave one per cycle, the first
``OUT_LATENCY`` = 13 cycles after its read: ``cycles(G) = 2 G + 3 RB + 21``
from the first input beat to the last output beat inclusive (``cycles_per_token``;
2 G + 114 for RB = 31). The next token is accepted after the last output
beat of the previous one has left.
"""
from __future__ import annotations

import math

from amaranth import Module, Signal, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring, memory
from amaranth.lib.wiring import In, Out

from arch import timing
from arch.config import AccelConfig
from arch.formats import DEFAULT
from rtl.requant import StallPipe, group_bits, product_terms, round_clamp, sum_terms, table_depth

DEFAULT_RECIP_BITS = DEFAULT.ln_recip_bits   # SPEC 7's K: R = isqrt(2^(2K) // V)
DEFAULT_FRAC_BITS = DEFAULT.ln_frac_bits     # SPEC 7's F: fractional bits of y
EPS_BITS = 41        # eps_int <= 2^40




def calc_cycles(recip_bits: int = DEFAULT_RECIP_BITS) -> int:
    return timing.layernorm_calc_cycles(recip_bits)


def cycles_per_token(groups: int, recip_bits: int = DEFAULT_RECIP_BITS) -> int:
    return timing.layernorm_cycles_per_token(groups, recip_bits)


class LayerNorm(wiring.Component):
    CALC_CYCLES = calc_cycles()     # with the default recip_bits
    OUT_LATENCY = timing.LAYERNORM_OUT_LATENCY

    def __init__(self, config: AccelConfig, *, lanes: int | None = None, frac_bits: int | None = None,
                 recip_bits: int | None = None):
        frac_bits = config.ln_frac_bits if frac_bits is None else frac_bits
        recip_bits = config.ln_recip_bits if recip_bits is None else recip_bits
        if not 0 <= frac_bits <= recip_bits:
            raise ValueError(f"LayerNorm: frac_bits={frac_bits} must lie in [0, recip_bits={recip_bits}]")
        self.recip_bits = recip_bits
        self.config = config
        self.lanes = lanes or config.mat_lanes
        self.frac_bits = frac_bits
        self.depth = table_depth(config, self.lanes)
        self.group_bits = group_bits(self.depth)
        self.c_bits = config.norm_max_channels.bit_length()
        a = unsigned(config.act_bits)
        L = self.lanes
        self.in_layout = data.StructLayout({"x": data.ArrayLayout(a, L), "group": unsigned(self.group_bits),
                                            "last": 1})
        self.out_layout = data.StructLayout({"q": data.ArrayLayout(a, L)})
        self.row_layout = data.StructLayout({"g": data.ArrayLayout(signed(config.ln_g_bits), L),
                                             "b": data.ArrayLayout(signed(config.ln_b_bits), L),
                                             "n": data.ArrayLayout(unsigned(config.shift_bits), L),
                                             "z": data.ArrayLayout(signed(config.zero_point_bits), L)})
        self.prm_layout = data.StructLayout({"group": unsigned(self.group_bits), "row": self.row_layout})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "prm": In(stream.Signature(self.prm_layout)),
            "channels": In(unsigned(self.c_bits)),
            "z_x": In(a), "eps_int": In(unsigned(EPS_BITS)),
            "lo": In(a), "hi": In(a),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, L, ab = self.config, self.lanes, self.config.act_bits
        cb = self.c_bits
        db = ab + 1                                  # d = x - z_x, signed
        s1b = db + cb                                # |S1| <= (2^a - 1) C
        s2b = 2 * ab + cb                            # S2 <= C (2^a - 1)^2
        vb = max(2 * s1b, s2b + cb, EPS_BITS) + 2    # V < C S2 + eps_int
        RB = self.recip_bits
        qb = 2 * RB + 1                              # quotient of 2^(2 RB) // V
        rb = RB + 1                                  # R <= 2^RB

        # ---- token buffer and parameter table ----
        m.submodules.buf = buf = memory.Memory(shape=data.ArrayLayout(signed(db), L), depth=self.depth, init=[])
        bw, br = buf.write_port(), buf.read_port()
        m.submodules.table = table = memory.Memory(shape=self.row_layout, depth=self.depth, init=[])
        tw, tr = table.write_port(), table.read_port()
        m.d.comb += [self.prm.ready.eq(1), tw.addr.eq(self.prm.payload.group), tw.data.eq(self.prm.payload.row),
                     tw.en.eq(self.prm.valid)]

        s1 = Signal(signed(s1b))
        s2 = Signal(unsigned(s2b))
        groups = Signal(range(self.depth + 1))       # G of the current token
        v = Signal(unsigned(vb))
        # V's terms (C S2 >= S1^2), as partial products and adder levels that load every cycle
        free = StallPipe(m, 1)
        c_s2 = sum_terms(free, product_terms(free, self.channels, s2, "cs2"), timing.LAYERNORM_VAR_LEVELS, "cs2")
        s1_sq = sum_terms(free, product_terms(free, s1, s1, "s1sq"), timing.LAYERNORM_VAR_LEVELS, "s1sq")
        rem = Signal(unsigned(vb + 1))               # division remainder
        quo = Signal(unsigned(qb))
        step = Signal(range(qb + 1))
        srem = Signal(unsigned(qb))                  # square-root remainder
        root = Signal(unsigned(qb))
        sbit = Signal(unsigned(qb))
        recip = Signal(unsigned(rb))

        # pass-2 pipeline control
        issue = Signal()                             # a read is issued this cycle
        rd_addr = Signal(range(self.depth + 1))
        rd_next = Signal(range(self.depth + 1))      # rd_addr of the next cycle (the buffer reads it now)
        m.d.comb += rd_next.eq(rd_addr)
        out_left = Signal(range(self.depth + 1))     # output beats still to leave
        adv = Signal()
        pv = Signal(self.OUT_LATENCY)                # valid bits of stages 1..OUT_LATENCY (0 = the issue)
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.o.valid.eq(pv[-1])]
        with m.If(adv):
            m.d.sync += pv.eq(pv << 1 | issue)

        # d of the incoming beat, its lane sums
        d_in = [Signal(signed(db), name=f"d_in{k}") for k in range(L)]
        for k in range(L):
            m.d.comb += d_in[k].eq(self.i.payload.x[k] - self.z_x)
        sum_d = Signal(signed(db + L.bit_length()))
        sum_d2 = Signal(unsigned(2 * ab + L.bit_length()))
        m.d.comb += [sum_d.eq(sum(d_in)), sum_d2.eq(sum(d * d for d in d_in))]
        fire_in = self.i.valid & self.i.ready
        m.d.comb += [bw.addr.eq(self.i.payload.group), bw.en.eq(fire_in)]
        for k in range(L):
            m.d.comb += bw.data[k].eq(d_in[k])

        with m.FSM():
            with m.State("ACC"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(fire_in):
                    m.d.sync += [s1.eq(s1 + sum_d), s2.eq(s2 + sum_d2)]
                    with m.If(self.i.payload.last):
                        m.d.sync += [groups.eq(self.i.payload.group + 1), step.eq(0)]
                        m.next = "VAR"
            with m.State("VAR"):                 # C S2 and S1^2 go through their stages (S1, S2 held)
                m.d.sync += step.eq(step + 1)
                with m.If(step == timing.LAYERNORM_VAR_CYCLES - 2):
                    m.next = "VAR2"
            with m.State("VAR2"):
                m.d.sync += [v.eq(c_s2 - s1_sq + self.eps_int), rem.eq(0), quo.eq(0), step.eq(0)]
                m.next = "DIV"
            with m.State("DIV"):
                # the dividend 2^(2 RB) has a single 1, which enters at step 0
                den = Mux(v == 0, 1, v)
                shifted = Signal(unsigned(vb + 2))
                m.d.comb += shifted.eq(Mux(step == 0, 1, rem << 1))
                ge = shifted >= den
                m.d.sync += [rem.eq(Mux(ge, shifted - den, shifted)), quo.eq((quo << 1) | ge), step.eq(step + 1)]
                with m.If(step == qb - 1):
                    m.d.sync += step.eq(0)
                    m.next = "SQRT0"
            with m.State("SQRT0"):
                m.d.sync += [srem.eq(quo), root.eq(0), sbit.eq(1 << (2 * RB))]
                m.next = "SQRT"
            with m.State("SQRT"):
                # root has no bit at or below sbit's (the digit-by-digit invariant): root + sbit is an OR,
                # and one carry chain gives both the difference and the compare (ECP5 Fmax)
                trial, diff = Signal(unsigned(qb)), Signal(signed(qb + 1))
                m.d.comb += [trial.eq(root | sbit), diff.eq(srem - trial)]
                with m.If(~diff[-1]):
                    m.d.sync += [srem.eq(diff[:qb]), root.eq((root >> 1) + sbit)]
                with m.Else():
                    m.d.sync += root.eq(root >> 1)
                m.d.sync += [sbit.eq(sbit >> 2), step.eq(step + 1)]
                with m.If(step == RB):
                    m.next = "REC"
            with m.State("REC"):
                m.d.sync += [recip.eq(root), rd_addr.eq(0), out_left.eq(groups)]
                m.d.comb += rd_next.eq(0)
                m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += issue.eq(adv & (rd_addr < groups))
                with m.If(issue):
                    m.d.sync += rd_addr.eq(rd_addr + 1)
                    m.d.comb += rd_next.eq(rd_addr + 1)
                with m.If(self.o.valid & self.o.ready):
                    m.d.sync += out_left.eq(out_left - 1)
                    with m.If(out_left == 1):
                        m.d.sync += [s1.eq(0), s2.eq(0)]
                        m.next = "ACC"

        # ---- pass 2: the output stall pipeline (arch/timing.py's LAYERNORM_OUT_LATENCY stages) ----
        # No stage holds more than one multiplier or one wide carry chain (ECP5 Fmax). The token buffer
        # is read a cycle ahead (rd_next) and its word registered at stage 1; (C d - S1) R is requant's
        # partial products and adder levels; the parameter table is read a stage before y (the
        # address travels down the pipeline) and its row registered beside y, where y G begins.
        # Neither memory is written while a token goes out.
        pipe = StallPipe(m, adv)
        m.d.comb += br.addr.eq(rd_next)
        d1 = pipe.reg(br.data, "d1")                                              # 1
        shift_y = RB - self.frac_bits
        # |C d - S1| <= sqrt((C - 1) V) and R <= 2^RB / sqrt(V), so |y| <= sqrt(C - 1) 2^F + 1 (SPEC 7):
        # y fits this many bits (sign included), which keeps y * G to one DSP48E2.
        yb = ((math.isqrt(cfg.norm_max_channels - 1) + 1) << self.frac_bits).bit_length() + 1
        ab2 = max(yb + cfg.ln_g_bits, cfg.ln_b_bits) + 1           # y G + B
        y_stage = 1 + 2 + 1 + timing.LAYERNORM_PRODUCT_LEVELS + 1                # read, C d, - S1, * R, shift
        m.d.comb += [tr.addr.eq(pipe.delay(rd_addr, y_stage - 2, "tab_addr")), tr.en.eq(adv)]
        row = pipe.reg(tr.data, "row")                                            # 8: the beat's row
        for k in range(L):
            cd = pipe.reg(self.channels * d1[k], f"cd_{k}")                         # 2
            t = pipe.reg(cd - s1, f"t_{k}", signed(s1b + 2))                        # 3
            p = sum_terms(pipe, product_terms(pipe, t, recip, f"p_{k}"),            # 4 .. 7
                          timing.LAYERNORM_PRODUCT_LEVELS, f"p_{k}")
            y = pipe.reg(((p >> (shift_y - 1)) + 1) >> 1 if shift_y > 0 else p, f"y_{k}", signed(yb))  # 8
            yg = pipe.reg(y * row.g[k], f"yg_{k}")                                  # 9
            b9, n9, z9 = (pipe.reg(row[f][k], f"{f}9_{k}") for f in ("b", "n", "z"))
            a = pipe.reg(yg + b9, f"a_{k}", signed(ab2))                            # 10
            n10, z10 = pipe.reg(n9, f"n10_{k}"), pipe.reg(z9, f"z10_{k}")
            q = round_clamp(pipe, a, n10, z10, self.lo, self.hi, unsigned(cfg.act_bits), f"o{k}")  # 11 .. 13
            m.d.comb += self.o.payload.q[k].eq(q)
        return m
