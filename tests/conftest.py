import os

import pytest
import torch

# Keep tests light on the 2-core machines they run on.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory):
    """A tiny ImageNet-layout folder of synthetic images, two classes, train/ and val/."""
    from PIL import Image

    from quant.data import SyntheticImages
    root = tmp_path_factory.mktemp("synth")
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    for split, n, seed in (("train", 24, 0), ("val", 16, 1)):
        ds = SyntheticImages(n, 224, num_classes=2, seed=seed)
        for i in range(n):
            x, y = ds[i]
            pix = ((x * std + mean) * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
            d = root / split / f"c{y}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pix).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def seeded_b0_ckpt(tmp_path_factory):
    from quant.models import create_model
    path = tmp_path_factory.mktemp("ckpt") / "b0_seeded.pt"
    torch.save(create_model("b0-r224", num_classes=2, seed=0).state_dict(), path)
    return path
