"""torch.distributed sharding for `torchrun --nproc_per_node N main_imagenet.py ...`.

Evaluation and calibration-data gathering are split across ranks (every rank
takes indices rank, rank + N, ...) and the results are gathered back into
dataset order, so the numbers equal a single-process run. Quantization itself
(calibration statistics, reconstruction) runs identically on every rank on the
gathered calibration set, so all ranks hold the same model.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as td
from torch.utils.data import Sampler


def init_from_env() -> bool:
    """Join the process group torchrun describes (gloo on CPU, NCCL with CUDA); False when not under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not td.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        td.init_process_group(backend)
    return True


def world() -> tuple[int, int]:
    if td.is_available() and td.is_initialized():
        return td.get_rank(), td.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


class ShardSampler(Sampler):
    """Indices rank, rank + world, ... : no padding, no duplicates."""

    def __init__(self, dataset):
        self.n = len(dataset)
        self.rank, self.size = world()

    def indices(self) -> list[int]:
        return list(range(self.rank, self.n, self.size))

    def __iter__(self):
        return iter(self.indices())

    def __len__(self):
        return len(self.indices())


def gather_in_order(local: dict[str, torch.Tensor], loader) -> dict[str, torch.Tensor]:
    """Gather per-rank results of a sharded loader back into dataset order."""
    rank, size = world()
    if size == 1:
        return local
    sampler = loader.sampler
    if not isinstance(sampler, ShardSampler):
        raise RuntimeError("gather_in_order needs a loader built with distributed=True")
    parts = [None] * size
    td.all_gather_object(parts, (sampler.indices(), {k: v.cpu() for k, v in local.items()}))
    n = sum(len(ix) for ix, _ in parts)
    out = {}
    for k in local:
        first = parts[0][1][k]
        buf = torch.empty((n, *first.shape[1:]), dtype=first.dtype)
        for ix, d in parts:
            buf[torch.tensor(ix, dtype=torch.long)] = d[k]
        out[k] = buf
    return out


def gather_tensors(local: torch.Tensor, loader) -> torch.Tensor:
    return gather_in_order({"x": local}, loader)["x"]
