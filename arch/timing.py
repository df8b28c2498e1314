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
REQUANT_LATENCY = 4          # multiply, round, shift, zero point + clamp
HSWISH_FRONT = 3             # pre-activation: subtract z_p, clamp to [-3, 3], x (x + 3)
DIVIDER_FRONT = 2            # leading-one detect of the divisor, variable shift
AVGPOOL_FRONT = 2            # accumulate over the feature map, hand over the sum
RESIDUAL_LATENCY = 5         # parameter read, (x - z) * M of both operands, sum, rounding shift, zero point + clamp

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
