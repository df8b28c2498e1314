"""QuantConfig: what the engine does, with the reference recipe's defaults."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class QuantConfig:
    n_bits_w: int = 8
    n_bits_a: int = 8
    channel_wise: bool = True
    act_quant: bool = True
    # "hardware": symmetric weights (what golden/ and the RTL run, see golden/SPEC.md);
    # "reference": the reference recipe's asymmetric weights.
    weight_symmetric: bool = True
    keep_8bit_head_stem: bool = True   # --disable_8bit_head_stem turns this off
    p: float = 2.4
    # Bits of the hardswish pre-activation (per channel, requantized from the accumulator and
    # consumed at once by the hardswish unit, never stored in a buffer).
    preact_bits: int = 8
    # Trio-ViT techniques
    migration: bool = True
    shift: bool = True
    log2: bool = True
    log2_bits: int = 4
    # 1: the divisor with a mantissa bit, {1, 4/3} 2^e (a second output multiplier row per column;
    # golden/SPEC.md 5.4); 0: powers of two, Trio-ViT's divisor
    log2_frac: int = 1
    log2_clamp: tuple[int, int] | None = None  # integer exponent range; None = calibrated
    migration_clip: tuple[float, float] = (0.1, 64.0)
    # Residual-stream equalization (per-channel scaling of each residual stream, folded into its
    # producers' requantization and its readers' filters; hardware-free) and its balance exponent
    stream_eq: bool = True
    stream_alpha: float = 1.0
    # Projection-input equalization: migration for each MBConv's projecting conv (hardware-free; off:
    # on the proxy it gained 0.1 dB of logit SQNR and lost 0.36 of top-1, 7 of 1,966 images)
    proj_eq: bool = False
    # Head equalization: LiteMLA's q, k and v rescaled per head, folded into qkv and proj (hardware-free)
    head_eq: bool = True
    # Expected-error bias correction of the weights' rounding (int32 biases only; hardware-free)
    bias_correction: bool = True
    # Empirical bias correction: each op's bias takes back the per-channel mean by which its output,
    # with everything before it quantized, misses the float output (int32 biases only; hardware-free).
    # Off: on the proxy (W8A8, whole val) it moved agreement 93.03 -> 93.23% and logit SQNR
    # 12.98 -> 13.32 dB, but top-1 81.13 -> 80.93 (4 of 1,966 images): within noise either way.
    output_bias: bool = False
    # BRECQ reconstruction
    iters_w: int = 20000
    weight: float = 0.01
    b_start: float = 20.0
    b_end: float = 2.0
    warmup: float = 0.2
    iters_a: int = 5000
    lr: float = 4e-4
    batch_size: int = 32
    # Images per reconstruction step. The reference takes 32; on a CPU a step costs about
    # linearly in it (B0, 2 cores: 0.38 + 0.68 s at 8, 1.1 + 2.7 s at 32 for weight + act).
    rec_batch_size: int = 8
    rec_input: str = "quant"  # block input during reconstruction: quantized model's ("quant") or float's
    seed: int = 1005

    def __post_init__(self):
        if not 2 <= self.n_bits_w <= 8:
            raise ValueError(f"--n_bits_w {self.n_bits_w} is not supported: weights take 2..8 bits")
        if not 2 <= self.n_bits_a <= 16:
            raise ValueError(f"--n_bits_a {self.n_bits_a} is not supported: activations take 2..16 bits")
        if not 2 <= self.preact_bits <= 16:
            raise ValueError(f"pre-activation bits {self.preact_bits} not supported (2..16)")
        if not 1 <= self.log2_bits <= 8:
            raise ValueError(f"log2 divisor code of {self.log2_bits} bits is not supported (1..8)")
        if self.log2_frac not in (0, 1):
            raise ValueError(f"log2 divisor mantissa bits {self.log2_frac} not supported (0 or 1)")
        if self.log2_clamp is not None:
            lo, hi = self.log2_clamp
            if hi - lo + 1 > 2 ** self.log2_bits or hi < lo:
                raise ValueError(f"log2 clamp [{lo}, {hi}] does not fit a {self.log2_bits}-bit code "
                                 f"(at most {2 ** self.log2_bits} exponents)")
        if not 0.0 <= self.stream_alpha <= 1.0:
            raise ValueError(f"--stream_alpha must be in [0, 1], got {self.stream_alpha}")
        if self.p <= 0:
            raise ValueError(f"--p must be positive, got {self.p}")
        if self.rec_input not in ("quant", "float"):
            raise ValueError(f"rec_input must be 'quant' or 'float', got {self.rec_input!r}")
        if self.rec_batch_size < 1 or self.batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        for f in ("iters_w", "iters_a"):
            if getattr(self, f) < 0:
                raise ValueError(f"--{f} must be >= 0")

    @property
    def techniques(self) -> list[str]:
        return [n for n, on in (("migration", self.migration), ("shift", self.shift), ("log2", self.log2)) if on]

    @property
    def corrections(self) -> list[str]:
        """The hardware-free corrections on (float identities or bias terms beside the three techniques)."""
        return [n for n, on in (("stream equalization", self.stream_eq), ("head equalization", self.head_eq),
                                ("projection-input equalization", self.proj_eq),
                                ("bias correction", self.bias_correction),
                                ("output bias correction", self.output_bias)) if on]

    @property
    def recipe(self) -> str:
        return "hardware" if self.weight_symmetric else "reference"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
