"""quantize() depends only on its arguments: equal calls give equal quantized.pt, and torch's global RNG is untouched."""
import dataclasses

import numpy as np
import torch

from quant.engine import quantize
from quant.export import read_quantized, save_quantized
from tests.test_quant_engine import small_case

# What a reader of quantized.pt uses (the report also holds wall times).
FIELDS = ("tensors", "nodes", "state_dict", "flags")


def _same(a, b) -> bool:
    """Exact equality of nested dicts and lists of tensors, arrays and plain values."""
    if isinstance(a, (torch.Tensor, np.ndarray)):
        return type(a) is type(b) and a.dtype == b.dtype and torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _quantized_pt(path, model, x, cfg) -> dict:
    qm, rep = quantize(model, [x[:8], x[8:]], cfg, progress=False)
    return read_quantized(save_quantized(path, qm, "b0-r224", cfg, rep))


def test_equal_calls_in_one_process_give_identical_quantized_pt(tmp_path):
    model, x, cfg = small_case()
    a = _quantized_pt(tmp_path / "a.pt", model, x, cfg)
    torch.rand(7)  # whatever the caller's global RNG does in between changes nothing
    b = _quantized_pt(tmp_path / "b.pt", model, x, cfg)
    for field in FIELDS:
        assert _same(a[field], b[field]), field


def test_global_rng_state_is_left_as_it_was():
    model, x, cfg = small_case()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    quantize(model, [x], cfg, progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_seed_changes_the_calibration_subsample(tmp_path):
    """Without reconstruction the seed acts only through the subsamples of the range search and migration."""
    model, x, cfg = small_case()
    cfg = dataclasses.replace(cfg, iters_w=0, iters_a=0)
    a = _quantized_pt(tmp_path / "a.pt", model, x, cfg)
    b = _quantized_pt(tmp_path / "b.pt", model, x, dataclasses.replace(cfg, seed=cfg.seed + 1))
    assert not _same(a["tensors"], b["tensors"])
