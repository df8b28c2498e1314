"""On-chip buffers and DRAM traffic: the memory side of the machine, in one place.

The model (sizes from :class:`~arch.config.AccelConfig`):

* The activation buffer (``act_buffer_kib``): three quarters hold whole
  tensors between groups (allocated by the compiler over their live ranges,
  first fit); one quarter is the line buffers of fused groups.
* Inside a fused group (an MBConv's expand 1x1 -> depthwise -> project 1x1,
  or LiteMLA's aggregation 5x5 depthwise -> grouped 1x1) an intermediate
  tensor only lives as a band of rows (the band plus the ``k + stride`` rows
  the consumer's window needs) in the line buffers; a band that does not fit
  sends the whole tensor through DRAM (a spill: written, then read back).
* A tensor the activation buffer cannot hold for its live range lives in
  DRAM: its producer writes it, each consumer reads it.
* The weight buffer (``weight_buffer_kib``) is double-buffered: a layer whose
  int8 weights and parameter tables fit half of it is loaded once per frame
  while the previous layer computes; a bigger layer is split into
  output-channel passes, each re-reading the layer input (from DRAM when the
  input is not on chip).
* The network input (uint8 image) and the logits cross DRAM once.

DRAM moves ``dram_bytes_per_cycle`` bytes per accelerator cycle, overlapped
with compute (double buffering): a group takes the longer of its compute and
its DRAM time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import AccelConfig


def act_bytes(cfg: AccelConfig) -> int:
    """The activation buffer space for whole tensors (three quarters)."""
    return cfg.act_buffer_kib * 1024 * 3 // 4


def line_bytes(cfg: AccelConfig) -> int:
    """The line buffers of fused groups (one quarter of the activation buffer)."""
    return cfg.act_buffer_kib * 1024 // 4


def weight_half_bytes(cfg: AccelConfig) -> int:
    return cfg.weight_buffer_kib * 1024 // 2


def weight_passes(cfg: AccelConfig, nbytes: int) -> int:
    """Output-channel passes needed for ``nbytes`` of weights + parameters to fit half the weight buffer."""
    return max(1, -(-nbytes // weight_half_bytes(cfg)))


def band_bytes(rows: int, width: int, channels: int, bands: int, window_rows: int) -> int:
    """Line-buffer bytes of a fused intermediate of ``rows`` x ``width`` x ``channels`` cut into
    ``bands`` row bands: one band of the producer's rows plus the rows its consumer's window
    reaches past it (``window_rows``: k + stride for a depthwise consumer, else 1)."""
    r = -(-rows // max(1, min(bands, rows)))
    return min(r + window_rows, rows) * width * channels


@dataclass
class Traffic:
    """DRAM bytes of one group, by cause, and per op (for the tables)."""
    weights: int = 0
    act_in: int = 0
    act_out: int = 0
    spills: int = 0              # intermediates of fused groups and re-read inputs of weight passes
    per_op: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.weights + self.act_in + self.act_out + self.spills

    def add(self, op: int, cause: str, nbytes: int) -> None:
        if nbytes <= 0:
            return
        setattr(self, cause, getattr(self, cause) + nbytes)
        self.per_op[op] = self.per_op.get(op, 0) + nbytes
