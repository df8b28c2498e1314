"""ImageNet-layout data, the MIT evaluation transform, seeded calibration sets, synthetic images."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .models import resize_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG")


def eval_transform(input_size: int, crop_ratio: float):
    """MIT's evaluation transform: bicubic resize to ceil(size / crop), center crop, ImageNet mean/std."""
    from torchvision import transforms as T
    return T.Compose([
        T.Resize(resize_size(input_size, crop_ratio), interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(input_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def check_split(data_path: str | Path, split: str) -> Path:
    """Validate `data_path/split` as an ImageNet-layout folder (one subfolder of images per class)."""
    root = Path(data_path)
    if not root.is_dir():
        raise FileNotFoundError(f"--data_path {root} does not exist or is not a folder")
    d = root / split
    if not d.is_dir():
        found = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())[:8]) or "nothing"
        raise FileNotFoundError(f"{root} has no {split}/ folder (found: {found}); expected ImageNet layout "
                                f"{root}/train/<synset>/*.JPEG and {root}/val/<synset>/*.JPEG")
    classes = sorted(p for p in d.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"{d} has no class subfolders; expected {d}/<synset>/<image files>")
    if not any(f.suffix in IMG_EXTENSIONS for c in classes for f in c.iterdir()):
        raise FileNotFoundError(f"no images ({', '.join(IMG_EXTENSIONS)}) under the class folders of {d}")
    return d


class UnreadableImageError(ValueError):
    """A file of the data folder that PIL cannot decode, named in a one-line message.

    A DataLoader worker re-raises it in the main process as UnreadableImageError(its
    traceback, then the message): only that last line is kept.
    """

    def __init__(self, message: str):
        super().__init__(message.rstrip().splitlines()[-1].split(f"{type(self).__name__}: ", 1)[-1])


def load_rgb(path: str):
    """torchvision's default image loader, failing with the file's name rather than PIL's traceback.

    Files are checked as they are read: opening every ImageNet image up front would take long.
    """
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except UnidentifiedImageError:
        raise UnreadableImageError(f"{path} is not a readable image: PIL recognises no image format in it") from None
    except Exception as e:  # truncated or corrupt data: OSError, SyntaxError, struct.error, ...
        raise UnreadableImageError(f"{path} is not a readable image: {type(e).__name__}: {e}") from None


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
