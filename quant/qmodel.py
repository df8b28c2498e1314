"""The fake-quantized EfficientViT, built from a timm model with BN folded.

Its structure is the accelerator's: every tensor the hardware holds has exactly
one quantizer, owned by the op that produces it, and the arithmetic between
quantizers is what golden/SPEC.md defines (hardswish with an integer knee,
ReLU on codes, k^T v per column, the numerator kept in the accumulator, the
divisor as a power of two). With every quantizer disabled the model computes
exactly the float network.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from golden.reference import log2_divisor

from .data import IMAGENET_MEAN, IMAGENET_STD
from .quantizers import ActQuantizer, WeightQuantizer


HSWISH_FLOOR = -3.0  # hardswish is 0 below -3: its pre-activation range need not reach further


def hswish_knee(x: torch.Tensor, pre: ActQuantizer) -> torch.Tensor:
    """Hardswish whose knee t (3) is snapped to the pre-activation grid, as the integer unit computes it.

    x * clamp(x + t, 0, 2t) / (2t): the gain 1/(2t) instead of 1/6 keeps the linear part
    (x >= t) exactly x; with 1/6 it would be x * t / 3, off by up to s/6 relative on every
    large activation of a wide channel (the output multiplier carries the gain: golden/SPEC 3).
    """
    if not pre.enabled:
        return F.hardswish(x)
    s = pre._view(pre.scale.detach().abs().clamp(min=1e-8), x)
    t3 = torch.clamp(torch.floor(3.0 / s + 0.5), min=1.0) * s  # round half up, per channel
    return x * torch.clamp(x + t3, torch.zeros_like(t3), 2 * t3) / (2 * t3)


class QOp(nn.Module):
    """Base for ops with a float weight, a weight quantizer, an optional hardswish and an output quantizer."""

    def __init__(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None, act: str | None,
                 bits_a: int):
        super().__init__()
        self.name = name
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter((bias if bias is not None else torch.zeros(weight.shape[0])).detach().clone(),
                                 requires_grad=False)
        self.act = act
        self.wq: WeightQuantizer | None = None
        # The pre-activation is requantized from the accumulator, which is per channel anyway: so is
        # its scale (outlier channels of EfficientViT would ruin a per-tensor one).
        c = weight.shape[0]
        self.pre_q = (ActQuantizer(f"{name}.pre", bits_a, groups=c, bshape=(1, c) + (1, 1) * (weight.dim() == 4),
                                   floor=HSWISH_FLOOR) if act == "hswish" else None)
        self.out_q = ActQuantizer(f"{name}.out", bits_a)
        # Channel-wise migration: the output is divided per channel by this (and the consumer's
        # filters multiplied by it); empty when not migrated.
        self.register_buffer("out_div", torch.zeros(0))
        # Mean of each input channel over calibration (float model), for bias correction; empty: off.
        self.register_buffer("in_mean", torch.zeros(0))
        # Added to the bias per output channel by the empirical correction (techniques.apply_output_bias);
        # empty: off.
        self.register_buffer("bias_delta", torch.zeros(0))
        self.bias_pinned = False  # pin_bias: the bias is the hardware's as is

    def linear_part(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def bias_on_grid(self, w_q: torch.Tensor | None = None) -> torch.Tensor:
        """The bias the hardware adds: int32 at scale s_x * s_w[c] (needs the input's quantizer).

        With bias correction (``in_mean`` set, see techniques.apply_bias_correction) it also
        adds (W - Wq) E[x]: the expected output error of the weights' rounding. After BN
        folding, a projecting conv's output is a small difference of large terms, and the
        rounding error times the channel means alone costs 25-30 dB of logit SQNR on the proxy.
        ``bias_delta`` (the empirical correction, techniques.apply_output_bias) is added as is.
        ``w_q``: the quantized weights when the caller has them already (forward does).
        """
        b = self.bias + self.bias_delta if self.bias_delta.numel() else self.bias
        in_q = self.__dict__.get("in_q")
        if isinstance(in_q, InputQuant) and in_q.enabled and not self.bias_pinned:
            # the pixels' zero point is the channel mean rounded: the bias adds back what that drops
            w = self.weight if self.wq is None or not self.wq.enabled else (
                self.wq(self.weight) if w_q is None else w_q)
            b = b + w.flatten(2).sum(2) @ in_q.mean_offset().to(w.dtype)
        if self.wq is None or not self.wq.enabled:
            return b
        if self.in_mean.numel():
            dw = self.weight - (self.wq(self.weight) if w_q is None else w_q)
            dw = dw.flatten(2).sum(2) if dw.dim() == 4 else dw          # (Cout, Cin / groups)
            if getattr(self, "groups", 1) == 1:
                b = b + dw @ self.in_mean
            else:  # grouped: output o reads input channels of its group
                cin_g = dw.shape[1]
                idx = (torch.arange(self.weight.shape[0]) // (self.weight.shape[0] // self.groups))[:, None] * cin_g
                b = b + (dw * self.in_mean[idx + torch.arange(cin_g)]).sum(1)
        if in_q is None or not in_q.enabled:
            return b
        sx = in_q.channel_scales().detach()
        cout = self.weight.shape[0]
        # depthwise / grouped convs here keep channel o in group o's input channels
        sx = sx[torch.arange(cout) * len(sx) // cout] if getattr(self, "groups", 1) > 1 else sx[0]
        unit = sx * self.wq.scale.detach().reshape(-1)
        return torch.round(b / unit) * unit

    def pin_bias(self, bias: torch.Tensor) -> None:
        """Use `bias` as the hardware bias as is (no correction recomputed from the weights)."""
        self.bias.data = bias.to(self.bias.dtype).reshape(self.bias.shape)
        self.in_mean = self.in_mean[:0]
        self.bias_delta = self.bias_delta[:0]
        self.bias_pinned = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.wq(self.weight) if self.wq is not None else self.weight
        y = self.linear_part(x, w)
        if self.act == "hswish":
            y = hswish_knee(self.pre_q(y), self.pre_q)
        if self.out_div.numel():
            y = y / self.out_div.view(1, -1, *([1] * (y.dim() - 2)))
        return self.out_q(y)


class QConv(QOp):
    def __init__(self, name, weight, bias, stride, padding, groups, act, bits_a):
        super().__init__(name, weight, bias, act, bits_a)
        self.stride, self.padding, self.groups = stride, padding, groups

    @property
    def kind(self) -> str:
        cout, cin_g, kh, kw = self.weight.shape
        if self.groups == cout and cin_g == 1:
            return "depthwise"
        if self.groups > 1:
            return "grouped"
        return "pointwise" if kh == kw == 1 else "conv"

    def linear_part(self, x, w):
        return F.conv2d(x, w, self.bias_on_grid(w), self.stride, self.padding, 1, self.groups)


class QLinear(QOp):
    kind = "linear"

    def linear_part(self, x, w):
        return F.linear(x, w, self.bias_on_grid(w))


class QAdd(nn.Module):
    def __init__(self, name: str, bits_a: int):
        super().__init__()
        self.name = name
        self.out_q = ActQuantizer(f"{name}.out", bits_a)

    def forward(self, a, b):
        return self.out_q(a + b)


class QPool(nn.Module):
    def __init__(self, name: str, bits_a: int):
        super().__init__()
        self.name = name
        self.out_q = ActQuantizer(f"{name}.out", bits_a)

    def forward(self, x):
        return self.out_q(x.mean(dim=(2, 3)))


class QLayerNormHswish(nn.Module):
    """LayerNorm, then hardswish, as the head's integer unit computes them (pre-activation quantized)."""

    def __init__(self, name: str, ln: nn.LayerNorm, bits_a: int):
        super().__init__()
        self.name = name
        self.weight = nn.Parameter(ln.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(ln.bias.detach().clone(), requires_grad=False)
        self.eps = ln.eps
        c = ln.weight.numel()
        self.pre_q = ActQuantizer(f"{name}.pre", bits_a, groups=c, bshape=(1, c),  # per channel, as in QOp
                                  floor=HSWISH_FLOOR)
        self.out_q = ActQuantizer(f"{name}.out", bits_a)

    def forward(self, x):
        y = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return self.out_q(hswish_knee(self.pre_q(y), self.pre_q))


class QAttnCore(nn.Module):
    """ReLU linear attention of one multi-scale branch, per head.

    kv = relu(k)^T v is quantized per (head, column), the k-sum per head
    (unsigned); the numerator q kv stays in the accumulator; the divisor
    q . ksum becomes 2^e in units of s_q * s_ks with e a 4-bit code (log2).
    """

    def __init__(self, name: str, heads: int, dim: int, bits_a: int, eps: float, log2_bits: int = 4):
        super().__init__()
        self.name, self.heads, self.dim, self.eps = name, heads, dim, eps
        self.kv_q = ActQuantizer(f"{name}.kv", bits_a, signed=True, groups=heads * dim, bshape=(1, heads, 1, dim))
        self.ks_q = ActQuantizer(f"{name}.ks", bits_a, groups=heads, bshape=(1, heads, 1), min_zero=True)
        self.log2_bits = log2_bits
        self.log2 = False
        # 1: the divisor with a mantissa bit, {1, 4/3} 2^e (golden/SPEC.md 5.4); 0: powers of two
        self.log2_frac = 0
        self.register_buffer("e_lo", torch.zeros((), dtype=torch.long))
        self.observe_e = False
        self.e_seen: list[int] = []

    def divisor_unit(self, s_q: torch.Tensor) -> torch.Tensor:
        """Real value of one LSB of the integer divisor: s_q * s_ks[h], shape (1, H, 1, 1)."""
        return (s_q * self.ks_q.scale.detach().abs()).view(1, -1, 1, 1)

    def forward(self, q, k, v, s_q: torch.Tensor | None):
        qr, kr = F.relu(q), F.relu(k)
        kv = self.kv_q(kr.transpose(-1, -2) @ v)                  # (B, H, D, D)
        ks = self.ks_q(kr.sum(dim=2))                             # (B, H, D)
        num = qr @ kv                                             # (B, H, N, D): accumulator, not stored
        den = qr @ ks.unsqueeze(-1)                               # (B, H, N, 1)
        if self.log2 and s_q is not None:
            unit = self.divisor_unit(s_q)
            d_int = (den / unit).round()
            e = torch.log2(d_int.clamp(min=1)).round()
            if self.observe_e:
                pos = d_int > 0
                if pos.any():
                    self.e_seen += [int(e[pos].min()), int(e[pos].max())]
            q_div, _ = log2_divisor(d_int, float(self.e_lo), self.log2_bits, self.log2_frac)
            div = den + (q_div * unit - den).detach()     # straight-through
            return num / div
        return num / (den + self.eps)


class QLiteMLA(nn.Module):
    """LiteMLA + its residual add, with quantizers where the accelerator stores tensors."""

    def __init__(self, name: str, mla: nn.Module, bits_a: int):
        super().__init__()
        self.name = name
        self.dim = mla.dim
        total = mla.qkv.conv.out_channels // 3
        self.heads = total // self.dim
        if len(mla.aggreg) != 1:
            raise NotImplementedError("only the single 5x5 aggregation scale of EfficientViT-B is supported")
        # Channel layout per head: [q(dim) k(dim) v(dim)] (timm reshapes to (B, -1, 3*dim, HW)).
        idx = (torch.arange(3 * total) % (3 * self.dim)) // self.dim
        w, b = fold_conv_bn(mla.qkv)
        self.qkv = QConv(f"{name}.qkv", w, b, 1, 0, 1, None, bits_a)
        dw, pw = mla.aggreg[0]
        self.agg_dw = QConv(f"{name}.agg_dw", dw.weight, dw.bias, 1, dw.padding, dw.groups, None, bits_a)
        self.agg_pw = QConv(f"{name}.agg_pw", pw.weight, pw.bias, 1, 0, pw.groups, None, bits_a)
        for op in (self.qkv, self.agg_dw, self.agg_pw):
            op.out_q = ActQuantizer(f"{op.name}.out", bits_a, groups=3, channel_index=idx.clone())
        self.cores = nn.ModuleList([QAttnCore(f"{name}.attn{i}", self.heads, self.dim, bits_a, mla.eps)
                                    for i in range(2)])
        self.attn_q = ActQuantizer(f"{name}.attn_out", bits_a)
        w, b = fold_conv_bn(mla.proj)
        self.proj = QConv(f"{name}.proj", w, b, 1, 0, 1, None, bits_a)
        self.add = QAdd(f"{name}.add", bits_a)

    def split(self, t: torch.Tensor):
        b, _, h, w = t.shape
        t = t.reshape(b, -1, 3 * self.dim, h * w).transpose(-1, -2)
        return t.chunk(3, dim=-1)

    def forward(self, x):
        b, _, h, w = x.shape
        qkv = self.qkv(x)
        agg = self.agg_pw(self.agg_dw(qkv))
        outs = []
        for core, t, prod in zip(self.cores, (qkv, agg), (self.qkv, self.agg_pw)):
            q, k, v = self.split(t)
            s_q = prod.out_q.scale.detach().abs()[0] if prod.out_q.enabled else None
            outs.append(core(q, k, v, s_q))
        out = torch.cat(outs, dim=1)                              # (B, 2H, N, D)
        out = out.transpose(-1, -2).reshape(b, -1, h, w)
        return self.add(self.proj(self.attn_q(out)), x)


class QSeq(nn.Module):
    """A chain of convolutions (DSConv or MBConv), with an optional residual add."""

    def __init__(self, name: str, ops: list[QConv], residual: bool, bits_a: int, kind: str):
        super().__init__()
        self.name, self.kind = name, kind
        self.ops = nn.ModuleList(ops)
        self.add = QAdd(f"{name}.add", bits_a) if residual else None

    def forward(self, x):
        y = x
        for op in self.ops:
            y = op(y)
        return self.add(y, x) if self.add is not None else y


class QHead(nn.Module):
    def __init__(self, name: str, head: nn.Module, bits_a: int):
        super().__init__()
        self.name = name
        w, b = fold_conv_bn(head.in_conv)
        self.in_conv = QConv(f"{name}.in_conv", w, b, 1, 0, 1, "hswish", bits_a)
        self.pool = QPool(f"{name}.pool", bits_a)
        fc1, ln, fc2 = head.classifier[0], head.classifier[1], head.classifier[4]
        self.fc1 = QLinear(f"{name}.fc1", fc1.weight, fc1.bias, None, bits_a)
        self.ln = QLayerNormHswish(f"{name}.ln", ln, bits_a)
        self.fc2 = QLinear(f"{name}.fc2", fc2.weight, fc2.bias, None, bits_a)
        self.fc2.out_q = ActQuantizer(f"{name}.fc2.out", 16, signed=True)  # int16 logits (SPEC section 8)

    def forward(self, x):
        return self.fc2(self.ln(self.fc1(self.pool(self.in_conv(x)))))


class InputQuant(ActQuantizer):
    """Raw 8-bit pixels: the tensor is x * std = pixel / 255 - mean, scale 1/255, zero point round(255 mean).

    The 1/std of the normalisation is folded into the stem weights (build_qmodel),
    so the integer stem sees the pixel codes themselves; fixed, never learned.
    """

    def __init__(self):
        super().__init__("input", 8, groups=3, channel_index=torch.arange(3))
        self.scale.data = torch.full((3,), 1.0 / 255.0)
        self.scale.requires_grad_(False)
        self.zero_point.copy_(torch.round(255.0 * torch.tensor(IMAGENET_MEAN)))
        self.register_buffer("std", torch.tensor(IMAGENET_STD))

    def mean_offset(self) -> torch.Tensor:
        """Per channel, what the dequantized codes (pixel - zp) / 255 miss of pixel / 255 - mean:
        (zp - 255 mean) / 255, up to 0.47 / 255. The stem's bias adds it back (QOp.bias_on_grid): exact
        wherever the stem's window lies inside the image; a padded tap gets it too (the hardware pads with
        the zero point). Left out, this offset alone costs 31 dB of logit SQNR and 0.8% of top-1 agreement
        on the proxy."""
        return self.zero_point / 255.0 - torch.tensor(IMAGENET_MEAN, dtype=self.scale.dtype)

    def forward(self, x):
        return super().forward(x * self.std.view(1, 3, 1, 1))

    def calibrate(self, p):  # fixed by construction
        self._obs.clear()


class QEfficientViT(nn.Module):
    def __init__(self, blocks: list[nn.Module], num_classes: int):
        super().__init__()
        self.input_q = InputQuant()
        self.blocks = nn.ModuleList(blocks)
        self.num_classes = num_classes

    def forward(self, x):
        x = self.input_q(x)
        for b in self.blocks:
            x = b(x)
        return x

    # -- traversal helpers
    def act_quantizers(self):
        return [m for m in self.modules() if isinstance(m, ActQuantizer)]

    def weight_ops(self):
        return [m for m in self.modules() if isinstance(m, QOp)]

    def attn_cores(self):
        return [m for m in self.modules() if isinstance(m, QAttnCore)]


# --- building from timm ----------------------------------------------------------------------

def fold_conv_bn(cna: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a timm ConvNormAct's BatchNorm (if any) into its conv weight and bias."""
    conv, norm = cna.conv, cna.norm
    w = conv.weight.detach().clone()
    b = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(w.shape[0], device=w.device)
    if isinstance(norm, nn.BatchNorm2d):
        std = torch.sqrt(norm.running_var + norm.eps)
        g = norm.weight.detach() / std
        w = w * g.view(-1, 1, 1, 1)
        b = (b - norm.running_mean) * g + norm.bias.detach()
    elif not isinstance(norm, nn.Identity):
        raise NotImplementedError(f"cannot fold {type(norm).__name__}")
    return w, b


def _act_name(cna: nn.Module) -> str | None:
    a = cna.act
    if isinstance(a, nn.Hardswish):
        return "hswish"
    if isinstance(a, nn.Identity):
        return None
    raise NotImplementedError(f"activation {type(a).__name__} is not supported by the accelerator")


def _qconv(name: str, cna: nn.Module, bits_a: int) -> QConv:
    w, b = fold_conv_bn(cna)
    c = cna.conv
    return QConv(name, w, b, c.stride[0], c.padding[0], c.groups, _act_name(cna), bits_a)


def _local_block(name: str, block: nn.Module, residual: bool, bits_a: int) -> QSeq:
    kind = type(block).__name__
    if kind == "DSConv":
        ops = [_qconv(f"{name}.dw", block.depth_conv, bits_a), _qconv(f"{name}.pw", block.point_conv, bits_a)]
        return QSeq(name, ops, residual, bits_a, "dsconv")
    if kind == "MBConv":
        ops = [_qconv(f"{name}.expand", block.inverted_conv, bits_a),
               _qconv(f"{name}.dw", block.depth_conv, bits_a),
               _qconv(f"{name}.project", block.point_conv, bits_a)]
        return QSeq(name, ops, residual, bits_a, "mbconv")
    raise NotImplementedError(f"block type {kind} is not supported")


def _residual(rb: nn.Module) -> bool:
    if rb.shortcut is None:
        return False
    if not isinstance(rb.shortcut, nn.Identity):
        raise NotImplementedError("only identity shortcuts are supported")
    return True


def build_qmodel(model: nn.Module, bits_a: int = 8) -> QEfficientViT:
    """Convert a timm EfficientViT (B0..B3) into the fake-quant model (quantizers disabled)."""
    model = model.eval()
    blocks: list[nn.Module] = []
    stem = model.stem
    stem_conv = _qconv("stem.in_conv", stem.in_conv, bits_a)
    with torch.no_grad():  # the stem sees x * std (InputQuant): fold 1/std into its weights
        stem_conv.weight.div_(torch.tensor(IMAGENET_STD, device=stem_conv.weight.device).view(1, 3, 1, 1))
    blocks.append(QSeq("stem.in_conv", [stem_conv], False, bits_a, "conv"))
    for name, m in stem.named_children():
        if name.startswith("res"):
            blocks.append(_local_block(f"stem.{name}", m.main, _residual(m), bits_a))
    # Inside the stem every tensor between blocks feeds only the next DSConv's depthwise conv and
    # its residual add, both per-channel consumers (SPEC 0 and 4): give those tensors per-channel
    # scales. Per tensor, the proxy's 8 stem channels (ranges 0.4 to 33) cost 17 dB of SQNR.
    for blk, nxt in zip(blocks, blocks[1:]):
        if nxt.kind == "dsconv" and nxt.add is not None:
            producer = blk.add if blk.add is not None else blk.ops[-1]
            c = nxt.ops[0].weight.shape[0]  # the depthwise conv's channels: the tensor's
            producer.out_q = ActQuantizer(producer.out_q.name, bits_a, groups=c, bshape=(1, c, 1, 1))
    for si, stage in enumerate(model.stages):
        for bi, blk in enumerate(stage.blocks):
            nm = f"stages.{si}.blocks.{bi}"
            if type(blk).__name__ == "EfficientVitBlock":
                blocks.append(QLiteMLA(f"{nm}.context", blk.context_module.main, bits_a))
                blocks.append(_local_block(f"{nm}.local", blk.local_module.main, True, bits_a))
            else:
                blocks.append(_local_block(nm, blk.main, _residual(blk), bits_a))
    blocks.append(QHead("head", model.head, bits_a))
    qm = QEfficientViT(blocks, model.num_classes)
    link_inputs(qm)
    return qm


def link_inputs(qm: QEfficientViT) -> None:
    """Give every weighted op a (non-module) reference to the quantizer of its input tensor."""
    def link(op, q):
        op.__dict__["in_q"] = q
        return op.out_q
    x = qm.input_q
    for blk in qm.blocks:
        if isinstance(blk, QSeq):
            y = x
            for op in blk.ops:
                y = link(op, y)
            x = blk.add.out_q if blk.add is not None else y
        elif isinstance(blk, QLiteMLA):
            qkv = link(blk.qkv, x)
            link(blk.agg_pw, link(blk.agg_dw, qkv))
            link(blk.proj, blk.attn_q)
            x = blk.add.out_q
        elif isinstance(blk, QHead):
            link(blk.in_conv, x)
            link(blk.fc1, blk.pool.out_q)
            link(blk.fc2, blk.ln.out_q)
