"""Each Trio-ViT technique is an exact identity on the float model, and means what it says when quantizing."""
import copy

import pytest
import torch
import torch.nn.functional as F

from quant.data import SyntheticImages
from quant.models import create_model
from quant.qmodel import build_qmodel
from quant.quantizers import ActQuantizer
from quant.techniques import (apply_head_equalization, apply_migration, apply_projection_equalization, apply_shift,
                              apply_stream_equalization, collect_channel_stats, mbconvs, residual_streams)


@pytest.fixture(scope="module")
def b0_and_images():
    model = create_model("b0-r224", num_classes=10, seed=0)
    ds = SyntheticImages(8, 96, seed=5)
    x = torch.stack([ds[i][0] for i in range(8)])
    return model, x


def test_qmodel_matches_timm_in_float(b0_and_images):
    model, x = b0_and_images
    with torch.no_grad():
        ref, out = model(x), build_qmodel(model)(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("technique", ["migration", "shift", "projection equalization"])
def test_technique_leaves_float_output_unchanged(b0_and_images, technique):
    model, x = b0_and_images
    qm = build_qmodel(model)
    with torch.no_grad():
        before = qm(x)
    stats = collect_channel_stats(qm, [x[:4], x[4:]], torch.Generator().manual_seed(0))
    apply = {"migration": apply_migration, "shift": apply_shift,
             "projection equalization": lambda qm, st: (apply_projection_equalization(qm, st), apply_shift(qm, st))}
    apply[technique](qm, stats)
    changed = [b.ops[0].out_div.numel() > 0 if technique == "migration" else
               b.ops[1].out_q.shift.numel() > 0 if technique == "shift" else b.ops[1].out_div.std() > 0
               for b in mbconvs(qm)]
    assert changed and all(changed)
    if technique == "migration":
        s = mbconvs(qm)[0].ops[0].out_div
        assert s.min() >= 0.1 and s.max() <= 64 and s.std() > 0  # clipped, and really per channel
    with torch.no_grad():
        after = qm(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_stream_equalization_leaves_float_output_unchanged(b0_and_images):
    model, x = b0_and_images
    qm = build_qmodel(model)
    with torch.no_grad():
        before = qm(x)
    streams = residual_streams(qm)
    # B0: the stem's, stage 0's and stage 1's (one residual block each), stages 2 and 3 (four each)
    assert [len(st.producers) for st in streams] == [2, 2, 2, 5, 5]
    assert streams[0].readers[0].name == "stem.res0.dw" and streams[-1].readers[-1].name == "head.in_conv"
    ds = apply_stream_equalization(qm, [x[:4], x[4:]], alpha=1.0)
    for st, d in zip(streams, ds):
        assert d.std() > 0 and all(torch.equal(op.out_div, d) for op in st.producers)
    with torch.no_grad():
        after = qm(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_head_equalization_leaves_float_output_unchanged_and_evens_heads(b0_and_images):
    model, x = b0_and_images
    qm = build_qmodel(model)
    with torch.no_grad():
        before = qm(x)
    gains = apply_head_equalization(qm, [x])
    assert len(gains) == 4 and all(g.min() >= 1 and g.max() > 1 for g in gains.values())
    seen = {}
    blk = next(b for b in qm.blocks if b.name == "stages.2.blocks.1.context")
    hook = blk.qkv.out_q.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        after = qm(x)
    hook.remove()
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    a = seen["x"].abs().transpose(0, 1).flatten(1).amax(1).view(blk.heads, 3, blk.dim).amax(2)
    torch.testing.assert_close(a, a.amax(0, keepdim=True).expand_as(a), rtol=1e-4, atol=0)  # every head alike


def test_shift_is_the_reference_subtract_and_fold():
    """Per-channel zero points == quantize(x - z) then conv, with W z folded into the bias."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 5) * torch.linspace(0.5, 3, 6).view(1, 6, 1, 1) + torch.linspace(-4, 4, 6).view(1, 6, 1, 1)
    w, b = torch.randn(4, 6, 1, 1), torch.randn(4)
    z = (x.amax(dim=(0, 2, 3)) + x.amin(dim=(0, 2, 3))) / 2
    q = ActQuantizer("t", 8)
    q.shift = z.clone()
    q.observing = True
    q(x)
    q.observing = False
    q.calibrate(2.0)
    q.enabled = True
    s, zp = q.scale.item(), q.zero_point.item()
    zg = s * torch.round(z / s)                        # the shift on the grid
    xs = (torch.clamp(torch.round((x - zg.view(1, -1, 1, 1)) / s) + zp, 0, 255) - zp) * s
    ref = F.conv2d(xs, w, b + (w.sum(dim=(2, 3)) @ zg))
    torch.testing.assert_close(F.conv2d(q(x), w, b), ref, rtol=1e-5, atol=1e-4)
    # and shifting really centres the channels: far fewer values clip than without it
    plain = ActQuantizer("p", 8)
    plain.observing = True
    plain(x)
    plain.observing = False
    plain.calibrate(2.0)
    plain.enabled = True
    assert (q(x) - x).abs().mean() < (plain(x) - x).abs().mean()


@pytest.mark.parametrize("frac", [0, 1], ids=["powers_of_two", "mantissa_bit"])
def test_log2_divisor_is_a_power_of_two_in_integer_units(b0_and_images, frac):
    """The divisor is 2^e s_q s_ks (frac 0) or {1, 4/3} 2^e s_q s_ks (frac 1, the default), e in the
    4-bit window; with the mantissa bit both steps occur."""
    from quant.config import QuantConfig
    from quant.engine import quantize
    model, x = b0_and_images
    qm, rep = quantize(model, [x], QuantConfig(iters_w=0, iters_a=0, batch_size=4, log2_frac=frac),
                       progress=False)
    core = qm.attn_cores()[0]
    seen = {}

    def hook(mod, args, out):
        q, k, v, s_q = args
        seen.update(q=q, k=k, v=v, s_q=s_q, out=out)
    h = core.register_forward_hook(hook)
    with torch.no_grad():
        qm(x[:2])
    h.remove()
    q, k, v, s_q = seen["q"], seen["k"], seen["v"], seen["s_q"]
    qr, kr = F.relu(q), F.relu(k)
    kv, ks = core.kv_q(kr.transpose(-1, -2) @ v), core.ks_q(kr.sum(2))
    num, den = qr @ kv, qr @ ks.unsqueeze(-1)
    unit = core.divisor_unit(s_q)
    div = seen["num_over_out"] = num / seen["out"]
    e = torch.log2(div / unit)
    ok = (den.expand_as(div) > 0) & (seen["out"].abs() > 0)
    # the divisor is exactly {1, 4/3}^frac 2^e * s_q * s_ks with integer e inside the 4-bit window
    m = torch.log2(torch.tensor(4 / 3))
    third = (e[ok] - e[ok].floor() - m).abs() < 1e-3          # the 4/3 steps
    assert bool(third.any()) == bool(frac)
    e = torch.where(third, e[ok] - m, e[ok])
    assert torch.allclose(e, e.round(), atol=1e-3)
    lo = int(core.e_lo)
    assert e.round().min() >= lo and e.round().max() <= lo + 15
    assert rep["log2_ranges"][core.name] == (lo, lo + 15)


def test_branch_without_positive_divisor_gets_the_bottom_window_and_a_warning(b0_and_images):
    """At low bit-widths a whole branch can quantize q . ksum to 0; that must not stop quantization."""
    from quant.config import QuantConfig
    from quant.engine import quantize
    from quant.techniques import set_log2_ranges
    model, x = b0_and_images
    qm, _ = quantize(model, [x], QuantConfig(iters_w=0, iters_a=0, batch_size=4), progress=False)
    core = qm.attn_cores()[1]
    h = core.register_forward_pre_hook(lambda mod, args: (torch.zeros_like(args[0]),) + tuple(args[1:]))
    try:
        with pytest.warns(UserWarning, match=rf"never produced a positive divisor.*{core.name}"):
            ranges = set_log2_ranges(qm, [x[:2]], 4, None)
        assert ranges[core.name] == (0, 15) and int(core.e_lo) == 0
        with torch.no_grad():
            assert torch.isfinite(qm(x[:2])).all()
    finally:
        h.remove()
