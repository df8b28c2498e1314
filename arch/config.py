"""The one accelerator configuration, read by rtl/, pysim/, golden/ and synthesis alike.

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

Every width and code range the machine uses is derived from these fields in
:mod:`arch.formats`; every cycle formula in :mod:`arch.cost`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

_POSITIVE = ("mat_lanes", "mat_mults", "rmac_rows", "rmac_cols", "replicas", "mat_wbuf_words", "rmac_wbuf_words",
             "act_buffer_kib", "weight_buffer_kib", "norm_max_channels")


@dataclass(frozen=True)
class AccelConfig:
    name: str = "custom"
    # --- compute -----------------------------------------------------------
    mat_lanes: int = 8          # M: output channels in parallel
    mat_mults: int = 8          # N: input channels per lane (adder-tree width)
    rmac_rows: int = 8          # S
    rmac_cols: int = 8          # T
    replicas: int = 16          # L: copies of both engines (pixel parallelism)
    # --- data widths (arch/formats.py derives every code range from these) ----
    act_bits: int = 8           # stored activations (unsigned, with zero point); also the pre-activation
    weight_bits: int = 8        # signed symmetric weights
    acc_bits: int = 32          # accumulators
    mult_bits: int = 31         # requantization multiplier magnitude bits
    shift_bits: int = 6         # requantization right shift (0..63)
    log2_code_bits: int = 4     # attention divisor exponent code
    logit_bits: int = 16        # signed logits of the classifier
    # Zero points are signed 16-bit parameters (golden/SPEC.md section 0): filter-wise
    # shifting moves per-channel output zero points off the code range (e.g. -1239).
    zero_point_bits: int = 16
    # LayerNorm unit (golden/SPEC.md section 7): fractional bits F of the normalised
    # value, reciprocal bits K, the per-channel gain G and bias B widths.
    ln_frac_bits: int = 10
    ln_recip_bits: int = 31
    ln_g_bits: int = 16
    ln_b_bits: int = 48
    # --- normalization units (rtl/requant.py and friends) ----------------------
    # Depth of the per-channel parameter tables (M, n per channel): the widest
    # tensor a requantizer serves (B3's head conv has 2560 output channels).
    norm_max_channels: int = 2560
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
    # The DMA's AXI4 master port (rtl/dma.py): data width (one beat moves axi_data_bits / 8
    # bytes), byte-address width, ID width (the DMA drives ID 0; the port keeps the width).
    axi_data_bits: int = 128
    axi_addr_bits: int = 40
    axi_id_bits: int = 1
    # --- timing --------------------------------------------------------------
    clock_mhz: float = 200.0
    # Fabric pipeline stages of a lane's adder tree (log2(mat_mults) when every
    # level is registered); arch/cost.py uses this for fill/drain latency.
    tree_pipeline: bool = True
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        for f in _POSITIVE:
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"AccelConfig.{f} must be a positive integer, got {v!r}")
        if self.mat_mults & (self.mat_mults - 1):
            raise ValueError(f"AccelConfig.mat_mults must be a power of two (adder tree), got {self.mat_mults}")
        if not 2 <= self.act_bits <= 16 or not 2 <= self.weight_bits <= 8:
            raise ValueError(f"unsupported widths: act_bits={self.act_bits} (2..16), weight_bits={self.weight_bits} (2..8)")
        if self.acc_bits < 16:
            raise ValueError(f"acc_bits={self.acc_bits} is too narrow for any layer")
        if self.acc_bits + self.mult_bits + 1 > 64:
            raise ValueError(f"acc_bits={self.acc_bits} x mult_bits={self.mult_bits} exceeds the int64 product of "
                             "the requantizer (golden/SPEC.md section 1)")
        if not 1 <= self.log2_code_bits <= 8:
            raise ValueError(f"log2_code_bits={self.log2_code_bits} must lie in 1..8")
        if not 0 <= self.ln_frac_bits <= self.ln_recip_bits:
            raise ValueError(f"ln_frac_bits={self.ln_frac_bits} must lie in [0, ln_recip_bits={self.ln_recip_bits}]")
        for f, lo, hi in (("axi_data_bits", 32, 512), ("axi_addr_bits", 32, 64), ("axi_id_bits", 1, 16)):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"AccelConfig.{f} must be an integer in {lo}..{hi}, got {v!r}")
        # A power of two (AXI beat sizes are), at most 512 bits: the program format starts DRAM
        # segments on 64-byte boundaries (arch/program.py ALIGN), which the DMA requires of addresses.
        if self.axi_data_bits & (self.axi_data_bits - 1):
            raise ValueError(f"AccelConfig.axi_data_bits must be a power of two, got {self.axi_data_bits}")
        for f in ("clock_mhz", "dram_bytes_per_cycle"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"AccelConfig.{f} must be a positive finite number, got {v!r}")

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
        """DSP48E2 slices the compute engines synthesize to (rtl/synth_baseline.json holds the
        synthesized count; tests hold the two equal, and tb/test_dsp_pack.py counts the engines' ``*``).

        Two products that share a weight go through one DSP48E2 (rtl/dsp_pack.py, WP486) when
        the activations have at most 8 bits (the packed operand ``x_hi * 2^18 + x_lo`` must fit
        the 27-bit A port; with weight_bits <= 8 the weight operands, 10-bit ``w - w_zero`` in
        the MAT engine and int8 in the R-MAC engine, then always fit): the MAT engine pairs
        replicas (l, l+1), which share each weight word, so ``M*N*ceil(L/2)``; the R-MAC engine
        pairs pixels (s, s+1) of a replica, which share channel t's weight, so
        ``ceil(S/2)*T*L``. An odd L (S) leaves one replica (pixel) at one DSP per multiplier;
        wider activations take one DSP per multiplier (``multipliers``)."""
        if self.act_bits > 8:
            return self.multipliers
        return (self.mat_lanes * self.mat_mults * -(-self.replicas // 2)
                + -(-self.rmac_rows // 2) * self.rmac_cols * self.replicas)

    @property
    def peak_gops(self) -> float:
        """Peak throughput, counting a MAC as two operations (as the paper does)."""
        return 2 * self.multipliers * self.clock_mhz * 1e6 / 1e9

    @property
    def dram_gbps(self) -> float:
        return self.dram_bytes_per_cycle * self.clock_mhz * 1e6 / 1e9

    def max_replicas(self, dsp_budget: int) -> int:
        """The most replicas of this configuration's engines whose DSPs fit ``dsp_budget`` (0: none)."""
        L = 0
        while self.replace(replicas=L + 1).dsps <= dsp_budget:
            L += 1
        return L

    def replace(self, **kw) -> "AccelConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(multipliers=self.multipliers, dsps=self.dsps, peak_gops=self.peak_gops)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AccelConfig":
        """The inverse of :meth:`to_dict` (derived entries ignored); unknown fields are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - {"multipliers", "dsps", "peak_gops"}
        if unknown:
            raise ValueError(f"configuration has fields AccelConfig does not know: {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def key(self) -> str:
        """Stable short hash for build folders and module names (one per configuration)."""
        d = dataclasses.asdict(self)
        d.pop("extra", None)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


PRESETS: dict[str, AccelConfig] = {
    # The paper's budget: (8x8 + 8x8) x 16 = 2,048 multipliers, 200 MHz, 819.2 GOPS peak.
    # The R-MAC weight buffer holds 1,024 taps so that every pointwise conv of B0..B3 up to 1,024
    # input channels can take a share on the R-MAC array (B1-r224: 53.3% -> 58.4% MAC utilization
    # in pysim; 4 more RAMB36).
    "paper": AccelConfig(name="paper", rmac_wbuf_words=1024),
    # Whole ZCU102 (XCZU9EG, 2,520 DSP48E2, ~19 GB/s DDR4): (8x16 + 8x8) x 26 = 4,992
    # multipliers, two int8 products per DSP (rtl/dsp_pack.py): 2,496 DSP48E2.
    "zcu102": AccelConfig(name="zcu102", mat_lanes=8, mat_mults=16, rmac_rows=8, rmac_cols=8,
                          replicas=26, act_buffer_kib=2048, weight_buffer_kib=1024,
                          dram_bytes_per_cycle=96.0, rmac_wbuf_words=1024),
    # Small shapes for fast RTL simulation in tests.
    "tiny": AccelConfig(name="tiny", mat_lanes=2, mat_mults=4, rmac_rows=2, rmac_cols=2, replicas=1,
                        act_buffer_kib=16, weight_buffer_kib=16),
    "small": AccelConfig(name="small", mat_lanes=4, mat_mults=8, rmac_rows=4, rmac_cols=4, replicas=2,
                         act_buffer_kib=64, weight_buffer_kib=64),
}

# The FPGA the zcu102 preset targets: XCZU9EG.
ZCU102_DSPS = 2520
ZCU102_BRAM36 = 912


def get_preset(name: str) -> AccelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown accelerator preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
