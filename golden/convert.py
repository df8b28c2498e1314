"""quantized.pt -> integer model: int8 weights, int32 folded biases, (M, n) multipliers, zero points,
hardswish knees, log2 windows, LayerNorm integers (golden/SPEC.md sections 1-8, 10).

Input: the flat graph of ``quantized.pt`` (format: docs/quantized_format.md,
written by quant/export.py): ``tensors`` (scale and zero point of every stored
tensor) and ``nodes`` (ops in execution order).  ``read_ir`` checks the
format, the version and every field golden/ uses, naming the one missing.

Output: the integer model, plain data: ``{"version", "num_classes",
"resolution", "graph_input", "graph_output", "input_z", "nodes", "notes"}``
where every node holds numpy integer arrays and Python ints only, so
golden/execute.py runs it with golden/ops.py and nothing else.  Every real
factor becomes ``(M, n)`` by ``ops.quantize_multiplier``; every conversion
that is not exact with respect to the fake-quant model is listed in
``notes`` (e.g. the stem's per-input-channel scales).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import ops

INT_MODEL_VERSION = 1
IR_FORMAT = "triovit-quantized"
IR_VERSION = 2
MAC_OPS = ("conv", "pointwise", "depthwise", "grouped", "linear")
NODE_FIELDS = {
    "mac": ("name", "input", "output", "act", "weight_codes", "weight_scale", "weight_zero_point", "bias",
            "out_div"),
    "conv": ("stride", "padding", "groups"),
    "add": ("name", "inputs", "output"),
    "attention": ("name", "input", "output", "out_channel_offset", "heads", "dim", "kv", "ks", "log2",
                  "log2_bits", "e_lo"),
    "avgpool": ("name", "input", "output"),
    "layernorm_hswish": ("name", "input", "output", "pre", "weight", "bias", "eps"),
}
TENSOR_FIELDS = ("bits", "signed", "scale", "zero_point", "enabled")


class Notes(list):
    """Conversion notes (strings), plus each MAC's float accumulator scale for diagnostics only
    (``acc_scales``; never part of the integer model)."""

    def __init__(self):
        super().__init__()
        self.acc_scales: dict[str, np.ndarray] = {}


# --------------------------------------------------------------------------- reading the IR
def read_ir(path_or_obj) -> dict:
    """Load ``quantized.pt`` (or take its dict) and check what golden/ needs, naming any missing field."""
    if isinstance(path_or_obj, dict):
        obj, where = path_or_obj, "quantized model"
    else:
        import torch
        p = Path(path_or_obj)
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found; produce it with `python main_imagenet.py ... --output DIR` "
                                    "(it writes DIR/quantized.pt)")
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise ValueError(f"{p} is not a readable quantized.pt: {e}") from None
        where = str(p)
    if not isinstance(obj, dict) or obj.get("format") != IR_FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{where}: not a {IR_FORMAT} file (format field: {got!r})")
    if obj.get("version") != IR_VERSION:
        raise ValueError(f"{where}: format version {obj.get('version')!r}; golden/ reads version {IR_VERSION} "
                         "(docs/quantized_format.md); re-export it or update golden/convert.py")
    for key in ("model", "num_classes", "input_size", "recipe", "tensors", "nodes", "graph_input", "graph_output"):
        if key not in obj:
            raise ValueError(f"{where}: missing field {key!r} (docs/quantized_format.md)")
    if obj["recipe"] != "hardware":
        raise ValueError(f"{where}: recipe {obj['recipe']!r}; golden/ runs the hardware recipe only (symmetric "
                         "weights, golden/SPEC.md section 0): quantize without --recipe reference")
    for i, node in enumerate(obj["nodes"]):
        op = node.get("op")
        kind = "mac" if op in MAC_OPS else op
        if kind not in NODE_FIELDS:
            raise ValueError(f"{where}: node {i} ({node.get('name')!r}) has op {op!r}, which golden/ does not know")
        need = NODE_FIELDS[kind] + (NODE_FIELDS["conv"] if kind == "mac" and op != "linear" else ())
        for key in need:
            if key not in node:
                raise ValueError(f"{where}: node {i} ({node.get('name')!r}, op {op}) is missing field {key!r}")
    for name, t in obj["tensors"].items():
        for key in TENSOR_FIELDS:
            if key not in t:
                raise ValueError(f"{where}: tensor {name!r} is missing field {key!r}")
    return obj


# --------------------------------------------------------------------------- small helpers
def _np(t) -> np.ndarray:
    """A torch tensor (or array / number) as float64 numpy."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def _int(t) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    a = np.asarray(t)
    if a.dtype.kind == "f":
        if not np.all(a == np.round(a)):
            raise ValueError("expected integer codes, got non-integer values")
        a = np.round(a)
    return a.astype(np.int64)


def _round(a) -> np.ndarray:
    """Round half up to int64 (the converter's one rounding rule, like rshift_round)."""
    return np.floor(np.asarray(a, dtype=np.float64) + 0.5).astype(np.int64)


TINY = 2.0 ** -33     # below this quantize_multiplier has no shift left


def _mults(reals, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(M, n) per real factor. A factor below 2^-33 times any int32 operand is below 1/4 and rounds to
    0, so (M, n) = (0, 0) is exactly what the ideal multiplier would give (dead channels)."""
    r = np.asarray(reals, dtype=np.float64)
    tiny = (r >= 0) & (r < TINY)
    try:
        M, n = ops.quantize_multipliers(np.where(tiny, 0.0, r))
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None
    return M, n


def _uniform(a, what: str):
    a = np.asarray(a).reshape(-1)
    if a.size and np.all(a == a[0]):
        return a[0]
    raise ValueError(f"{what} must be one value per tensor, got {len(np.unique(a))} different values")


def _sq(v, name: str) -> int:
    """A square stride / padding as one int (tuples must be equal)."""
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise ValueError(f"{name}: non-square stride/padding {v} is not supported")
        v = v[0]
    return int(v)


class _Tensors:
    """Scale and zero point of the IR's tensors, expanded per channel where asked."""

    def __init__(self, tensors: dict):
        self.t = tensors

    def get(self, name: str, channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.t:
            raise ValueError(f"tensor {name!r} is used by a node but not described in `tensors`")
        e = self.t[name]
        if not e["enabled"]:
            raise ValueError(f"tensor {name!r} is not quantized (enabled=False): golden/ needs a fully quantized "
                             "model (quantize with activation quantization on)")
        s, z = np.abs(_np(e["scale"])), _int(e["zero_point"])
        if channels is not None:
            s = np.broadcast_to(s.reshape(-1) if s.size > 1 else s.reshape(()), (channels,)).copy()
            z = np.broadcast_to(z.reshape(-1) if z.size > 1 else z.reshape(()), (channels,)).copy()
        return s, z

    def entry(self, name: str) -> dict:
        return self.t[name]


# --------------------------------------------------------------------------- nodes
def mac_node(node: dict, T: _Tensors, notes: Notes, graph_output: str) -> dict:
    """conv / linear: integer weights, folded bias, and the output stage (requant, hardswish or logits)."""
    name, op = node["name"], node["op"]
    if not bool(node.get("weight_symmetric", True)) or np.any(_int(node["weight_zero_point"]) != 0):
        raise ValueError(f"{name}: asymmetric weights (the reference recipe); golden/ runs symmetric weights only")
    w = _int(node["weight_codes"])
    wmax = (1 << (int(node.get("weight_bits", 8)) - 1)) - 1
    if np.abs(w).max() > wmax:
        raise ValueError(f"{name}: weight codes exceed the symmetric {node.get('weight_bits', 8)}-bit range")
    cout = w.shape[0]
    s_w = np.broadcast_to(np.abs(_np(node["weight_scale"])).reshape(-1), (cout,)).copy()
    groups = int(node.get("groups", 1)) if op != "linear" else 1
    cin = w.shape[1] * groups
    s_x, z_x = T.get(node["input"], cin)
    # The accumulator of output channel c has scale s_in(c) s_w[c]: s_in must be uniform over the
    # input channels c sums (per tensor, depthwise, or uniform per group).
    per_group = s_x.reshape(groups, -1)
    if np.all(per_group == per_group[:, :1]):
        s_in = np.repeat(per_group[:, 0], cout // groups)
    else:
        # per-input-channel scales meeting one filter (the stem's pixel normalisation): fold them into
        # the weights against the group's largest scale and re-round the codes (not exact w.r.t. the
        # fake-quant model, which quantizes the weights before this fold)
        ref = per_group.max(axis=1)
        r_c = (per_group / ref[:, None])[np.arange(cout) // (cout // groups)]       # (cout, cin_g) <= 1
        w = _round(w * (r_c[:, :, None, None] if w.ndim == 4 else r_c))
        s_in = np.repeat(ref, cout // groups)
        notes.append(f"{name}: per-input-channel input scales folded into the integer weights, codes re-rounded "
                     "(exact only if the fake-quant model quantizes the folded weights)")
    s_acc = s_in * s_w
    notes.acc_scales[name] = s_acc
    b_int = _round(_np(node["bias"]).reshape(-1) / s_acc)
    z_fold = z_x if not np.all(z_x == z_x[0]) else z_x[0]
    out = dict(op="linear" if op == "linear" else "conv", name=name, input=node["input"], output=node["output"],
               w=w.astype(np.int8), bias=ops.fold_bias(b_int, w, z_fold, groups), z_x=np.asarray(z_fold, np.int64))
    if op != "linear":
        out.update(stride=_sq(node["stride"], name), padding=_sq(node["padding"], name), groups=groups)
    s_out, z_out = T.get(node["output"], cout)
    div = np.ones(cout) if node["out_div"] is None else _np(node["out_div"]).reshape(-1)
    e_out = T.entry(node["output"])
    if node["act"] == "hswish":
        # the pre-activation never leaves the requant -> hardswish pipeline: its scale, zero point
        # and knee may be per channel (or one per tensor, broadcast)
        s_p, z_p = T.get(node["pre"], cout)
        M, n = _mults(s_acc / s_p, f"{name} pre-activation requant")
        out["pre"] = dict(M=M, n=n, z=z_p)
        t3 = _knees(s_p, name)
        M, n = _mults(ops.hardswish_output_factor(s_p, t3, div * s_out), f"{name} hardswish output")
        out["hswish"] = dict(t3=t3, z_p=z_p, M=M, n=n, z_out=z_out)
    elif node["act"] is None:
        M, n = _mults(s_acc / (div * s_out), f"{name} requant")
        if node["output"] == graph_output:
            if not e_out["signed"] or np.any(z_out != 0):
                raise ValueError(f"{name}: the logits tensor must be signed with zero point 0")
            out["logits"] = dict(M=M, n=n, bits=int(e_out["bits"]))
        else:
            lo, hi = _code_range(e_out)
            out["requant"] = dict(M=M, n=n, z_out=z_out, lo=lo, hi=hi)
    else:
        raise ValueError(f"{name}: activation {node['act']!r} has no integer unit")
    return out


def _knees(s_p: np.ndarray, name: str) -> np.ndarray:
    try:
        return np.array([ops.hardswish_t3(float(v)) for v in np.reshape(s_p, -1)], dtype=np.int64)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def _code_range(e: dict) -> tuple[int, int]:
    b = int(e["bits"])
    return (-((1 << (b - 1)) - 1), (1 << (b - 1)) - 1) if e["signed"] else (0, (1 << b) - 1)


def _scalar_if_uniform(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.int64).reshape(-1)
    return v[0] if np.all(v == v[0]) else v


def _add_channels(node: dict, T: _Tensors) -> int:
    """Channels of an add: the output's `channels` field, else the widest per-channel operand."""
    c = T.entry(node["output"]).get("channels")
    if c is not None:
        return int(c)
    return max(np.size(T.get(t)[0]) for t in (*node["inputs"], node["output"]))


def add_node(node: dict, T: _Tensors, channels: int) -> dict:
    """Residual add; any operand may carry per-channel scales / zero points (the stem's output
    does), and then the multiplier pair (Ma, Mb, n) is per channel too (SPEC 4)."""
    name = node["name"]
    (a, b), out = node["inputs"], node["output"]
    (s_a, z_a), (s_b, z_b), (s_o, z_o) = T.get(a, channels), T.get(b, channels), T.get(out, channels)
    keys = [tuple(map(float, k)) for k in zip(s_a, s_b, s_o)]
    pairs = {k: ops.quantize_multiplier_pair(k[0] / k[2], k[1] / k[2]) for k in set(keys)}
    Ma, Mb, n = (np.array(v, dtype=np.int64) for v in zip(*(pairs[k] for k in keys)))
    lo, hi = _code_range(T.entry(out))
    p = {k: _scalar_if_uniform(v) for k, v in dict(z_a=z_a, z_b=z_b, Ma=Ma, Mb=Mb, n=n, z_out=z_o).items()}
    return dict(op="add", name=name, inputs=[a, b], output=out, lo=lo, hi=hi, **p)


def attention_node(node: dict, T: _Tensors) -> dict:
    """One LiteMLA branch, all heads: kv / ks requant, log2 window, output (divide) multipliers."""
    name, H, d = node["name"], int(node["heads"]), int(node["dim"])
    if not node["log2"]:
        raise ValueError(f"{name}: the divisor is not log2-quantized; the accelerator divides by shifts only "
                         "(quantize with the log2 technique on)")
    s, z = T.get(node["input"], 3 * H * d)
    # per head h the channels [h 3d, h 3d + d) are q, then k, then v; one scale / zero point per group
    grp = [np.concatenate([np.arange(h * 3 * d + g * d, h * 3 * d + (g + 1) * d) for h in range(H)]) for g in range(3)]
    (s_q, s_k, s_v), (z_q, z_k, z_v) = ([float(_uniform(s[i], f"{name}: scale")) for i in grp],
                                        [int(_uniform(z[i], f"{name}: zero point")) for i in grp])
    s_kv, z_kv = T.get(node["kv"])
    s_ks, z_ks = T.get(node["ks"])
    s_kv, s_ks = s_kv.reshape(H, d), s_ks.reshape(H)
    if np.any(z_kv != 0) or np.any(z_ks != 0) or not T.entry(node["kv"])["signed"]:
        raise ValueError(f"{name}: kv must be signed symmetric and ks unsigned with zero point 0 (SPEC 5)")
    s_o, z_o = T.get(node["output"])
    s_o, z_o = float(_uniform(s_o, f"{name}: output scale")), int(_uniform(z_o, f"{name}: z_out"))
    M_kv, n_kv = _mults(s_k * s_v / s_kv, f"{name} kv requant")
    M_ks, n_ks = _mults(s_k / s_ks, f"{name} k-sum requant")
    M_o, n_o = _mults(s_kv / (s_ks[:, None] * s_o), f"{name} output (divide) requant")
    e_lo, bits = int(node["e_lo"]), int(node["log2_bits"])
    if int(n_o.min()) + e_lo < 0 or int(n_o.max()) + e_lo + (1 << bits) - 1 > ops.SHIFT_MAX:
        raise ValueError(f"{name}: output shifts n_o in [{int(n_o.min())}, {int(n_o.max())}] with the log2 window "
                         f"[{e_lo}, {e_lo + (1 << bits) - 1}] leave [0, {ops.SHIFT_MAX}]")
    out_ch = T.entry(node["output"]).get("channels") or 2 * H * d
    return dict(op="attention", name=name, input=node["input"], output=node["output"],
                out_channel_offset=int(node["out_channel_offset"]), out_channels=int(out_ch), heads=H, dim=d,
                z_q=np.int64(z_q), z_k=np.int64(z_k), z_v=np.int64(z_v),
                M_kv=M_kv.reshape(H, 1, d), n_kv=n_kv.reshape(H, 1, d), M_ks=M_ks.reshape(H, 1),
                n_ks=n_ks.reshape(H, 1), M_o=M_o.reshape(H, 1, d), n_o=n_o.reshape(H, 1, d),
                e_lo=np.int64(e_lo), code_bits=bits, z_out=np.int64(z_o))


def avgpool_node(node: dict, T: _Tensors, hw: int) -> dict:
    name = node["name"]
    s_x, z_x = T.get(node["input"])
    s_o, z_o = T.get(node["output"])
    s_x, s_o = float(_uniform(s_x, f"{name}: input scale")), float(_uniform(s_o, f"{name}: output scale"))
    M, n = ops.quantize_multiplier(s_x / (hw * s_o))
    return dict(op="avgpool", name=name, input=node["input"], output=node["output"], hw=int(hw),
                z_x=np.int64(_uniform(z_x, f"{name}: z_x")), M=np.int64(M), n=np.int64(n),
                z_out=np.int64(_uniform(z_o, f"{name}: z_out")))


def layernorm_node(node: dict, T: _Tensors, frac_bits: int = ops.LN_FRAC_BITS,
                   recip_bits: int = ops.LN_RECIP_BITS) -> dict:
    name = node["name"]
    C = int(np.asarray(_np(node["weight"])).size)
    s_x, z_x = T.get(node["input"])
    s_p, z_p = T.get(node["pre"], C)                # per channel or broadcast
    s_o, z_o = T.get(node["output"])
    s_x, s_o = (float(_uniform(v, f"{name}: scale")) for v in (s_x, s_o))
    eps_int, G, B, n_g = ops.layernorm_params(_np(node["weight"]), _np(node["bias"]), s_x, s_p, float(node["eps"]),
                                              frac_bits=frac_bits)
    t3 = _knees(s_p, name)
    M, n = _mults(ops.hardswish_output_factor(s_p, t3, s_o), f"{name} hardswish output")
    return dict(op="layernorm_hswish", name=name, input=node["input"], output=node["output"],
                z_x=np.int64(_uniform(z_x, f"{name}: z_x")), eps_int=np.int64(eps_int), G=G, B=B, n_g=n_g,
                frac_bits=int(frac_bits), recip_bits=int(recip_bits), z_pre=z_p, t3=t3,
                M=M, n=n, z_out=np.int64(_uniform(z_o, f"{name}: z_out")))


# --------------------------------------------------------------------------- the whole graph
def from_ir(obj, notes: Notes | None = None, resolution: int | None = None) -> dict:
    """Convert a quantized.pt (path or loaded dict) into the integer model."""
    ir = read_ir(obj)
    notes = Notes() if notes is None else notes
    T = _Tensors(ir["tensors"])
    res = int(resolution or ir["input_size"])
    size = {ir["graph_input"]: res}                 # spatial size per tensor (for the pool's 1 / HW)
    _, z_in = T.get(ir["graph_input"], 3)
    nodes = []
    for node in ir["nodes"]:
        op = node["op"]
        if op in MAC_OPS:
            n = mac_node(node, T, notes, ir["graph_output"])
            if op != "linear":
                k = _int(node["weight_codes"]).shape[-1]
                size[node["output"]] = (size[node["input"]] + 2 * n["padding"] - k) // n["stride"] + 1
        elif op == "add":
            n = add_node(node, T, _add_channels(node, T))
            size[node["output"]] = size[node["inputs"][0]]
        elif op == "attention":
            n = attention_node(node, T)
            size[node["output"]] = size[node["input"]]
        elif op == "avgpool":
            n = avgpool_node(node, T, size[node["input"]] ** 2)
        elif op == "layernorm_hswish":
            n = layernorm_node(node, T)
        else:  # read_ir refused it already
            raise ValueError(f"unknown op {op!r}")
        nodes.append(n)
    return dict(version=INT_MODEL_VERSION, model=str(ir["model"]), num_classes=int(ir["num_classes"]),
                resolution=res, graph_input=ir["graph_input"], graph_output=ir["graph_output"],
                input_z=z_in.astype(np.int64), nodes=nodes, notes=list(notes))


def from_qmodel(qm, model_name: str, notes: Notes | None = None, resolution: int | None = None) -> dict:
    """Convert an in-memory fake-quant ``QEfficientViT`` through quant/'s own exporter (same path as a file)."""
    from quant.export import FORMAT, FORMAT_VERSION, build_graph
    from quant.models import get_spec
    g = build_graph(qm)
    obj = dict(format=FORMAT, version=FORMAT_VERSION, model=model_name, num_classes=qm.num_classes,
               input_size=get_spec(model_name).input_size, recipe="hardware", tensors=g.tensors, nodes=g.nodes,
               graph_input="input", graph_output=g.nodes[-1]["output"])
    return from_ir(obj, notes, resolution)
