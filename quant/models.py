"""EfficientViT model registry and checkpoint loading (timm models, MIT or timm checkpoints)."""
from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn


@dataclass(frozen=True)
class ModelSpec:
    name: str          # reference name, e.g. "b1-r224"
    timm_name: str     # e.g. "efficientvit_b1"
    input_size: int
    crop_ratio: float  # MIT eval transform: resize to ceil(size / crop), center crop


# MIT evaluates B0/B1 with crop 0.95 and B2/B3 with 1.0.
_CROP = {"b0": 0.95, "b1": 0.95, "b2": 1.0, "b3": 1.0}
MODELS: dict[str, ModelSpec] = {
    f"{b}-r{r}": ModelSpec(f"{b}-r{r}", f"efficientvit_{b}", r, _CROP[b])
    for b in ("b0", "b1", "b2", "b3") for r in (224, 256, 288)
}

MIT_ATTENTION_EPS = 1e-15


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def create_model(name: str, num_classes: int = 1000, seed: int | None = None) -> nn.Module:
    """A timm EfficientViT for a reference model name, with random (or seeded) weights."""
    import timm
    spec = get_spec(name)
    if seed is not None:
        torch.manual_seed(seed)
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=num_classes)
    set_attention_eps(model, MIT_ATTENTION_EPS)
    if seed is not None:
        _randomize_bn(model, seed)
    return model.eval()


def _randomize_bn(model: nn.Module, seed: int) -> None:
    """Give BN layers non-trivial statistics so a seeded model behaves like a trained one."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)


def set_attention_eps(model: nn.Module, eps: float) -> None:
    for m in model.modules():
        if type(m).__name__ == "LiteMLA":
            m.eps = eps


# --- MIT checkpoint key remapping --------------------------------------------------
# MIT: backbone.input_stem.op_list.0.conv.weight -> timm: stem.in_conv.conv.weight
#      backbone.input_stem.op_list.J.main.X       -> stem.res{J-1}.main.X
#      backbone.stages.S.op_list.J.main.X         -> stages.S.blocks.J.main.X
#      backbone.stages.S.op_list.J.context_module.main.X -> same path under stages.S.blocks.J
#      head.op_list.0.* -> head.in_conv.*; head.op_list.2.linear -> head.classifier.0;
#      head.op_list.2.norm -> head.classifier.1; head.op_list.3.linear -> head.classifier.4
_MIT_RULES = [
    (r"^backbone\.input_stem\.op_list\.0\.", "stem.in_conv."),
    (r"^backbone\.input_stem\.op_list\.(\d+)\.", lambda m: f"stem.res{int(m.group(1)) - 1}."),
    (r"^backbone\.stages\.(\d+)\.op_list\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"^head\.op_list\.0\.", "head.in_conv."),
    (r"^head\.op_list\.2\.linear\.", "head.classifier.0."),
    (r"^head\.op_list\.2\.norm\.", "head.classifier.1."),
    (r"^head\.op_list\.3\.linear\.", "head.classifier.4."),
]


def remap_mit_state_dict(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        nk = k
        for pat, rep in _MIT_RULES:
            nk, n = re.subn(pat, rep, nk)
            if n:
                break
        else:
            raise ValueError(f"checkpoint key {k!r} does not look like an MIT EfficientViT classifier key "
                             "(expected backbone.input_stem.*, backbone.stages.*, head.op_list.*)")
        # MIT's LiteMLA multi-scale aggregation: aggreg.0.0 / aggreg.0.1 are the same in timm.
        out[nk] = v
    return out


def is_mit_state_dict(sd: dict) -> bool:
    return any(k.startswith("backbone.") for k in sd)


def num_classes_of(sd: dict) -> int:
    for key in ("head.classifier.4.weight", "head.op_list.3.linear.weight"):
        if key in sd:
            return int(sd[key].shape[0])
    raise ValueError("checkpoint has no classifier weight (head.classifier.4.weight or head.op_list.3.linear.weight); "
                     "is it a segmentation or backbone-only checkpoint?")


def fetch_checkpoint(url_or_path: str, cache_dir: str | None = None) -> Path:
    """A local path, or an http(s) URL downloaded into the torch hub cache."""
    if re.match(r"^https?://", url_or_path):
        cache = Path(cache_dir or os.path.join(torch.hub.get_dir(), "checkpoints"))
        dst = cache / os.path.basename(url_or_path.split("?")[0])
        if dst.is_file():
            return dst
        cache.mkdir(parents=True, exist_ok=True)
        try:
            tmp = dst.with_suffix(dst.suffix + ".part")
            with urllib.request.urlopen(url_or_path, timeout=30) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
            tmp.rename(dst)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise RuntimeError(f"could not download {url_or_path} ({e}); this machine may be offline: "
                               f"download the checkpoint elsewhere and pass its local path to --weight_url") from None
        return dst
    p = Path(url_or_path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {url_or_path!r} not found (pass a local file path or an http(s) URL)")
    return p


def load_state_dict(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {e}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (a dict of tensors, or {{'state_dict': ...}})")
    if is_mit_state_dict(obj):
        obj = remap_mit_state_dict(obj)
    return {k: v for k, v in obj.items() if not k.endswith("num_batches_tracked")}


def check_compatible(model: nn.Module, sd: dict, source: str) -> None:
    own = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    theirs = {k: v.shape for k, v in sd.items()}
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shape = [(k, tuple(theirs[k]), tuple(own[k])) for k in own if k in theirs and theirs[k] != own[k]]
    if missing or unexpected or shape:
        lines = [f"checkpoint {source} does not fit the model:"]
        if shape:
            lines += [f"  shape mismatch {k}: checkpoint {a} vs model {b}" for k, a, b in shape[:5]]
        if missing:
            lines.append(f"  missing in checkpoint ({len(missing)}): {', '.join(missing[:5])}")
        if unexpected:
            lines.append(f"  not in model ({len(unexpected)}): {', '.join(unexpected[:5])}")
        lines.append("  check --model (B0..B3 differ in widths and depths) and that the checkpoint is a classifier")
        raise ValueError("\n".join(lines))


def build_model(name: str, weight_url: str | None = None, num_classes: int | None = None,
                seed: int | None = None) -> nn.Module:
    """The timm EfficientViT for `name`, loaded from a checkpoint when given (classes inferred from it)."""
    if weight_url is None:
        return create_model(name, num_classes or 1000, seed=seed)
    path = fetch_checkpoint(weight_url)
    sd = load_state_dict(path)
    nc = num_classes_of(sd)
    if num_classes is not None and num_classes != nc:
        raise ValueError(f"checkpoint {path} has {nc} classes but {num_classes} were requested")
    model = create_model(name, nc)
    check_compatible(model, sd, str(path))
    model.load_state_dict(sd, strict=False)
    return model.eval()
