"""ImageNet-layout data, the MIT evaluation transform, seeded calibration sets, synthetic images."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from golden.images import (IMAGENET_MEAN, IMAGENET_STD, IMG_EXTENSIONS, UnreadableImageError,  # noqa: F401
                           check_split, load_rgb, resize_crop)


def eval_transform(input_size: int, crop_ratio: float):
    """MIT's evaluation transform: the hardware's pixels (golden.images.resize_crop), then ImageNet mean/std."""
    from torchvision import transforms as T
    return T.Compose([resize_crop(input_size, crop_ratio), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def image_folder(data_path: str | Path, split: str, input_size: int, crop_ratio: float):
    from torchvision.datasets import ImageFolder
    d = check_split(data_path, split)
    return ImageFolder(str(d), transform=eval_transform(input_size, crop_ratio), loader=load_rgb)


def calibration_subset(dataset: Dataset, num_samples: int, seed: int) -> Subset:
    if num_samples < 1:
        raise ValueError(f"--num_samples must be at least 1, got {num_samples}")
    n = len(dataset)
    if num_samples > n:
        raise ValueError(f"--num_samples {num_samples} exceeds the {n} training images available")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:num_samples].tolist()
    return Subset(dataset, sorted(idx))


class SyntheticImages(Dataset):
    """Deterministic, image-like inputs (smooth colour fields plus edges), normalised like ImageNet.

    Used by the demo on machines with no data: structure matters because
    quantization ranges fitted to white noise would say little about real images.
    """

    def __init__(self, n: int, input_size: int, num_classes: int = 10, seed: int = 0):
        self.n, self.size, self.nc, self.seed = n, input_size, num_classes, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 100003 + i)
        s = self.size
        low = torch.rand(1, 3, 4, 4, generator=g)
        img = torch.nn.functional.interpolate(low, size=(s, s), mode="bicubic", align_corners=False)[0]
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
        a, b, c = (torch.rand(3, generator=g) * 2 - 1).tolist()
        img = img + 0.35 * ((a * xx + b * yy + c) > 0).float() * torch.rand(3, 1, 1, generator=g)
        img = img + 0.05 * torch.randn(3, s, s, generator=g)
        # Quantize to 8-bit pixels like a decoded image, then normalise.
        img = (img.clamp(0, 1) * 255).round() / 255
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (img - mean) / std, i % self.nc


def loader(dataset: Dataset, batch_size: int, workers: int = 0, shuffle: bool = False, seed: int = 0,
           distributed: bool = False) -> DataLoader:
    sampler = None
    if distributed:
        from .distributed import ShardSampler
        sampler = ShardSampler(dataset)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, generator=g, persistent_workers=False)
