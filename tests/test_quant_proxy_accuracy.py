"""Accuracy on the real proxy model and real images (../shared/assets): a regression guard.

Measured with quant/ at this commit: the issue's command (256 calibration images, no
reconstruction) gives float 81.43, Trio-ViT W8A8 80.32 on the whole val split. This test uses
64 calibration images and every 10th val image to stay fast (measured: float 82.23, W8A8 78.68,
agreement 86.8%) and guards that level with a little slack; vanilla W8A8 collapses to 25.64
(assets/README.md).
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
    assert qa["top1"] > fa["top1"] - 5 and agreement(fp, q) > 82, (fa, qa)
    assert rep["block_sqnr_db"]["stem.in_conv"] > 30  # 8-bit pixels and stem: no collapse at the input
    assert rep["block_sqnr_db"]["stem.res0"] > 25     # per-channel stem tensors (17 dB lower per tensor)
