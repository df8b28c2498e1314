"""Accuracy and label-free fidelity measures (top-1 agreement with the float model)."""
from __future__ import annotations

import torch
import torch.nn as nn
from tqdm import tqdm

from . import distributed as dist


@torch.no_grad()
def predict(model: nn.Module, loader, desc: str = "eval", progress: bool = True) -> dict[str, torch.Tensor]:
    """Top-5 predictions, labels and dataset indices for this process's shard, gathered across ranks."""
    model.eval()
    top5, labels = [], []
    for x, y in tqdm(loader, desc=desc, unit="batch", disable=not progress or not dist.is_main(), leave=False):
        out = model(x)
        top5.append(out.topk(min(5, out.shape[1]), dim=1).indices)
        labels.append(y)
    local = dict(top5=torch.cat(top5), labels=torch.cat(labels))
    return dist.gather_in_order(local, loader)


def accuracy(pred: dict[str, torch.Tensor]) -> dict[str, float]:
    t5, y = pred["top5"], pred["labels"]
    return dict(top1=100.0 * (t5[:, 0] == y).float().mean().item(),
                top5=100.0 * (t5 == y[:, None]).any(1).float().mean().item(),
                n=len(y))


def agreement(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Percentage of images whose top-1 prediction is the same under both models."""
    return 100.0 * (a["top5"][:, 0] == b["top5"][:, 0]).float().mean().item()
