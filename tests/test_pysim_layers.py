"""pysim's layer list against an independent MAC count on the float model."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from pysim import layers as L


def independent_macs(variant: str, size: int) -> int:
    """Count MACs of a real float forward pass: conv/linear from module hooks
    (output elements x reduction length), attention from the q/k/v tensors
    seen by each LiteMLA's matmuls (k^T v and q kv, v padded with ones)."""
    import timm
    torch.manual_seed(0)
    model = timm.create_model(f"efficientvit_{variant}", pretrained=False).eval()
    count = [0]

    def conv(mod, inp, out):
        count[0] += out.numel() * mod.weight[0].numel()   # weight[0]: cin/groups x kh x kw

    def lin(mod, inp, out):
        count[0] += out.numel() * mod.in_features

    orig_matmul = torch.Tensor.__matmul__

    def counting_matmul(a, b):
        # batched (.., m, k) @ (.., k, n): m*k*n MACs per batch element
        out = orig_matmul(a, b)
        count[0] += out.numel() * a.shape[-1]
        return out

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(lin)
    torch.Tensor.__matmul__ = counting_matmul
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, size, size))
    finally:
        torch.Tensor.__matmul__ = orig_matmul
    return count[0]


@pytest.mark.parametrize("variant,size", [("b0", 224), ("b1", 224), ("b1", 288), ("b2", 256)])
def test_mac_total_matches_independent_count(variant, size):
    layers = L.model_layers(f"{variant}-r{size}")
    assert L.total_macs(layers) == independent_macs(variant, size)


def test_b1_r224_is_the_published_half_gmac():
    # DESIGN.md: B1 r224 is 0.52 GMACs.
    assert round(L.total_macs(L.model_layers("b1-r224")) / 1e9, 2) == 0.52


def test_every_layer_type_is_present():
    kinds = {lay.kind for lay in L.model_layers("b1-r224")}
    assert kinds == set(L.COMPUTE_KINDS) | set(L.UNIT_KINDS)
    dw = [lay for lay in L.model_layers("b1-r224") if lay.kind == "dw"]
    assert {(lay.k, lay.stride) for lay in dw} == {(3, 1), (3, 2), (5, 1)}


def test_attention_shapes_b1_r224():
    lays = [lay for lay in L.model_layers("b1-r224") if lay.kind == "attn_kv"]
    # stage 3 (14x14, 128 ch, dim 16: 8 heads x 2 scales) and stage 4 (7x7, 256 ch).
    assert {(lay.tokens, lay.heads, lay.dim) for lay in lays} == {(196, 16, 16), (49, 32, 16)}
    for lay in lays:
        assert lay.macs == lay.heads * lay.tokens * lay.dim * (lay.dim + 1)


def test_every_compute_layer_is_requantized():
    lays = L.model_layers("b0-r224")
    for i, lay in enumerate(lays):
        if lay.kind in ("conv", "pw", "grouped", "dw", "linear"):
            assert lays[i + 1].kind == "requant" and lays[i + 1].elements == lay.elements, lay.name


@pytest.mark.parametrize("bad", ["b4-r224", "b1", "b1-r225", "efficientvit_b1", ""])
def test_unknown_model_name_lists_valid_ones(bad):
    with pytest.raises(ValueError, match="valid names: b0-r224, b0-r256"):
        L.parse_model_name(bad)


def test_quantized_model_gives_the_same_layers():
    """quant/'s fake-quant model (BN folded, one QAttnCore per scale) yields the same work."""
    import timm
    from collections import Counter

    from pysim.schedule import simulate
    from quant.qmodel import build_qmodel
    from arch.config import PRESETS

    torch.manual_seed(0)
    q = build_qmodel(timm.create_model("efficientvit_b0", pretrained=False))
    ql = L.extract_qmodel_layers(q, 224)
    tl = L.model_layers("b0-r224")
    assert L.total_macs(ql) == L.total_macs(tl)
    qk, tk = Counter(lay.kind for lay in ql), Counter(lay.kind for lay in tl)
    blocks = tk["attn_kv"]
    for kind in ("attn_kv", "attn_qkv", "divide"):   # per scale in quant/, both scales at once in timm
        assert qk.pop(kind) == 2 * tk.pop(kind)
    assert qk.pop("requant") == tk.pop("requant") + blocks   # the second core's kv requant
    assert qk == tk
    assert sum(lay.weight_bytes for lay in ql) == sum(lay.weight_bytes for lay in tl)
    r = simulate(PRESETS["paper"], ql)
    assert r["total_macs"] == L.total_macs(tl) and 0 < r["mac_utilization"] <= 1
