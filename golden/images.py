"""The pixels the hardware sees: ImageNet-layout folders, MIT's resize and center crop, uint8 RGB.

The accelerator's input is the raw 8-bit image after the host's resize and
center crop (golden/SPEC.md section 0); normalisation is folded into the stem.
quant/ builds its float evaluation transform on :func:`resize_crop`, so the
float, fake-quant and integer models all start from the same pixels.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG")


def resize_size(input_size: int, crop_ratio: float) -> int:
    """MIT's evaluation resize: the shorter side to ceil(size / crop_ratio)."""
    if not 0 < crop_ratio <= 1:
        raise ValueError(f"crop ratio {crop_ratio} must lie in (0, 1] (MIT uses 0.95 for B0/B1, 1.0 for B2/B3)")
    return math.ceil(input_size / crop_ratio)


def resize_crop(input_size: int, crop_ratio: float):
    """PIL image -> PIL image: bicubic resize to ceil(size / crop), then a center crop of ``size``."""
    from torchvision import transforms as T
    return T.Compose([T.Resize(resize_size(input_size, crop_ratio), interpolation=T.InterpolationMode.BICUBIC),
                      T.CenterCrop(input_size)])


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


def to_pixels(im) -> np.ndarray:
    """A PIL RGB image as uint8 (3, H, W)."""
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


class _Pixels:
    """Resize, crop, uint8 (a class, so DataLoader workers can pickle it)."""

    def __init__(self, input_size: int, crop_ratio: float):
        self.rc = resize_crop(input_size, crop_ratio)

    def __call__(self, im) -> np.ndarray:
        return to_pixels(self.rc(im))


def pixel_folder(data_path: str | Path, split: str, input_size: int, crop_ratio: float):
    """An ImageFolder of ``data_path/split`` yielding (uint8 (3, size, size) pixels, class index)."""
    from torchvision.datasets import ImageFolder
    d = check_split(data_path, split)
    return ImageFolder(str(d), transform=_Pixels(input_size, crop_ratio), loader=load_rgb)


def load_image(path: str | Path, input_size: int, crop_ratio: float) -> np.ndarray:
    """One image file -> uint8 (3, size, size) pixels after the MIT resize and center crop."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--image {p} does not exist")
    return to_pixels(resize_crop(input_size, crop_ratio)(load_rgb(str(p))))


def normalise(u8: np.ndarray):
    """The float input of the float and fake-quant models (ToTensor + Normalize in float32, like torchvision)."""
    import torch
    x = torch.from_numpy(np.asarray(u8)).float() / 255.0
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
