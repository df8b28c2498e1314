"""Initial quantizer ranges: weights per channel and activations per tensor, by Lp search."""
from __future__ import annotations

from collections.abc import Iterable

import torch

from .config import QuantConfig
from .qmodel import InputQuant, QEfficientViT, QHead
from .quantizers import ActQuantizer, WeightQuantizer


def head_and_stem_ops(qmodel: QEfficientViT):
    """The first conv and the last linear (8-bit unless --disable_8bit_head_stem)."""
    head = qmodel.blocks[-1]
    assert isinstance(head, QHead)
    return qmodel.blocks[0].ops[0], head.fc2


def init_weight_quantizers(qmodel: QEfficientViT, cfg: QuantConfig) -> None:
    first, last = head_and_stem_ops(qmodel)
    for op in qmodel.weight_ops():
        bits = 8 if cfg.keep_8bit_head_stem and op in (first, last) else cfg.n_bits_w
        op.wq = WeightQuantizer(op.weight, bits, cfg.weight_symmetric, cfg.channel_wise, cfg.p)
        op.wq.enabled = True


def learnable_act_quantizers(module: torch.nn.Module) -> list[ActQuantizer]:
    return [q for q in module.modules() if isinstance(q, ActQuantizer) and not isinstance(q, InputQuant)]


@torch.no_grad()
def calibrate_activations(qmodel: QEfficientViT, batches: Iterable[torch.Tensor], cfg: QuantConfig,
                          generator: torch.Generator) -> None:
    """Observe float activations at every quantizer, then fit each by Lp search (subsampling with `generator`)."""
    quantizers = learnable_act_quantizers(qmodel)
    head = qmodel.blocks[-1]
    for q in quantizers:
        if q is head.ln.out_q and cfg.keep_8bit_head_stem:
            q.bits = 8  # the last linear's input
        elif q.name.endswith(".pre"):
            q.bits = cfg.preact_bits
        elif q is not head.fc2.out_q:
            q.bits = cfg.n_bits_a
        q.enabled, q.observing, q.generator = False, True, generator
    w_states = [(op.wq, op.wq.enabled) for op in qmodel.weight_ops() if op.wq is not None]
    for wq, _ in w_states:
        wq.enabled = False
    try:
        for x in batches:
            qmodel(x)
        for q in quantizers:
            q.calibrate(cfg.p)
    finally:
        for q in quantizers:
            q.observing, q.generator = False, None
        for wq, en in w_states:
            wq.enabled = en


def set_act_quant(qmodel: QEfficientViT, enabled: bool) -> None:
    for q in qmodel.act_quantizers():
        q.enabled = enabled
