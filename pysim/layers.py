"""The layer list of an EfficientViT, read from the model itself.

The model is run once (on the ``meta`` device: shapes only, no arithmetic)
with forward hooks on every leaf module that the accelerator executes, and
the hooks' records, in execution order, become a list of :class:`Layer`:

* ``conv``     generic convolution (the stem's 3x3, any k>1 with groups=1)
* ``pw``       pointwise 1x1 convolution (groups=1)
* ``grouped``  grouped 1x1 convolution (LiteMLA's multi-scale aggregation)
* ``dw``       depthwise convolution (3x3 / 5x5, stride 1 / 2)
* ``linear``   fully connected layer (head)
* ``attn_kv``  ``k^T [v | 1]`` per head: the kv matrix and the k-sum column
* ``attn_qkv`` ``q [kv | ks]`` per head: numerator and divisor (denominator)
* ``requant``  int32 -> int8 requantization of a producer's accumulators
* ``hswish``   integer Hardswish (with its per-channel output requant)
* ``residual`` residual add of two int8 tensors with rescale
* ``divide``   the divisor's log2 code and the shift-based division
* ``pool``     global average pooling
* ``layernorm`` the head's integer LayerNorm

Integer units carry ``elements`` (values they produce) and no MACs; the
convolutions and matrix products carry ``macs``.  BatchNorm is folded into
the convolutions (no layer), ReLU on q/k is applied on the fly by the MAT
engine (no layer), concatenation is addressing (no layer).

The attention core is recorded by wrapping ``LiteMLA._attn`` of each instance,
so its place in the order (after the aggregation convs, before ``proj``) is
exact.  Any ``nn.Module`` built from the same leaf types works (the timm
model, or a quantized copy whose wrappers keep ``nn.Conv2d``/``nn.Linear``
leaves); :func:`extract_layers` takes the module and an input size.
"""
from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field

# Model names accepted by the CLI, like quant/'s: b0-r224 ... b3-r288.
VARIANTS = ("b0", "b1", "b2", "b3")
RESOLUTIONS = (224, 256, 288)
MODEL_NAMES = tuple(f"{v}-r{r}" for v in VARIANTS for r in RESOLUTIONS)

COMPUTE_KINDS = ("conv", "pw", "grouped", "dw", "linear", "attn_kv", "attn_qkv")
UNIT_KINDS = ("requant", "hswish", "residual", "divide", "pool", "layernorm")


@dataclass
class Layer:
    name: str                 # module path (+ suffix for derived ops)
    kind: str                 # one of COMPUTE_KINDS + UNIT_KINDS
    cin: int = 0              # input channels (features for linear)
    cout: int = 0             # output channels
    h: int = 1                # input height / width
    w: int = 1
    oh: int = 1               # output height / width
    ow: int = 1
    k: int = 1                # kernel size (square)
    stride: int = 1
    groups: int = 1
    heads: int = 0            # attention: number of heads (all scales)
    tokens: int = 0           # attention: N = H*W
    dim: int = 0              # attention: head dim d (v is padded to d+1)
    macs: int = 0
    elements: int = 0         # values produced (integer units; outputs of compute layers)
    weight_bytes: int = 0     # int8 weights
    param_bytes: int = 0      # per-channel bias (int32) + requant multiplier (int32) + shift (int8)
    in_bytes: int = 0         # int8 activations read
    out_bytes: int = 0        # int8 activations written
    block: str = ""           # enclosing block (fusion scope), e.g. "stages.1.blocks.0.main"
    role: str = ""            # attribute name inside the block, e.g. "depth_conv"
    extra: dict = field(default_factory=dict)

    @property
    def is_compute(self) -> bool:
        return self.kind in COMPUTE_KINDS

    @property
    def pixels(self) -> int:
        return self.oh * self.ow

    def to_dict(self) -> dict:
        return asdict(self)


# Bytes of per-output-channel parameters: int32 bias, int32 multiplier, int8 shift.
PARAM_BYTES_PER_CHANNEL = 9


def parse_model_name(name: str) -> tuple[str, int]:
    """``"b1-r224"`` -> ``("efficientvit_b1", 224)``; a clear error otherwise."""
    m = re.fullmatch(r"(b[0-3])-r(\d+)", name.strip().lower())
    if not m or int(m.group(2)) % 32 or not 64 <= int(m.group(2)) <= 1024:
        raise ValueError(
            f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)} "
            "(any -rNNN with NNN a multiple of 32 in 64..1024 is accepted too)")
    return f"efficientvit_{m.group(1)}", int(m.group(2))


def _classify_conv(mod) -> str:
    k = mod.kernel_size[0]
    if mod.groups == 1:
        return "pw" if k == 1 else "conv"
    if mod.groups == mod.in_channels == mod.out_channels:
        return "dw"
    if k == 1:
        return "grouped"
    raise NotImplementedError(f"grouped {k}x{k} convolution ({mod}) has no engine mapping")


def extract_layers(model, img_size: int) -> list[Layer]:
    """Run ``model`` on a 1x3xHxW meta tensor and return its layer list in execution order."""
    import torch
    import torch.nn as nn

    names = {m: n for n, m in model.named_modules()}
    layers: list[Layer] = []
    handles = []

    def parent_and_role(mod) -> tuple[str, str]:
        n = names[mod]
        # ConvNormAct wraps the conv as ".conv": the block is two levels up.
        parts = n.split(".")
        if parts[-1] == "conv" and len(parts) >= 2:
            parts = parts[:-1]
        return ".".join(parts[:-1]), parts[-1]

    def conv_hook(mod, inp, out):
        x = inp[0]
        kind = _classify_conv(mod)
        _, cin, h, w = x.shape
        _, cout, oh, ow = out.shape
        k = mod.kernel_size[0]
        macs = cout * oh * ow * (cin // mod.groups) * k * k
        block, role = parent_and_role(mod)
        wbytes = mod.weight.numel() * 1
        layers.append(Layer(
            name=names[mod], kind=kind, cin=cin, cout=cout, h=h, w=w, oh=oh, ow=ow, k=k,
            stride=mod.stride[0], groups=mod.groups, macs=macs, elements=out.numel(),
            weight_bytes=wbytes, param_bytes=cout * PARAM_BYTES_PER_CHANNEL,
            in_bytes=x.numel(), out_bytes=out.numel(), block=block, role=role))
        layers.append(_unit("requant", names[mod] + ":requant", out, block, role))

    def linear_hook(mod, inp, out):
        x = inp[0]
        block, role = parent_and_role(mod)
        layers.append(Layer(
            name=names[mod], kind="linear", cin=mod.in_features, cout=mod.out_features,
            macs=mod.in_features * mod.out_features * (x.numel() // mod.in_features),
            elements=out.numel(), weight_bytes=mod.weight.numel(),
            param_bytes=mod.out_features * PARAM_BYTES_PER_CHANNEL,
            in_bytes=x.numel(), out_bytes=out.numel(), block=block, role=role))
        layers.append(_unit("requant", names[mod] + ":requant", out, block, role))

    def unit_hook(kind):
        def hook(mod, inp, out):
            block, role = parent_and_role(mod)
            lay = _unit(kind, names[mod], out, block, role)
            lay.in_bytes = inp[0].numel()
            if kind == "pool":
                lay.cin = lay.cout = inp[0].shape[1]
                lay.h, lay.w = inp[0].shape[2], inp[0].shape[3]
            layers.append(lay)
        return hook

    def residual_hook(mod, inp, out):
        if mod.shortcut is not None:
            lay = _unit("residual", names[mod] + ":add", out, names[mod], "shortcut")
            lay.in_bytes = 2 * out.numel()
            layers.append(lay)

    def wrap_attn(mod):
        orig = mod._attn

        def attn(q, k, v):
            _, heads, n, d = q.shape
            dv = v.shape[-1]           # d + 1: the padded ones column
            blk = names[mod]
            common = dict(heads=heads, tokens=n, dim=d, block=blk)
            # k^T [v|1]: kv (d x d) and the k-sum (d), summed over all tokens.
            layers.append(Layer(name=blk + ":kv", kind="attn_kv", role="kv", macs=heads * n * d * dv,
                                elements=heads * d * dv, in_bytes=heads * n * (d + d),
                                out_bytes=heads * d * dv, **common))
            layers.append(Layer(name=blk + ":kv_requant", kind="requant", role="kv",
                                elements=heads * d * dv, **common))
            # q [kv|ks]: numerator (d) and divisor (1) per token.
            layers.append(Layer(name=blk + ":qkv", kind="attn_qkv", role="qkv", macs=heads * n * d * dv,
                                elements=heads * n * dv, in_bytes=heads * n * d,
                                out_bytes=0, **common))
            # log2 code of the divisor, then numerator >> (n_o + e): one output per (token, column).
            layers.append(Layer(name=blk + ":divide", kind="divide", role="divide",
                                elements=heads * n * d, out_bytes=heads * n * d, **common))
            return orig(q, k, v)
        mod._attn = attn

    for mod in model.modules():
        cls = type(mod).__name__
        if isinstance(mod, nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
        elif isinstance(mod, nn.Hardswish):
            handles.append(mod.register_forward_hook(unit_hook("hswish")))
        elif isinstance(mod, nn.LayerNorm):
            handles.append(mod.register_forward_hook(unit_hook("layernorm")))
        elif isinstance(mod, (nn.AdaptiveAvgPool2d,)) or cls == "SelectAdaptivePool2d":
            handles.append(mod.register_forward_hook(unit_hook("pool")))
        elif cls == "ResidualBlock":
            handles.append(mod.register_forward_hook(residual_hook))
        elif cls == "LiteMLA":
            wrap_attn(mod)
        elif isinstance(mod, (nn.ReLU6, nn.GELU, nn.SiLU)):
            raise NotImplementedError(f"{names[mod]}: activation {cls} has no integer unit (SPEC: Hardswish only)")
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, img_size, img_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
        for mod in model.modules():
            if type(mod).__name__ == "LiteMLA" and "_attn" in mod.__dict__:
                del mod._attn
    # SelectAdaptivePool2d wraps an AdaptiveAvgPool2d: keep one pool record.
    out, seen_pool = [], set()
    for lay in layers:
        if lay.kind == "pool":
            key = lay.elements, lay.block.split(".")[0]
            if key in seen_pool:
                continue
            seen_pool.add(key)
        out.append(lay)
    return out


# quant/qmodel.py names the convs of a block by their job; pysim's fusion scopes use timm's.
_Q_ROLES = {"expand": "inverted_conv", "dw": "depth_conv", "project": "point_conv", "pw": "point_conv"}
_Q_KINDS = {"depthwise": "dw", "grouped": "grouped", "pointwise": "pw", "conv": "conv"}


def extract_qmodel_layers(qmodel, img_size: int) -> list[Layer]:
    """The layer list of quant/'s fake-quantized model (``quant.qmodel.QEfficientViT``).

    Runs one CPU forward pass (quantizers as they are; only shapes are read) with
    hooks on its ops: every ``QConv``/``QLinear`` with its output requantizer (and
    Hardswish), ``QAdd``, ``QPool``, ``QLayerNormHswish`` and each ``QAttnCore``
    (one per aggregation scale, so the attention appears once per scale).
    """
    import torch

    layers: list[Layer] = []
    handles = []

    def op_hook(mod, inp, out):
        x = inp[0]
        cls = type(mod).__name__
        block, _, tail = mod.name.rpartition(".")
        role = _Q_ROLES.get(tail, tail)
        if cls == "QLinear":
            lay = Layer(name=mod.name, kind="linear", cin=mod.weight.shape[1], cout=mod.weight.shape[0],
                        macs=mod.weight.numel() * (x.numel() // mod.weight.shape[1]), elements=out.numel(),
                        weight_bytes=mod.weight.numel(), param_bytes=mod.weight.shape[0] * PARAM_BYTES_PER_CHANNEL,
                        in_bytes=x.numel(), out_bytes=out.numel(), block=block, role=role)
        else:
            cout, cin_g, k, _ = mod.weight.shape
            _, cin, h, w = x.shape
            _, _, oh, ow = out.shape
            lay = Layer(name=mod.name, kind=_Q_KINDS[mod.kind], cin=cin, cout=cout, h=h, w=w, oh=oh, ow=ow, k=k,
                        stride=mod.stride, groups=mod.groups, macs=out.numel() * cin_g * k * k,
                        elements=out.numel(), weight_bytes=mod.weight.numel(),
                        param_bytes=cout * PARAM_BYTES_PER_CHANNEL, in_bytes=x.numel(), out_bytes=out.numel(),
                        block=block, role=role)
        layers.append(lay)
        layers.append(_unit("requant", mod.name + ":requant", out, block, role))
        if mod.act == "hswish":
            layers.append(_unit("hswish", mod.name + ":hswish", out, block, role))

    def unit_hook(kind):
        def hook(mod, inp, out):
            lay = _unit(kind, mod.name, out, mod.name.rpartition(".")[0], kind)
            lay.in_bytes = sum(t.numel() for t in inp if torch.is_tensor(t))
            if kind == "pool":
                lay.cin = lay.cout = inp[0].shape[1]
                lay.h, lay.w = inp[0].shape[2], inp[0].shape[3]
            if kind == "layernorm":
                layers.append(lay)
                lay = _unit("hswish", mod.name + ":hswish", out, lay.block, "hswish")
            layers.append(lay)
        return hook

    def attn_hook(mod, inp, out):
        q = inp[0]
        _, heads, n, d = q.shape
        dv = d + 1          # the k-sum / divisor column, as the float model's padded v
        blk = mod.name.rpartition(".")[0]
        common = dict(heads=heads, tokens=n, dim=d, block=blk)
        layers.extend([
            Layer(name=mod.name + ":kv", kind="attn_kv", role="kv", macs=heads * n * d * dv,
                  elements=heads * d * dv, in_bytes=heads * n * 2 * d, out_bytes=heads * d * dv, **common),
            Layer(name=mod.name + ":kv_requant", kind="requant", role="kv", elements=heads * d * dv, **common),
            Layer(name=mod.name + ":qkv", kind="attn_qkv", role="qkv", macs=heads * n * d * dv,
                  elements=heads * n * dv, in_bytes=heads * n * d, **common),
            Layer(name=mod.name + ":divide", kind="divide", role="divide", elements=heads * n * d,
                  out_bytes=heads * n * d, **common)])

    for mod in qmodel.modules():
        cls = type(mod).__name__
        if cls in ("QConv", "QLinear"):
            handles.append(mod.register_forward_hook(op_hook))
        elif cls == "QAdd":
            handles.append(mod.register_forward_hook(unit_hook("residual")))
        elif cls == "QPool":
            handles.append(mod.register_forward_hook(unit_hook("pool")))
        elif cls == "QLayerNormHswish":
            handles.append(mod.register_forward_hook(unit_hook("layernorm")))
        elif cls == "QAttnCore":
            handles.append(mod.register_forward_hook(attn_hook))
    try:
        with torch.no_grad():
            qmodel(torch.zeros(1, 3, img_size, img_size))
    finally:
        for h in handles:
            h.remove()
    # the attention's input tensors are kept (proj is the core's consumer): order as timm's
    return layers


def _unit(kind: str, name: str, out, block: str, role: str) -> Layer:
    shape = tuple(out.shape)
    c = shape[1] if len(shape) > 1 else 1
    oh = shape[2] if len(shape) == 4 else 1
    ow = shape[3] if len(shape) == 4 else 1
    return Layer(name=name, kind=kind, cin=c, cout=c, h=oh, w=ow, oh=oh, ow=ow,
                 elements=out.numel(), out_bytes=out.numel(), block=block, role=role)


def build_model(name: str):
    """The float timm model for ``bN`` (randomly initialised; only shapes matter), on meta."""
    import timm
    timm_name, _ = parse_model_name(name) if "-r" in name else (name, 0)
    return timm.create_model(timm_name, pretrained=False, device="meta")


@functools.lru_cache(maxsize=32)
def _cached(name: str) -> tuple[Layer, ...]:
    timm_name, size = parse_model_name(name)
    import timm
    model = timm.create_model(timm_name, pretrained=False, device="meta").eval()
    return tuple(extract_layers(model, size))


def model_layers(name: str) -> list[Layer]:
    """The layer list of ``b0-r224`` ... ``b3-r288`` (copies: callers may edit them)."""
    import copy
    return [copy.deepcopy(lay) for lay in _cached(name.strip().lower())]


def total_macs(layers) -> int:
    return sum(lay.macs for lay in layers)
