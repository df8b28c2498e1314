"""Every integer width and code range of the machine, derived from the configuration in one place.

golden/SPEC.md section 0 defines what the formats mean; this module says how
wide each one is for a given :class:`~arch.config.AccelConfig`.  golden/ops.py
checks its operands against :data:`DEFAULT`, golden/convert.py clamps every
output to the code range of the tensor's own format, rtl/ sizes its ports from
:func:`formats`, and :func:`arch.ir.check_formats` refuses a quantized model
whose formats a configuration cannot execute.
"""
from __future__ import annotations

import functools
from fractions import Fraction
from dataclasses import dataclass

import numpy as np

from .config import AccelConfig


@dataclass(frozen=True)
class IntFormat:
    """``bits``-bit integers: unsigned ``[0, 2^b - 1]``; signed full ``[-2^(b-1), 2^(b-1) - 1]``;
    signed narrow (``narrow=True``, symmetric) ``[-(2^(b-1) - 1), 2^(b-1) - 1]``."""
    bits: int
    signed: bool
    narrow: bool = False

    def __post_init__(self):
        if not isinstance(self.bits, int) or self.bits < 1:
            raise ValueError(f"an integer format needs a positive bit count, got {self.bits!r}")

    @property
    def lo(self) -> int:
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + int(self.narrow)

    @property
    def hi(self) -> int:
        return (1 << (self.bits - int(self.signed))) - 1

    @property
    def bytes(self) -> int:
        """Bytes of one stored value (whole bytes, little-endian)."""
        return -(-self.bits // 8)

    @property
    def numpy_dtype(self) -> np.dtype:
        """The narrowest numpy integer type that holds every value."""
        for b, s, u in ((8, np.int8, np.uint8), (16, np.int16, np.uint16), (32, np.int32, np.uint32)):
            if self.bits <= b:
                return np.dtype(s if self.signed else u)
        return np.dtype(np.int64)

    def pack(self, values, what: str = "values") -> np.ndarray:
        """``values`` as the bytes memory holds them (little-endian, ``numpy_dtype`` wide), checked."""
        a = np.asarray(values, dtype=np.int64).reshape(-1)
        self.check(a, what)
        return a.astype(self.numpy_dtype).view(np.uint8)

    def unpack(self, raw, count: int) -> np.ndarray:
        """``count`` values from the bytes ``pack`` wrote (int64)."""
        dt = self.numpy_dtype
        buf = np.frombuffer(bytes(raw), np.uint8) if isinstance(raw, (bytes, bytearray)) else np.asarray(raw, np.uint8)
        return buf[:count * dt.itemsize].view(dt).astype(np.int64)

    def fits_in(self, other: "IntFormat") -> bool:
        """Every value of this format is a value of ``other``."""
        return other.lo <= self.lo and self.hi <= other.hi

    def check(self, a, what: str) -> None:
        """Raise ``ValueError`` naming ``what`` when any value of ``a`` lies outside the format."""
        a = np.asarray(a)
        if a.size and (int(a.min()) < self.lo or int(a.max()) > self.hi):
            raise ValueError(f"{what}: values [{int(a.min())}, {int(a.max())}] exceed {self.describe()}")

    def describe(self) -> str:
        kind = "signed narrow" if self.narrow else "signed" if self.signed else "unsigned"
        return f"{self.bits}-bit {kind} [{self.lo}, {self.hi}]"


def activation(bits: int) -> IntFormat:
    """Stored activations: unsigned codes with a zero point (SPEC 0)."""
    return IntFormat(bits, signed=False)


def weight(bits: int) -> IntFormat:
    """Weights: signed symmetric, narrow range, no zero point (SPEC 0)."""
    return IntFormat(bits, signed=True, narrow=True)


def tensor_format(bits: int, signed: bool) -> IntFormat:
    """The code range of a quantized tensor as quantized.pt describes it (signed tensors are symmetric)."""
    return IntFormat(int(bits), bool(signed), narrow=bool(signed))


@dataclass(frozen=True)
class Formats:
    """The machine's formats for one configuration (field meanings: golden/SPEC.md section 0)."""
    act: IntFormat            # activation codes, pre-activations, q / k / v, k-sum
    weight: IntFormat         # MAC weights
    acc: IntFormat            # every MAC accumulator
    mult: IntFormat           # requantization multiplier M (normalised to [2^(b-1), 2^b) or 0)
    shift: IntFormat          # right shifts n (and n_o + e in the divider)
    zero_point: IntFormat     # zero points (padding codes lie in the activation range)
    kv: IntFormat             # attention k^T v codes
    log2_code: IntFormat      # the divisor's exponent code e - e_lo
    logits: IntFormat         # classifier output codes
    t3: IntFormat             # hardswish knee
    ln_g: IntFormat           # LayerNorm per-channel gain G
    ln_b: IntFormat           # LayerNorm per-channel bias B
    ln_eps: IntFormat         # LayerNorm epsilon in variance units (eps C^2 / s_x^2 <= 2^40)
    ln_frac_bits: int         # F: fractional bits of the normalised value
    ln_recip_bits: int        # K: bits of the reciprocal square root

    @property
    def shift_max(self) -> int:
        return self.shift.hi

    @property
    def mult_norm(self) -> int:
        """The lower end of a normalised multiplier, 2^(mult_bits - 1)."""
        return 1 << (self.mult.bits - 1)

    @property
    def hswish_product(self) -> IntFormat:
        """k * clamp(k + t3, 0, 2 t3) with |k| < 2^act_bits: the accumulator (SPEC 3)."""
        return self.acc

    @property
    def residual_sum_bits(self) -> int:
        """Ma (a - z_a) + Mb (b - z_b): two (mult + act + 1)-bit products and their sum (SPEC 4)."""
        return self.mult.bits + self.act.bits + 2 + 1

    @property
    def ln_var_bits(self) -> int:
        """The LayerNorm unit's variance datapath (C sum d^2 - S1^2 + eps, SPEC 7): 64-bit."""
        return 64


@functools.lru_cache(maxsize=64)
def formats(cfg: AccelConfig) -> Formats:
    """Every format of ``cfg`` (cached per configuration)."""
    t3_bits = cfg.acc_bits - cfg.act_bits - 2
    if t3_bits < 1:
        raise ValueError(f"acc_bits={cfg.acc_bits} leaves no room for the hardswish knee with act_bits={cfg.act_bits}")
    return Formats(
        act=activation(cfg.act_bits),
        weight=weight(cfg.weight_bits),
        acc=IntFormat(cfg.acc_bits, signed=True),
        mult=IntFormat(cfg.mult_bits, signed=False),
        shift=IntFormat(cfg.shift_bits, signed=False),
        zero_point=IntFormat(cfg.zero_point_bits, signed=True),
        kv=IntFormat(cfg.act_bits, signed=True, narrow=True),
        log2_code=IntFormat(cfg.log2_code_bits, signed=False),
        logits=IntFormat(cfg.logit_bits, signed=True),
        t3=IntFormat(t3_bits, signed=False),
        ln_g=IntFormat(cfg.ln_g_bits, signed=True, narrow=True),
        ln_b=IntFormat(cfg.ln_b_bits, signed=True),
        ln_eps=IntFormat(41, signed=True),
        ln_frac_bits=cfg.ln_frac_bits,
        ln_recip_bits=cfg.ln_recip_bits,
    )


DEFAULT: Formats = formats(AccelConfig())


# --- the attention divisor's rounding (golden/SPEC.md section 5.4) --------------------------------
# The divisor's values within an octave [2^e, 2^(e+1)), per count of mantissa bits: 0 gives Trio-ViT's
# powers of two; 1 adds (4/3) 2^e, so the output multiplier row of f = 1 holds 3/4 of f = 0's. On the
# proxy (W8A8, fake-quant, 2,276 images) top-1 agreement with float went 92.00% -> 94.07% with 4/3, and
# only to 93.32% with the uniform sqrt(2).
LOG2_STEPS = {0: (Fraction(1),), 1: (Fraction(1), Fraction(4, 3))}
LOG2_FRAC_BITS_MAX = max(LOG2_STEPS)


def _least_root(n: int, m: int) -> int:
    """The least integer x >= 0 with x^m >= n (n >= 0)."""
    x = int(round(n ** (1.0 / m))) if n else 0
    while x ** m < n:
        x += 1
    while x > 0 and (x - 1) ** m >= n:
        x -= 1
    return x


@functools.lru_cache(maxsize=8)
def log2_thresholds(frac_bits: int, p_bits: int = 31) -> tuple[tuple[int, ...], ...]:
    """``T[p][k]`` for ``p < p_bits`` and ``k < 2^frac_bits``: the least integer ``x`` with
    ``x >= 2^p sqrt(s_k s_(k+1))``, ``s = LOG2_STEPS[frac_bits] + (2,)``.

    For ``2^p <= x < 2^(p + 1)`` the step nearest ``x`` in log2 is ``#{k: x >= T[p][k]}`` (the last
    one is 2^(p+1), the next octave's first), exactly: the thresholds are irrational, so there are no
    ties. Frac 0 gives sqrt(2) 2^p, the plain rounding of log2.
    """
    if frac_bits not in LOG2_STEPS:
        raise ValueError(f"log2 divisor mantissa bits {frac_bits} must lie in 0..{LOG2_FRAC_BITS_MAX}")
    s = LOG2_STEPS[frac_bits] + (Fraction(2),)
    prods = [s[k] * s[k + 1] for k in range(len(s) - 1)]
    return tuple(tuple(_least_root(-(-(g.numerator << (2 * p)) // g.denominator), 2) for g in prods)
                 for p in range(p_bits))
