"""The IR: the quantized network as a flat graph of integer operations, and its file ``quantized.pt``.

This module is the one definition, reader and writer of that file
(docs/quantized_format.md): quant/ builds the graph and calls :func:`save`;
golden/, pysim/ and rtl/ read it with :func:`load` and nothing else.  In
memory the IR is a plain dict whose arrays are numpy arrays:

* ``tensors``: name -> ``{bits, signed, scale, zero_point, per_channel, channels, enabled}``
* ``nodes``:   the operations in execution order (fields per op: :data:`NODE_FIELDS`)
* ``model``, ``num_classes``, ``input_size``, ``crop_ratio``, ``recipe``,
  ``kind`` (``"quantized"``, or ``"structure"`` for a float model's shapes only),
  ``graph_input``, ``graph_output``, ``techniques``

plus whatever the producer keeps beside it (quant/ stores ``config``,
``flags``, ``state_dict`` and ``report`` to rebuild its fake-quant model).
The file is a ``torch.save`` archive (the producer's state dict holds torch
tensors), so :func:`load` and :func:`save` import torch when they run; the
rest of the module needs numpy only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import formats
from .config import AccelConfig

FORMAT = "triovit-quantized"
VERSION = 3                  # 3: `kind`, `weight_shape` on every MAC node; arrays stored as numpy
READABLE = (2, 3)            # 2 = 3 without `kind` / `weight_shape` (always "quantized")
KINDS = ("quantized", "structure")

MAC_OPS = ("conv", "pointwise", "depthwise", "grouped", "linear")
OPS = MAC_OPS + ("add", "attention", "avgpool", "layernorm_hswish")
NODE_FIELDS = {
    "mac": ("name", "input", "output", "act", "weight_shape", "weight_bits", "out_div"),
    "mac_quantized": ("weight_codes", "weight_scale", "weight_zero_point", "bias"),
    "conv": ("stride", "padding", "groups"),
    "add": ("name", "inputs", "output"),
    "attention": ("name", "input", "output", "out_channel_offset", "heads", "dim", "kv", "ks", "log2",
                  "log2_bits", "e_lo"),
    "avgpool": ("name", "input", "output"),
    "layernorm_hswish": ("name", "input", "output", "pre", "weight", "bias", "eps"),
}
TENSOR_FIELDS = ("bits", "signed", "scale", "zero_point", "enabled")
TOP_FIELDS = ("model", "num_classes", "input_size", "recipe", "tensors", "nodes", "graph_input", "graph_output")


def node_kind(node: dict) -> str:
    """``mac`` for the five MAC ops, else the op itself."""
    return "mac" if node.get("op") in MAC_OPS else node.get("op")


def node_inputs(node: dict) -> list[str]:
    return list(node["inputs"]) if "inputs" in node else [node["input"]]


def to_numpy(v):
    """torch tensors (anywhere in nested dicts / lists) as numpy arrays; everything else as is."""
    if hasattr(v, "detach") and hasattr(v, "numpy"):
        return v.detach().cpu().numpy()
    if isinstance(v, dict):
        return {k: to_numpy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [to_numpy(x) for x in v]
    if isinstance(v, tuple):
        return tuple(to_numpy(x) for x in v)
    return v


def make(model: str, num_classes: int, input_size: int, crop_ratio: float, tensors: dict, nodes: list,
         recipe: str = "hardware", kind: str = "quantized", techniques=(), **extra) -> dict:
    """An IR dict from the producer's tensors and nodes (checked as :func:`load` checks a file)."""
    if kind not in KINDS:
        raise ValueError(f"IR kind {kind!r}: one of {', '.join(KINDS)}")
    ir = dict(format=FORMAT, version=VERSION, kind=kind, model=str(model), num_classes=int(num_classes),
              input_size=int(input_size), crop_ratio=float(crop_ratio), recipe=recipe,
              techniques=list(techniques), tensors=to_numpy(tensors), nodes=to_numpy(nodes),
              graph_input="input", graph_output=nodes[-1]["output"], **extra)
    return validate(ir, "IR")


def save(path: str | Path, ir: dict) -> Path:
    """Write ``ir`` (from :func:`make`) to ``path`` (a torch archive, see the module docstring)."""
    import torch
    validate(ir, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ir, path)
    return path


def load(path_or_ir) -> dict:
    """Read ``quantized.pt`` (or take an IR dict), convert its arrays to numpy and check it,
    naming the missing or malformed field."""
    if isinstance(path_or_ir, dict):
        return validate(_arrays_to_numpy(path_or_ir), "quantized model")
    p = Path(path_or_ir)
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found; produce it with `python main_imagenet.py ... --output DIR` "
                                "(it writes DIR/quantized.pt)")
    try:
        import torch
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{p} is not a readable quantized.pt: {e}") from None
    return validate(_arrays_to_numpy(obj) if isinstance(obj, dict) else obj, str(p))


def _arrays_to_numpy(obj: dict) -> dict:
    return dict(obj, **{k: to_numpy(obj[k]) for k in ("tensors", "nodes") if k in obj})


def validate(obj, where: str) -> dict:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{where}: not a {FORMAT} file (format field: {got!r})")
    if obj.get("version") not in READABLE:
        raise ValueError(f"{where}: format version {obj.get('version')!r}; this reader understands "
                         f"{', '.join(map(str, READABLE))} (docs/quantized_format.md): re-export it with this "
                         "version of quant/")
    for key in TOP_FIELDS:
        if key not in obj:
            raise ValueError(f"{where}: missing field {key!r} (docs/quantized_format.md)")
    if obj["version"] == 2:       # upgrade in memory: v2 had no kind / weight_shape
        obj = dict(obj, version=VERSION, kind="quantized",
                   nodes=[dict(n, weight_shape=tuple(np.shape(n["weight_codes"]))) if n.get("op") in MAC_OPS
                          and "weight_shape" not in n and "weight_codes" in n else n for n in obj["nodes"]])
    obj.setdefault("kind", "quantized")
    if obj["kind"] not in KINDS:
        raise ValueError(f"{where}: kind {obj['kind']!r} is neither of {', '.join(KINDS)}")
    if not isinstance(obj["nodes"], list) or not obj["nodes"]:
        raise ValueError(f"{where}: `nodes` must be a non-empty list")
    if not isinstance(obj["tensors"], dict):
        raise ValueError(f"{where}: `tensors` must be a dict")
    quantized = obj["kind"] == "quantized"
    for i, node in enumerate(obj["nodes"]):
        if not isinstance(node, dict):
            raise ValueError(f"{where}: node {i} is not a dict")
        op, kind = node.get("op"), node_kind(node)
        if kind not in NODE_FIELDS:
            raise ValueError(f"{where}: node {i} ({node.get('name')!r}) has op {op!r}, which the IR does not know "
                             f"(known ops: {', '.join(OPS)})")
        need = NODE_FIELDS[kind]
        if kind == "mac":
            need += NODE_FIELDS["mac_quantized"] if quantized else ()
            need += NODE_FIELDS["conv"] if op != "linear" else ()
        for key in need:
            if key not in node:
                raise ValueError(f"{where}: node {i} ({node.get('name')!r}, op {op}) is missing field {key!r}")
        for t in node_inputs(node) + [node["output"]] + [node[k] for k in ("pre", "kv", "ks") if k in node]:
            if t not in obj["tensors"]:
                raise ValueError(f"{where}: node {i} ({node['name']!r}) uses tensor {t!r}, which `tensors` "
                                 "does not describe")
    for name, t in obj["tensors"].items():
        for key in TENSOR_FIELDS:
            if key not in t:
                raise ValueError(f"{where}: tensor {name!r} is missing field {key!r}")
    return obj


# --------------------------------------------------------------------------- formats vs a configuration
def tensor_format(ir: dict, name: str) -> formats.IntFormat:
    t = ir["tensors"][name]
    return formats.tensor_format(t["bits"], t["signed"])


def check_formats(ir: dict, cfg: AccelConfig) -> None:
    """Refuse a model whose formats ``cfg`` cannot execute, naming the tensor or node and why.

    A narrower format than the machine's is fine (the units clamp to each tensor's
    own code range); a wider one is not.
    """
    F = formats.formats(cfg)
    out = ir["graph_output"]

    def need(fmt: formats.IntFormat, machine: formats.IntFormat, what: str, why: str):
        if not fmt.fits_in(machine):
            raise ValueError(f"{what}: {fmt.describe()} codes, but preset {cfg.name!r} {why} "
                             f"{machine.describe()}; quantize with narrower formats or pick a wider configuration")

    for name, t in ir["tensors"].items():
        if name == out:
            need(tensor_format(ir, name), F.logits, f"tensor {name!r} (the logits)", "stores logits as")
        elif t["signed"]:
            need(tensor_format(ir, name), F.kv, f"tensor {name!r}", "holds signed attention codes as")
        else:
            need(tensor_format(ir, name), F.act, f"tensor {name!r}", "stores activations as")
    for node in ir["nodes"]:
        if node_kind(node) == "mac":
            need(formats.weight(int(node["weight_bits"])), F.weight, f"node {node['name']!r} weights",
                 "multiplies weights of")
        if node["op"] == "attention":
            need(formats.IntFormat(int(node["log2_bits"]), False), F.log2_code,
                 f"node {node['name']!r} divisor code", "encodes the divisor exponent in")
            frac = int(node.get("log2_frac", 0))    # optional: absent in files from before the mantissa bit
            if frac not in formats.LOG2_STEPS:
                raise ValueError(f"node {node['name']!r}: the divisor has {frac} mantissa bits; the machine "
                                 f"takes 0..{formats.LOG2_FRAC_BITS_MAX} (quantize with or without --no_log2_mantissa)")
