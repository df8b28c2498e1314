"""BRECQ-style block reconstruction: AdaRound for weights, then learned activation steps.

Each block sees the *quantized* model's input to it and is fitted to the
float model's output of that block (MSE), one block at a time.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from tqdm import tqdm

from .calibrate import learnable_act_quantizers
from .config import QuantConfig
from .qmodel import QEfficientViT, QOp


def _run(block: nn.Module, x: torch.Tensor, bs: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([block(x[i:i + bs]) for i in range(0, len(x), bs)])


def _rec_loss(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    # Squared error summed over features, averaged over the batch (BRECQ's "mse" with p = 2).
    return (pred - tgt).pow(2).reshape(len(pred), -1).sum(1).mean()


def _anneal(it: int, iters: int, cfg: QuantConfig) -> float | None:
    """AdaRound's b schedule: no rounding loss during warm-up, then b from b_start down to b_end."""
    start = int(cfg.warmup * iters)
    if it < start:
        return None
    t = (it - start) / max(1, iters - start)
    return cfg.b_end + (cfg.b_start - cfg.b_end) * max(0.0, 1 - t)


def reconstruct(qmodel: QEfficientViT, fp_model: QEfficientViT, images: torch.Tensor, cfg: QuantConfig,
                stage: str, progress: bool = True) -> list[dict]:
    """Reconstruct every block in order. stage 'weight': AdaRound; stage 'act': activation steps."""
    iters = cfg.iters_w if stage == "weight" else cfg.iters_a
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():  # InputQuant scales by std (folded into the stem) even when disabled
        x_q, x_fp = qmodel.input_q(images), fp_model.input_q(images)
    log = []
    bar = tqdm(list(zip(qmodel.blocks, fp_model.blocks)), desc=f"reconstruct {stage}", unit="block",
               disable=not progress, leave=False)
    for qb, fb in bar:
        tgt = _run(fb, x_fp, cfg.batch_size)
        x_in = x_q if cfg.rec_input == "quant" else x_fp

        def full_pass() -> tuple[float, torch.Tensor]:  # the block's loss and output on every calibration image
            y = _run(qb, x_in, cfg.batch_size)
            return _rec_loss(y, tgt).item(), y

        start_err, start_out = full_pass()
        if stage == "weight":
            ops = [m for m in qb.modules() if isinstance(m, QOp) and m.wq is not None]
            for op in ops:
                op.wq.init_adaround(op.weight)
            params = [op.wq.alpha for op in ops]
            opt = torch.optim.Adam(params, lr=1e-3)
        else:
            qs = [q for q in learnable_act_quantizers(qb) if q.enabled]
            params = [q.scale for q in qs]
            opt = torch.optim.Adam(params, lr=cfg.lr)
        # The step-size gradient (LSQ) ignores what clipping a few large values costs and can
        # walk into it; activation steps are checked on all calibration images every quarter.
        best = (start_err, [p.detach().clone() for p in params], start_out)
        check = max(1, iters // 4)
        first = last = None
        qb.train(False)
        for it in range(iters):
            idx = torch.randint(0, len(images), (cfg.rec_batch_size,), generator=g)
            out = qb(x_in[idx])
            loss = _rec_loss(out, tgt[idx])
            if stage == "weight":
                b = _anneal(it, iters, cfg)
                if b is not None:
                    loss = loss + cfg.weight * sum(op.wq.round_loss(b) for op in ops)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            first = loss.item() if first is None else first
            last = loss.item()
            if stage == "act" and ((it + 1) % check == 0 or it + 1 == iters):
                err, y = full_pass()
                if err < best[0]:
                    best = (err, [p.detach().clone() for p in params], y)
        kept = True
        if stage == "weight":
            for op in ops:
                op.wq.harden()
                op.wq.alpha.requires_grad_(False)
            err, y = full_pass()
            if err > start_err:
                kept, y = False, start_out  # AdaRound ended worse than rounding to nearest: keep nearest
                for op in ops:
                    op.wq.mode, op.wq.alpha = "nearest", None
        else:
            kept, y = best[0] < start_err, best[2]
            with torch.no_grad():
                for p, v in zip(params, best[1]):
                    p.copy_(v)
            for q in qs:
                q.scale.requires_grad_(False)
        # y is the block's output in the state it keeps; fed the quantized input, that is the next x_q
        x_q = y if cfg.rec_input == "quant" else _run(qb, x_q, cfg.batch_size)
        x_fp = tgt
        err = _rec_loss(x_q, tgt).item()
        log.append(dict(block=qb.name, start_error=start_err, first_loss=first, last_loss=last, rec_error=err,
                        kept=kept))
        bar.set_postfix(block=qb.name, err=f"{err:.3g}")
    return log
