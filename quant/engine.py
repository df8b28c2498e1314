"""quantize(model, calibration batches, config) -> (quantized model, report): the engine in one call."""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn

from .calibrate import calibrate_activations, init_weight_quantizers, set_act_quant
from .config import QuantConfig
from .qmodel import QEfficientViT, build_qmodel
from .reconstruct import reconstruct
from .techniques import (apply_bias_correction, apply_migration, apply_head_equalization, apply_output_bias,
                         apply_projection_equalization, apply_shift, apply_stream_equalization,
                         collect_channel_stats, set_log2_ranges)


def _batches(images: torch.Tensor, bs: int):
    return [images[i:i + bs] for i in range(0, len(images), bs)]


def quantize(model: nn.Module, calib: Iterable, cfg: QuantConfig | None = None,
             on_stage: Callable[[str, QEfficientViT], None] | None = None,
             progress: bool = True) -> tuple[QEfficientViT, dict]:
    """Quantize a timm EfficientViT with the Trio-ViT techniques and BRECQ reconstruction.

    `calib` yields image tensors (or (images, labels) pairs). `on_stage(name, qmodel)`
    is called after the weight-only stage ("weight_only") and at the end ("full"),
    e.g. to evaluate accuracy. The model passed in is not modified, nor is torch's global RNG:
    every random draw comes from generators seeded with `cfg.seed`, so equal calls give equal results.
    """
    cfg = cfg or QuantConfig()
    t0 = time.time()
    gen = torch.Generator().manual_seed(cfg.seed)
    images = torch.cat([b[0] if isinstance(b, (tuple, list)) else b for b in calib])
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"calibration batches must be (N, 3, H, W) images, got {tuple(images.shape)}")
    batches = _batches(images, cfg.batch_size)
    qmodel = build_qmodel(copy.deepcopy(model).eval(), cfg.n_bits_a)
    report: dict = dict(config=cfg.to_dict(), techniques=cfg.techniques, num_calib=len(images))

    if cfg.stream_eq:  # first: it leaves every reader's output, hence migration's statistics, as they were
        apply_stream_equalization(qmodel, batches, cfg.stream_alpha)
    if cfg.head_eq:
        apply_head_equalization(qmodel, batches)
    if cfg.migration or cfg.shift or cfg.proj_eq:
        stats = collect_channel_stats(qmodel, batches, gen)
        if cfg.migration:
            apply_migration(qmodel, stats, cfg.migration_clip)
        if cfg.proj_eq:
            apply_projection_equalization(qmodel, stats, cfg.stream_alpha, centred=cfg.shift)
        if cfg.shift:
            apply_shift(qmodel, stats)
    if cfg.bias_correction:
        apply_bias_correction(qmodel, batches)
    fp_model = copy.deepcopy(qmodel)  # float reference (techniques applied: an exact identity)

    init_weight_quantizers(qmodel, cfg)
    calibrate_activations(qmodel, batches, cfg, gen)
    set_act_quant(qmodel, False)
    report["timing"] = {"calibration_s": time.time() - t0}

    if cfg.iters_w > 0:
        t = time.time()
        report["reconstruction_weight"] = reconstruct(qmodel, fp_model, images, cfg, "weight", progress)
        report["timing"]["weight_reconstruction_s"] = time.time() - t
    if on_stage:
        on_stage("weight_only", qmodel)

    if cfg.act_quant:
        set_act_quant(qmodel, True)
        if cfg.log2:
            report["log2_ranges"] = set_log2_ranges(qmodel, batches[:4], cfg.log2_bits, cfg.log2_clamp,
                                                      cfg.log2_frac)
        if cfg.iters_a > 0:
            t = time.time()
            report["reconstruction_act"] = reconstruct(qmodel, fp_model, images, cfg, "act", progress)
            report["timing"]["act_reconstruction_s"] = time.time() - t
    if cfg.output_bias:  # last: it measures the means of the finished network
        t = time.time()
        apply_output_bias(qmodel, fp_model, batches, progress)
        report["timing"]["output_bias_s"] = time.time() - t
    report["block_sqnr_db"] = block_sqnr(fp_model, qmodel, batches[:2])
    report["timing"]["total_s"] = time.time() - t0
    qmodel.eval()
    if on_stage:
        on_stage("full", qmodel)
    return qmodel, report


@torch.no_grad()
def block_sqnr(fp_model: QEfficientViT, qmodel: QEfficientViT, batches) -> dict[str, float]:
    """Output SQNR (dB) of every block, float vs quantized model run end to end on the same images."""
    sig: dict[str, float] = {}
    noise: dict[str, float] = {}
    for x in batches:
        a, b = fp_model.input_q(x), qmodel.input_q(x)  # InputQuant scales by std even when disabled
        for fb, qb in zip(fp_model.blocks, qmodel.blocks):
            a, b = fb(a), qb(b)
            sig[qb.name] = sig.get(qb.name, 0.0) + a.pow(2).sum().item()
            noise[qb.name] = noise.get(qb.name, 0.0) + (a - b).pow(2).sum().item()
    return {k: (10 * math.log10(sig[k] / noise[k]) if noise[k] > 0 else float("inf")) for k in sig}
