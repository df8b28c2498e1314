"""On-chip buffers and DRAM traffic of one fused group of layers.

The model of the memory system (all sizes from :class:`rtl.config.AccelConfig`):

* The activation buffer (``act_buffer_kib``) is a ping-pong pair: a group reads
  its input tensor from one half and writes its output to the other.  A tensor
  larger than a half does not stay on chip: the producer writes it to DRAM
  (a spill) and the consumer reads it back.
* Inside a fused group (expand 1x1 -> depthwise -> project 1x1 of an MBConv,
  or the aggregation's 5x5 depthwise -> grouped 1x1) the intermediate tensor
  only lives as a band of rows (the scheduler's band plus the ``k + stride``
  rows the consumer's window needs) in line buffers (a quarter of the
  activation buffer); a band that does not fit spills the whole tensor
  (written to DRAM and read back), which the scheduler weighs against
  cutting the layer into more, smaller bands.
* The weight buffer (``weight_buffer_kib``) is double-buffered: a layer whose
  int8 weights + per-channel parameters fit half of it is loaded once per
  frame while the previous layer computes; a bigger layer is split into
  output-channel passes, each loading its share of the weights once and
  re-reading the layer input (from DRAM when the input is not on chip).
* The network input (uint8 image) and the logits cross DRAM once.

DRAM moves ``dram_bytes_per_cycle`` bytes per accelerator cycle, overlapped
with compute (double buffering), so a group takes the longer of its compute
and its DRAM time; the report names the longer one as the bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rtl.config import AccelConfig


def act_half_bytes(cfg: AccelConfig) -> int:
    return cfg.act_buffer_kib * 1024 // 2


def band_budget_bytes(cfg: AccelConfig) -> int:
    return cfg.act_buffer_kib * 1024 // 4


def weight_half_bytes(cfg: AccelConfig) -> int:
    return cfg.weight_buffer_kib * 1024 // 2


@dataclass
class Traffic:
    """DRAM bytes of one group, by cause, and per layer (for the table)."""
    weights: int = 0
    act_in: int = 0
    act_out: int = 0
    spills: int = 0              # intermediate tensors and re-read inputs of weight passes
    per_layer: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.weights + self.act_in + self.act_out + self.spills

    def add(self, layer_name: str, cause: str, nbytes: int) -> None:
        if nbytes <= 0:
            return
        setattr(self, cause, getattr(self, cause) + nbytes)
        self.per_layer[layer_name] = self.per_layer.get(layer_name, 0) + nbytes


def weight_passes(cfg: AccelConfig, layer) -> int:
    """Output-channel passes needed for a layer's weights to fit half the weight buffer."""
    nbytes = layer.weight_bytes + layer.param_bytes
    half = weight_half_bytes(cfg)
    return max(1, -(-nbytes // half))


def band_bytes(lay, nb: int) -> int:
    """Line-buffer bytes of a fused intermediate cut into ``nb`` row bands: one band of
    the producer's output rows plus the rows its consumer's window reaches past it."""
    r = -(-lay.oh // max(1, min(nb, lay.oh)))
    rows = r + lay.extra.get("band_rows", 1)
    return min(rows, lay.oh) * lay.ow * lay.cout


def group_traffic(cfg: AccelConfig, group, input_on_chip: bool, output_on_chip: bool, nb: int = 1) -> Traffic:
    """DRAM traffic of one group (see the module docstring for the rules)."""
    t = Traffic()
    first, last = group.compute[0], group.compute[-1]
    if not input_on_chip:
        t.add(first.name, "act_in", group.in_bytes)
    if not output_on_chip:
        t.add(last.name, "act_out", group.out_bytes)
    for lay in group.compute:
        t.add(lay.name, "weights", lay.weight_bytes + lay.param_bytes)
        passes = weight_passes(cfg, lay)
        if passes > 1:
            # every extra pass streams the layer input again; on chip only for the group input
            on_chip = input_on_chip if lay is first else lay.in_bytes <= band_budget_bytes(cfg)
            if not on_chip:
                t.add(lay.name, "spills", (passes - 1) * lay.in_bytes)
    for lay in group.intermediates:
        # a fused intermediate lives in line buffers, one band at a time; a band that
        # does not fit sends the whole tensor through DRAM (written, read back)
        if band_bytes(lay, nb) > band_budget_bytes(cfg):
            t.add(lay.name, "spills", 2 * lay.out_bytes)
    for nbytes, what in group.kept_tensors:
        # tensors kept across a barrier (attention's q, k, v; the block input for the
        # residual add): charged to the group's last layer, which writes them
        if nbytes > act_half_bytes(cfg):
            t.add(last.name, "spills", 2 * nbytes)
    return t
