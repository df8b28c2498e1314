"""Pipeline constants of the engines and the streaming units, in one place.

The rtl/ components take their ``LATENCY`` and geometry limits from here and
arch/cost.py prices every machine operation with the same numbers, so the
cycle model cannot drift from the hardware (tests hold both to the cycles the
testbenches measure).
"""
from __future__ import annotations

# --- MAT engine (rtl/mat_engine.py) -----------------------------------------------------
# Double-buffered weights: a command waits in a one-deep slot while its weights load into the
# idle buffer; it starts issuing once they are in and the previous command has issued its
# last input beat (arch/cost.py's back_to_back has the whole formula).
MAT_ISSUE = 1                # the cmd handshake cycle of the first command of a sequence
MAT_START = 1                # a command that loads no weights starts one cycle after its handshake
                             # (one that loads: right after its last weight beat)
MAT_PIPE = 3                 # multiply register, accumulate, output register (after the tree levels)
MAT_GROUPS_BITS = 20         # the cmd's pixel-group count: up to 2^20 - 1 groups per tile

# --- R-MAC engine (rtl/rmac_engine.py) ----------------------------------------------------
KMAX = 5                     # largest kernel side (5x5 in LiteMLA's aggregation)
SMAX = 2                     # largest stride
PADMAX = 2                   # largest padding
RMAC_ISSUE = 1               # the cmd handshake cycle of the first command of a sequence
RMAC_START = 1               # as MAT_START; a command's first row beat is taken in its start cycle
RMAC_PIPE = 3                # PE input, multiply, accumulate/output

# --- streaming integer units --------------------------------------------------------------
# No stage holds more than one of a memory read, a multiplier, a wide carry chain and a
# variable shift (rtl/requant.py's helpers; the ECP5 place and route of rtl/fpga.py).
PRODUCT_STAGES = 3           # 18x18 partial products, then two adder levels (rtl/requant.py)
ROUND_STAGES = 3             # variable shift; rounding constant + zero point; saturation
TABLE_STAGES = 2             # parameter table read, its row registered before any arithmetic
REQUANT_LATENCY = TABLE_STAGES + PRODUCT_STAGES + ROUND_STAGES
HSWISH_FRONT = 6             # table read, row register, k = p - z_p, clamp(k + t3), k * factor: products, sum
DIVIDER_FRONT = 3            # leading-one detect of the divisor, sqrt(2) threshold compare, clamp to the code range
AVGPOOL_FRONT = 3            # partial sums read, registered, accumulated (forwarded across the two beats in flight)
RESIDUAL_LATENCY = TABLE_STAGES + 1 + PRODUCT_STAGES + ROUND_STAGES   # + the zero points off both operands

HSWISH_LATENCY = HSWISH_FRONT + REQUANT_LATENCY
DIVIDER_LATENCY = DIVIDER_FRONT + REQUANT_LATENCY
AVGPOOL_LATENCY = AVGPOOL_FRONT + REQUANT_LATENCY

# LayerNorm (rtl/layernorm.py): no stage holds more than one multiplier or wide carry chain
LAYERNORM_VAR_LEVELS = 2     # adder levels of C S2 and S1^2 (at most 4 partial products each)
LAYERNORM_VAR_CYCLES = 1 + LAYERNORM_VAR_LEVELS + 1           # partial products, levels, V = C S2 - S1^2 + eps
LAYERNORM_PRODUCT_LEVELS = 3  # adder levels of (C d - S1) R (up to 6 partial products: R of 48 bits)
# read, C d, - S1, * R (partial products, levels), constant shift, * G, + B; then requant's n_g, z, clamp
LAYERNORM_OUT_LATENCY = 1 + 2 + 1 + LAYERNORM_PRODUCT_LEVELS + 1 + 2 + ROUND_STAGES


def layernorm_calc_cycles(recip_bits: int) -> int:
    """VAR (products, adder levels, V) + DIV (2 RB + 1, one quotient bit a cycle) + SQRT0 (1)
    + SQRT (RB + 1) + latch R (1)."""
    return LAYERNORM_VAR_CYCLES + (2 * recip_bits + 1) + 1 + (recip_bits + 1) + 1


def layernorm_cycles_per_token(groups: int, recip_bits: int) -> int:
    """First input beat to last output beat of one token of ``groups`` beats, no stalls."""
    return 2 * groups + layernorm_calc_cycles(recip_bits) + LAYERNORM_OUT_LATENCY
