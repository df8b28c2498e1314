"""quantized.pt: the calibrated model as the IR (arch/ir.py) plus what quant/ needs to rebuild it.

quant/ walks its own fake-quant model once (:func:`build_graph`) into the IR's
flat list of tensors and nodes; arch/ir.py defines, writes and reads the file
(docs/quantized_format.md).  Beside the IR the file keeps ``config``,
``flags`` and ``state_dict`` (to rebuild the fake-quant model:
:func:`load_quantized`) and the engine's ``report``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from arch import ir as arch_ir

from .config import QuantConfig
from .models import build_model, get_spec
from .qmodel import (QAttnCore, QEfficientViT, QHead, QLinear, QLiteMLA, QOp, QSeq,
                     build_qmodel)
from .quantizers import ActQuantizer, WeightQuantizer

FORMAT = arch_ir.FORMAT
FORMAT_VERSION = arch_ir.VERSION


# --- tensors and nodes --------------------------------------------------------------------

def _tensor_entry(q: ActQuantizer, channels: int | None, quantized: bool) -> dict:
    if not quantized:     # a float model's structure: the format without a calibrated grid
        return dict(bits=q.bits, signed=q.signed, scale=None, zero_point=None, per_channel=False,
                    channels=channels, enabled=False)
    s = q.scale.detach().abs().clone()
    z = q.zero_points().detach().clone()
    if q.channel_index.numel():
        s, z = s[q.channel_index], z[q.channel_index]
    elif q.shift.numel():
        s = s.expand(q.shift.numel()).clone()
    elif q.groups > 1:
        shape = [d for d in q.bshape if d != 1]
        s, z = s.view(shape), z.view(shape)
    return dict(bits=q.bits, signed=q.signed, scale=s, zero_point=z.round().to(torch.int32),
                per_channel=bool(q.channel_index.numel() or q.shift.numel() or (q.groups > 1 and len(s.shape) == 1)),
                channels=channels,
                enabled=q.enabled)


def _weight_entry(op: QOp, quantized: bool, weight_bits: int) -> dict:
    shape = tuple(op.weight.shape)
    if not quantized:
        return dict(weight_shape=shape, weight_bits=weight_bits, weight_symmetric=True)
    wq: WeightQuantizer = op.wq
    codes = wq.codes(op.weight.detach()).round().to(torch.int32)
    return dict(weight_shape=shape, weight_codes=codes, weight_scale=wq.scale.detach().reshape(-1).clone(),
                weight_zero_point=wq.zero_point.detach().reshape(-1).round().to(torch.int32),
                weight_bits=wq.bits, weight_symmetric=wq.symmetric, weight_float=op.weight.detach().clone(),
                bias=op.bias_on_grid().detach().clone(), bias_float=op.bias.detach().clone())


class _Graph:
    def __init__(self, quantized: bool = True, weight_bits: int = 8):
        self.quantized, self.weight_bits = quantized, weight_bits
        self.tensors: dict[str, dict] = {}
        self.nodes: list[dict] = []

    def tensor(self, name: str, q: ActQuantizer, channels: int | None) -> str:
        self.tensors[name] = _tensor_entry(q, channels, self.quantized)
        return name

    def op(self, op: QOp, inp: str, kind: str | None = None) -> str:
        out = self.tensor(f"{op.name}.out", op.out_q, op.weight.shape[0])
        node = dict(op=kind or op.kind, name=op.name, input=inp, output=out, act=op.act,
                    **_weight_entry(op, self.quantized, self.weight_bits))
        if isinstance(op, QLinear):
            node["op"] = "linear"
        else:
            node.update(stride=op.stride, padding=op.padding, groups=op.groups)
        if op.pre_q is not None:
            node["pre"] = self.tensor(f"{op.name}.pre", op.pre_q, op.weight.shape[0])
        node["out_div"] = op.out_div.detach().clone() if op.out_div.numel() else None
        self.nodes.append(node)
        return out

    def add(self, add, a: str, b: str, channels: int) -> str:
        out = self.tensor(f"{add.name}.out", add.out_q, channels)
        self.nodes.append(dict(op="add", name=add.name, inputs=[a, b], output=out))
        return out


def build_graph(qmodel: QEfficientViT, quantized: bool = True, weight_bits: int = 8) -> _Graph:
    """The IR's tensors and nodes of ``qmodel`` (``quantized=False``: shapes and formats only)."""
    g = _Graph(quantized, weight_bits)
    x = g.tensor("input", qmodel.input_q, 3)
    for blk in qmodel.blocks:
        if isinstance(blk, QSeq):
            y = x
            for op in blk.ops:
                y = g.op(op, y)
            x = g.add(blk.add, y, x, blk.ops[-1].weight.shape[0]) if blk.add is not None else y
        elif isinstance(blk, QLiteMLA):
            qkv = g.op(blk.qkv, x)
            agg = g.op(blk.agg_pw, g.op(blk.agg_dw, qkv))
            att = g.tensor(f"{blk.name}.attn_out", blk.attn_q, 2 * blk.heads * blk.dim)
            for i, (core, src) in enumerate(zip(blk.cores, (qkv, agg))):
                core: QAttnCore
                g.nodes.append(dict(
                    op="attention", name=core.name, input=src, output=att,
                    out_channel_offset=i * blk.heads * blk.dim, heads=blk.heads, dim=blk.dim,
                    kv=g.tensor(f"{core.name}.kv", core.kv_q, None),
                    ks=g.tensor(f"{core.name}.ks", core.ks_q, None),
                    log2=core.log2, log2_bits=core.log2_bits, log2_frac=core.log2_frac, e_lo=int(core.e_lo),
                    eps=core.eps))
            x = g.add(blk.add, g.op(blk.proj, att), x, blk.proj.weight.shape[0])
        elif isinstance(blk, QHead):
            y = g.op(blk.in_conv, x)
            pooled = g.tensor(f"{blk.pool.name}.out", blk.pool.out_q, blk.in_conv.weight.shape[0])
            g.nodes.append(dict(op="avgpool", name=blk.pool.name, input=y, output=pooled))
            h = g.op(blk.fc1, pooled)
            ln = blk.ln
            out = g.tensor(f"{ln.name}.out", ln.out_q, ln.weight.numel())
            g.nodes.append(dict(op="layernorm_hswish", name=ln.name, input=h, output=out,
                                pre=g.tensor(f"{ln.name}.pre", ln.pre_q, ln.weight.numel()),
                                weight=ln.weight.detach().clone() if g.quantized else None,
                                bias=ln.bias.detach().clone() if g.quantized else None, eps=ln.eps))
            x = g.op(blk.fc2, out)
        else:
            raise TypeError(f"cannot export block {type(blk).__name__}")
    return g


# --- save / load ----------------------------------------------------------------------------

def _flags(qmodel: QEfficientViT) -> dict:
    return dict(
        act={q.name: dict(bits=q.bits, signed=q.signed, enabled=q.enabled) for q in qmodel.act_quantizers()},
        weight={op.name: dict(bits=op.wq.bits, symmetric=op.wq.symmetric, channel_wise=op.wq.channel_wise,
                              mode=op.wq.mode, enabled=op.wq.enabled)
                for op in qmodel.weight_ops() if op.wq is not None},
        cores={c.name: dict(log2=c.log2, log2_bits=c.log2_bits, log2_frac=c.log2_frac) for c in qmodel.attn_cores()},
    )


def to_ir(qmodel: QEfficientViT, model_name: str, cfg: QuantConfig | None = None, report: dict | None = None,
          with_state: bool = True) -> dict:
    """The IR of a calibrated fake-quant model (what :func:`save_quantized` writes)."""
    spec = get_spec(model_name)
    cfg = cfg or QuantConfig()
    g = build_graph(qmodel)
    extra = dict(config=cfg.to_dict(), report={k: v for k, v in (report or {}).items() if k != "config"})
    if with_state:
        extra.update(flags=_flags(qmodel), state_dict=qmodel.state_dict())
    return arch_ir.make(model_name, qmodel.num_classes, spec.input_size, spec.crop_ratio, g.tensors, g.nodes,
                        recipe=cfg.recipe, techniques=cfg.techniques, **extra)


def structure_ir(model_name: str, num_classes: int = 1000, bits_a: int = 8, bits_w: int = 8) -> dict:
    """The IR of a float EfficientViT's structure: every node and tensor with its shape and format,
    no calibrated grid and no weight values (the model is built on the meta device: no memory, no
    download). pysim prices it and arch/widths.py bounds it like a quantized model."""
    spec = get_spec(model_name)
    with torch.device("meta"):
        model = build_model(model_name, num_classes=num_classes)
    g = build_graph(build_qmodel(model, bits_a), quantized=False, weight_bits=bits_w)
    return arch_ir.make(model_name, num_classes, spec.input_size, spec.crop_ratio, g.tensors, g.nodes,
                        kind="structure")


def save_quantized(path: str | Path, qmodel: QEfficientViT, model_name: str, cfg: QuantConfig,
                   report: dict | None = None) -> Path:
    return arch_ir.save(path, to_ir(qmodel, model_name, cfg, report))


def read_quantized(path: str | Path) -> dict:
    """arch.ir.load, plus the fields quant/ keeps beside the IR to rebuild its model."""
    obj = arch_ir.load(path)
    for key in ("state_dict", "flags", "config"):
        if key not in obj:
            raise ValueError(f"{path} lacks the field {key!r} (quant/ needs it to rebuild the fake-quant model)")
    return obj


def load_quantized(path: str | Path) -> tuple[QEfficientViT, dict]:
    """Rebuild the fake-quant model from quantized.pt (no checkpoint needed)."""
    obj = read_quantized(path)
    model = build_model(obj["model"], num_classes=obj["num_classes"])
    qm = build_qmodel(model, obj["config"]["n_bits_a"])
    flags, sd = obj["flags"], obj["state_dict"]
    for op in qm.weight_ops():
        f = flags["weight"].get(op.name)
        if f is None:
            continue
        op.wq = WeightQuantizer(sd[f"{_prefix(qm, op)}weight"], f["bits"], f["symmetric"], f["channel_wise"], 2.0)
        if f"{_prefix(qm, op)}wq.alpha" in sd:
            op.wq.alpha = torch.nn.Parameter(torch.zeros_like(sd[f"{_prefix(qm, op)}wq.alpha"]), requires_grad=False)
        op.wq.mode, op.wq.enabled = f["mode"], f["enabled"]
    # Buffers whose size depends on calibration (shift, out_div) start empty: size them first.
    own = dict(qm.named_buffers())
    sd = {**{k: v for k, v in own.items() if k.endswith(".bias_delta")}, **sd}  # files from before bias_delta
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            mod_name, _, attr = k.rpartition(".")
            setattr(qm.get_submodule(mod_name), attr, torch.empty_like(v))
    qm.load_state_dict(sd)
    for q in qm.act_quantizers():
        f = flags["act"][q.name]
        q.bits, q.signed, q.enabled = f["bits"], f["signed"], f["enabled"]
    for c in qm.attn_cores():
        c.log2, c.log2_bits = flags["cores"][c.name]["log2"], flags["cores"][c.name]["log2_bits"]
        c.log2_frac = flags["cores"][c.name].get("log2_frac", 0)     # files from before the half-step divisor
    return qm.eval(), obj


def _prefix(qm: QEfficientViT, op: QOp) -> str:
    for n, m in qm.named_modules():
        if m is op:
            return n + "."
    raise KeyError(op.name)
