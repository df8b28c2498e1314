"""Accuracy and label-free fidelity measures (top-1 agreement with the float model, logit SQNR)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from . import distributed as dist


def _top5(logits: torch.Tensor) -> torch.Tensor:
    """Indices of the (up to) 5 largest logits, best first; ties go to the lower class index (numpy's argmax)."""
    k = min(5, logits.shape[1])
    return torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]


@torch.no_grad()
def predict(model: nn.Module, loader, desc: str = "eval", progress: bool = True,
            keep_logits: bool = False) -> dict[str, torch.Tensor]:
    """Top-5 predictions and labels (and with ``keep_logits`` the float32 logits) in dataset order:
    this process's shard, gathered across ranks."""
    model.eval()
    top5, labels, logits = [], [], []
    for x, y in tqdm(loader, desc=desc, unit="batch", disable=not progress or not dist.is_main(), leave=False):
        out = model(x)
        top5.append(out.topk(min(5, out.shape[1]), dim=1).indices)
        labels.append(y)
        if keep_logits:
            logits.append(out.float())
    local = dict(top5=torch.cat(top5), labels=torch.cat(labels))
    if keep_logits:
        local["logits"] = torch.cat(logits)
    return dist.gather_in_order(local, loader)


def predict_integer(int_model: dict, loader, desc: str = "integer", progress: bool = True, chunk: int = 8,
                    threads: int | None = 1) -> dict[str, torch.Tensor]:
    """The integer model (golden/convert.py) run bit-exactly by golden/fast.py on a loader of uint8
    pixels (golden.images.pixel_folder): top-5 (ties to the lower class, so top-1 is numpy's argmax of
    the codes), labels and the int64 logit codes, in dataset order, gathered across ranks like
    :func:`predict`.

    Each loader batch runs ``chunk`` images at a time (every image's codes are independent of the
    others'), on ``threads`` torch threads (None: leave torch's setting). Measured on the B0 proxy on
    2 busy cores: 1 thread, 4-8 images: 80-85 images/s; 1 thread, 64 images: 25; 2 threads: 2-6
    (golden/fast.py: a descheduled thread stalls every op); the loader's workers use the other core.
    """
    from golden import fast
    top5, labels, logits = [], [], []
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for x, y in tqdm(loader, desc=desc, unit="batch", disable=not progress or not dist.is_main(), leave=False):
            u8 = x.numpy().astype(np.uint8, copy=False)
            codes = torch.from_numpy(np.concatenate([fast.run(int_model, u8[i:i + chunk])
                                                     for i in range(0, len(u8), chunk)]))
            top5.append(_top5(codes))
            labels.append(y)
            logits.append(codes)
    finally:
        torch.set_num_threads(before)
    local = dict(top5=torch.cat(top5), labels=torch.cat(labels), logits=torch.cat(logits))
    return dist.gather_in_order(local, loader)


def accuracy(pred: dict[str, torch.Tensor]) -> dict[str, float]:
    t5, y = pred["top5"], pred["labels"]
    return dict(top1=100.0 * (t5[:, 0] == y).double().mean().item(),
                top5=100.0 * (t5 == y[:, None]).any(1).double().mean().item(),
                n=len(y))


def agreement(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Percentage of images whose top-1 prediction is the same under both models."""
    return 100.0 * (a["top5"][:, 0] == b["top5"][:, 0]).double().mean().item()


def sqnr_db(reference, test) -> float:
    """10 log10(sum ref^2 / sum (ref - test)^2) in float64 over all elements (inf when they are equal)."""
    f = np.asarray(reference, dtype=np.float64)
    q = np.asarray(test, dtype=np.float64)
    if f.shape != q.shape:
        raise ValueError(f"SQNR of arrays of different shapes {f.shape} and {q.shape}")
    noise = float(((f - q) ** 2).sum())
    signal = float((f ** 2).sum())
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf
