"""Pipeline timing of the streaming integer units, in one place.

The rtl/ components take their ``LATENCY`` from here and pysim/ prices their
operations with the same numbers, so the cycle model cannot drift from the
hardware.  Kept free of amaranth so that pysim imports without it.
"""
from __future__ import annotations

REQUANT_LATENCY = 4          # multiply, round, shift, zero point + clamp
HSWISH_FRONT = 3             # pre-activation: subtract z_p, clamp to [-3, 3], x (x + 3)
DIVIDER_FRONT = 2            # leading-one detect of the divisor, variable shift
AVGPOOL_FRONT = 2            # accumulate over the feature map, hand over the sum
RESIDUAL_LATENCY = 5         # parameter read, (x - z) * M of both operands, sum, rounding shift, zero point + clamp

HSWISH_LATENCY = HSWISH_FRONT + REQUANT_LATENCY
DIVIDER_LATENCY = DIVIDER_FRONT + REQUANT_LATENCY
AVGPOOL_LATENCY = AVGPOOL_FRONT + REQUANT_LATENCY

LAYERNORM_RECIP_BITS = 31    # golden LN_RECIP_BITS (SPEC 7's K)
LAYERNORM_OUT_LATENCY = 7    # read, C d - S1, * R, shift, * G + B, shift by n_g, zero point + clamp


def layernorm_calc_cycles(recip_bits: int = LAYERNORM_RECIP_BITS) -> int:
    """VAR (1) + DIV (2 RB + 1, one quotient bit a cycle) + SQRT0 (1) + SQRT (RB + 1) + latch R (1)."""
    return 1 + (2 * recip_bits + 1) + 1 + (recip_bits + 1) + 1


def layernorm_cycles_per_token(groups: int, recip_bits: int = LAYERNORM_RECIP_BITS) -> int:
    """First input beat to last output beat of one token of ``groups`` beats, no stalls."""
    return 2 * groups + layernorm_calc_cycles(recip_bits) + LAYERNORM_OUT_LATENCY
