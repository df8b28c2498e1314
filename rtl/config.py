"""The one accelerator configuration, read by rtl/, pysim/ and synthesis alike.

Terminology follows the Trio-ViT paper: parallelism (M x N + S x T) x L.

* MAT engine: ``mat_lanes`` (M) lanes, each a row of ``mat_mults`` (N)
  multipliers feeding one adder tree and one accumulator.  Input channels are
  reduced inside a lane, output channels are spread across lanes and the
  input vector is broadcast to every lane.
* R-MAC engine: an ``rmac_rows`` x ``rmac_cols`` (S x T) array of
  multiply-accumulate PEs for depthwise convolution (and pointwise work when
  the MAT engine is busy).
* ``replicas`` (L): both engines are instantiated L times and work on
  different output pixels / tokens.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AccelConfig:
    name: str = "custom"
    # --- compute -----------------------------------------------------------
    mat_lanes: int = 8          # M: output channels in parallel
    mat_mults: int = 8          # N: input channels per lane (adder-tree width)
    rmac_rows: int = 8          # S
    rmac_cols: int = 8          # T
    replicas: int = 16          # L: copies of both engines (pixel parallelism)
    mults_per_dsp: int = 2      # two int8 products packed per DSP48E2
    # --- data widths ---------------------------------------------------------
    act_bits: int = 8           # stored activations (unsigned, with zero point)
    weight_bits: int = 8        # signed symmetric weights
    acc_bits: int = 32          # accumulators
    mult_bits: int = 31         # requantization multiplier magnitude bits
    shift_bits: int = 6         # requantization right shift (0..63)
    log2_code_bits: int = 4     # attention divisor exponent code
    # --- normalization units (rtl/requant.py and friends) ----------------------
    # Depth of the per-channel parameter tables (M, n per channel): the widest
    # tensor a requantizer serves (B3's head conv has 2560 output channels).
    norm_max_channels: int = 2560
    # Zero points are signed 16-bit parameters (golden/SPEC.md section 0): filter-wise
    # shifting moves per-channel output zero points off the code range (e.g. -1239).
    zero_point_bits: int = 16
    # --- compute engines' local buffers (rtl/mat_engine.py, rtl/rmac_engine.py) --
    # Weight buffer depth in words: the MAT engine holds a tile of mat_lanes
    # output channels x (mat_mults * mat_wbuf_words) reduction taps; the R-MAC
    # engine holds rmac_wbuf_words taps of rmac_cols channels.
    mat_wbuf_words: int = 256
    rmac_wbuf_words: int = 256
    # --- memory --------------------------------------------------------------
    act_buffer_kib: int = 512   # on-chip activation buffer (ping-pong total)
    weight_buffer_kib: int = 256
    dram_bytes_per_cycle: float = 96.0  # 19.2 GB/s at 200 MHz
    # --- timing --------------------------------------------------------------
    clock_mhz: float = 200.0
    # Fabric pipeline stages of a lane's adder tree (log2(mat_mults) when every
    # level is registered); pysim uses this for fill/drain latency.
    tree_pipeline: bool = True
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        for f in ("mat_lanes", "mat_mults", "rmac_rows", "rmac_cols", "replicas", "mults_per_dsp"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"AccelConfig.{f} must be a positive integer, got {v!r}")
        if self.mat_mults & (self.mat_mults - 1):
            raise ValueError(f"AccelConfig.mat_mults must be a power of two (adder tree), got {self.mat_mults}")
        if not 2 <= self.act_bits <= 16 or not 2 <= self.weight_bits <= 8:
            raise ValueError(f"unsupported widths: act_bits={self.act_bits} (2..16), weight_bits={self.weight_bits} (2..8)")
        if self.acc_bits < 16:
            raise ValueError(f"acc_bits={self.acc_bits} is too narrow for any layer")

    # --- derived quantities ---------------------------------------------------
    @property
    def mat_multipliers(self) -> int:
        return self.mat_lanes * self.mat_mults * self.replicas

    @property
    def rmac_multipliers(self) -> int:
        return self.rmac_rows * self.rmac_cols * self.replicas

    @property
    def multipliers(self) -> int:
        return self.mat_multipliers + self.rmac_multipliers

    @property
    def dsps(self) -> int:
        return -(-self.multipliers // self.mults_per_dsp)

    @property
    def peak_gops(self) -> float:
        """Peak throughput, counting a MAC as two operations (as the paper does)."""
        return 2 * self.multipliers * self.clock_mhz * 1e6 / 1e9

    @property
    def dram_gbps(self) -> float:
        return self.dram_bytes_per_cycle * self.clock_mhz * 1e6 / 1e9

    def replace(self, **kw) -> "AccelConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(multipliers=self.multipliers, dsps=self.dsps, peak_gops=self.peak_gops)
        return d

    def key(self) -> str:
        """Stable short hash for build folders (one folder per configuration)."""
        import hashlib
        d = dataclasses.asdict(self)
        d.pop("extra", None)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


PRESETS: dict[str, AccelConfig] = {
    # The paper's budget: (8x8 + 8x8) x 16 = 2,048 multipliers, 200 MHz, 819.2 GOPS peak.
    "paper": AccelConfig(name="paper"),
    # Whole ZCU102 (XCZU9EG, 2,520 DSP48E2), two int8 products per DSP, ~19 GB/s DDR4.
    # 5,040 multipliers: (8x16 + 8x8) x 26 = 4,992 fits and keeps power-of-two trees.
    "zcu102": AccelConfig(name="zcu102", mat_lanes=8, mat_mults=16, rmac_rows=8, rmac_cols=8,
                          replicas=26, act_buffer_kib=2048, weight_buffer_kib=1024,
                          dram_bytes_per_cycle=96.0),
    # Small shapes for fast RTL simulation in tests.
    "tiny": AccelConfig(name="tiny", mat_lanes=2, mat_mults=4, rmac_rows=2, rmac_cols=2, replicas=1,
                        act_buffer_kib=16, weight_buffer_kib=16),
    "small": AccelConfig(name="small", mat_lanes=4, mat_mults=8, rmac_rows=4, rmac_cols=4, replicas=2,
                         act_buffer_kib=64, weight_buffer_kib=64),
}


def get_preset(name: str) -> AccelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown accelerator preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
