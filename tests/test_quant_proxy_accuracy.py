"""Accuracy on the real proxy model and real images (../shared/assets): a regression guard.

Measured with quant/ at this commit (256 calibration images, no reconstruction, every 4th val image):
float 80.69, Trio-ViT W8A8 63.82.
This test uses fewer images to stay fast, and asserts the techniques keep W8A8 far from the
vanilla collapse (25.64 in assets/README.md); the issue's 1-point target is not met yet.
"""
import torch

from quant.config import QuantConfig
from quant.data import calibration_subset, image_folder, loader
from quant.engine import quantize
from quant.evaluate import accuracy, agreement, predict
from quant.models import build_model
from tests.assets import IMAGENETTE, PROXY_MODEL, assets_dir


def test_trio_vit_w8a8_on_the_proxy():
    a = assets_dir()
    model = build_model("b0-r224", str(a / PROXY_MODEL))
    train = image_folder(a / IMAGENETTE, "train", 224, 0.95)
    val = image_folder(a / IMAGENETTE, "val", 224, 0.95)
    val = torch.utils.data.Subset(val, list(range(0, len(val), 10)))     # 197 images, all classes
    calib = [x for x, _ in loader(calibration_subset(train, 64, 1005), 32)]
    vl = loader(val, 50)
    fp = predict(model, vl, progress=False)
    qm, rep = quantize(model, calib, QuantConfig(iters_w=0, iters_a=0), progress=False)
    q = predict(qm, vl, progress=False)
    fa, qa = accuracy(fp), accuracy(q)
    assert fa["top1"] > 75
    assert qa["top1"] > 50 and agreement(fp, q) > 50, (fa, qa)
    assert rep["block_sqnr_db"]["stem.in_conv"] > 20  # 8-bit pixels and stem: no collapse at the input
