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

LAYERNORM_OUT_LATENCY = 7    # read, C d - S1, * R, shift, * G + B, shift by n_g, zero point + clamp


def layernorm_calc_cycles(recip_bits: int) -> int:
    """VAR (1) + DIV (2 RB + 1, one quotient bit a cycle) + SQRT0 (1) + SQRT (RB + 1) + latch R (1)."""
    return 1 + (2 * recip_bits + 1) + 1 + (recip_bits + 1) + 1


def layernorm_cycles_per_token(groups: int, recip_bits: int) -> int:
    """First input beat to last output beat of one token of ``groups`` beats, no stalls."""
    return 2 * groups + layernorm_calc_cycles(recip_bits) + LAYERNORM_OUT_LATENCY
