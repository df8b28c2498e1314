"""quantized.pt -> integer model: int8 weights, int32 folded biases, (M, n) multipliers, zero points,
hardswish knees, log2 windows, LayerNorm integers (golden/SPEC.md sections 1-8, 10).

Input: the IR (arch/ir.py, format: docs/quantized_format.md): ``tensors``
(scale, zero point and format of every stored tensor) and ``nodes`` (ops in
execution order), read by ``arch.ir.load``, which checks the format, the
version and every field, naming the one missing.  ``arch.ir.check_formats``
refuses a model whose formats the configuration cannot execute.

Output: the integer model, plain data: ``{"version", "num_classes",
"resolution", "graph_input", "graph_output", "input_z", "nodes", "notes"}``
where every node holds numpy integer arrays and Python ints only, so
golden/execute.py runs it with golden/ops.py and nothing else.  Every output
stage carries the code range ``lo``/``hi`` of the tensor it writes (its own
format, not the machine's widest), and every MAC its operand widths.  Every
real factor becomes ``(M, n)`` by ``ops.quantize_multiplier``; every
conversion that is not exact with respect to the fake-quant model is listed in
``notes`` (e.g. the stem's per-input-channel scales).
"""
from __future__ import annotations

import numpy as np

from arch import ir as arch_ir
from arch import formats
from arch import graph as arch_graph
from arch.config import AccelConfig
from arch.formats import LOG2_STEPS

from . import ops

INT_MODEL_VERSION = 2     # 2: lo/hi on every output stage, operand widths on every MAC
MAC_OPS = arch_ir.MAC_OPS


class Notes(list):
    """Conversion notes (strings), plus each MAC's float accumulator scale for diagnostics only
    (``acc_scales``; never part of the integer model)."""

    def __init__(self):
        super().__init__()
        self.acc_scales: dict[str, np.ndarray] = {}


def read_ir(path_or_obj, cfg: AccelConfig | None = None) -> dict:
    """The IR of a quantized model that golden/ can run on ``cfg`` (default: the default configuration)."""
    ir = arch_ir.load(path_or_obj)
    if ir["kind"] != "quantized":
        raise ValueError(f"{ir['model']}: a {ir['kind']} IR has no integer parameters; golden/ runs quantized "
                         "models (main_imagenet.py --act_quant --output DIR)")
    if ir["recipe"] != "hardware":
        raise ValueError(f"{ir['model']}: recipe {ir['recipe']!r}; golden/ runs the hardware recipe only (symmetric "
                         "weights, golden/SPEC.md section 0): quantize without --recipe reference")
    arch_ir.check_formats(ir, cfg or AccelConfig())
    return ir


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
               w=w.astype(np.int8), bias=ops.fold_bias(b_int, w, z_fold, groups), z_x=np.asarray(z_fold, np.int64),
               x_bits=int(T.entry(node["input"])["bits"]), w_bits=int(node["weight_bits"]))
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
        lo, hi = _code_range(T.entry(node["pre"]))
        out["pre"] = dict(M=M, n=n, z=z_p, lo=lo, hi=hi)
        t3 = _knees(s_p, name)
        M, n = _mults(ops.hardswish_output_factor(s_p, t3, div * s_out), f"{name} hardswish output")
        lo, hi = _code_range(e_out)
        out["hswish"] = dict(t3=t3, z_p=z_p, M=M, n=n, z_out=z_out, lo=lo, hi=hi)
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
    f = formats.tensor_format(e["bits"], e["signed"])
    return f.lo, f.hi


def _scalar_if_uniform(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.int64).reshape(-1)
    return v[0] if np.all(v == v[0]) else v


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


def attention_node(node: dict, T: _Tensors, shift_max: int = ops.SHIFT_MAX) -> dict:
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
    e_lo, bits, frac = int(node["e_lo"]), int(node["log2_bits"]), int(node.get("log2_frac", 0))
    # the divisor's mantissa bit, (4/3) 2^e: a second multiplier row per column holds the 3/4 (SPEC 5.5)
    half = {}
    if frac:
        step = float(LOG2_STEPS[frac][1])
        M_o1, n_o1 = _mults(s_kv / (s_ks[:, None] * s_o) / step, f"{name} output (mantissa-bit divide) requant")
        half = dict(M_o1=M_o1.reshape(H, 1, d), n_o1=n_o1.reshape(H, 1, d))
    n_all = np.concatenate([n_o.ravel()] + ([half["n_o1"].ravel()] if frac else []))
    if int(n_all.min()) + e_lo < 0 or int(n_all.max()) + e_lo + (1 << bits) - 1 > shift_max:
        raise ValueError(f"{name}: output shifts n_o in [{int(n_all.min())}, {int(n_all.max())}] with the log2 window "
                         f"[{e_lo}, {e_lo + (1 << bits) - 1}] leave [0, {shift_max}]")
    out_ch = T.entry(node["output"]).get("channels") or 2 * H * d
    lo, hi = _code_range(T.entry(node["output"]))
    return dict(op="attention", name=name, input=node["input"], output=node["output"], lo=lo, hi=hi,
                kv_bits=int(T.entry(node["kv"])["bits"]),
                out_channel_offset=int(node["out_channel_offset"]), out_channels=int(out_ch), heads=H, dim=d,
                z_q=np.int64(z_q), z_k=np.int64(z_k), z_v=np.int64(z_v),
                M_kv=M_kv.reshape(H, 1, d), n_kv=n_kv.reshape(H, 1, d), M_ks=M_ks.reshape(H, 1),
                n_ks=n_ks.reshape(H, 1), M_o=M_o.reshape(H, 1, d), n_o=n_o.reshape(H, 1, d),
                e_lo=np.int64(e_lo), code_bits=bits, frac_bits=frac, z_out=np.int64(z_o), **half)


def avgpool_node(node: dict, T: _Tensors, hw: int) -> dict:
    name = node["name"]
    s_x, z_x = T.get(node["input"])
    s_o, z_o = T.get(node["output"])
    s_x, s_o = float(_uniform(s_x, f"{name}: input scale")), float(_uniform(s_o, f"{name}: output scale"))
    M, n = ops.quantize_multiplier(s_x / (hw * s_o))
    lo, hi = _code_range(T.entry(node["output"]))
    return dict(op="avgpool", name=name, input=node["input"], output=node["output"], hw=int(hw), lo=lo, hi=hi,
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
    (pre_lo, pre_hi), (lo, hi) = _code_range(T.entry(node["pre"])), _code_range(T.entry(node["output"]))
    return dict(op="layernorm_hswish", name=name, input=node["input"], output=node["output"],
                pre_lo=pre_lo, pre_hi=pre_hi, lo=lo, hi=hi,
                z_x=np.int64(_uniform(z_x, f"{name}: z_x")), eps_int=np.int64(eps_int), G=G, B=B, n_g=n_g,
                frac_bits=int(frac_bits), recip_bits=int(recip_bits), z_pre=z_p, t3=t3,
                M=M, n=n, z_out=np.int64(_uniform(z_o, f"{name}: z_out")))


# --------------------------------------------------------------------------- the whole graph
def from_ir(obj, notes: Notes | None = None, resolution: int | None = None, cfg: AccelConfig | None = None) -> dict:
    """Convert a quantized.pt (path or IR dict) into the integer model for ``cfg`` (default configuration)."""
    cfg = cfg or AccelConfig()
    ir = read_ir(obj, cfg)
    notes = Notes() if notes is None else notes
    T = _Tensors(ir["tensors"])
    graph = arch_graph.infer(ir, resolution)
    F = formats.formats(cfg)
    _, z_in = T.get(ir["graph_input"], 3)
    nodes = []
    for node, info in zip(ir["nodes"], graph.nodes):
        op = node["op"]
        if op in MAC_OPS:
            n = mac_node(node, T, notes, ir["graph_output"])
        elif op == "add":
            n = add_node(node, T, info.cout)
        elif op == "attention":
            n = attention_node(node, T, F.shift_max)
        elif op == "avgpool":
            n = avgpool_node(node, T, info.h * info.w)
        elif op == "layernorm_hswish":
            n = layernorm_node(node, T, F.ln_frac_bits, F.ln_recip_bits)
        else:  # arch.ir.load refused it already
            raise ValueError(f"unknown op {op!r}")
        nodes.append(n)
    return dict(version=INT_MODEL_VERSION, model=str(ir["model"]), num_classes=int(ir["num_classes"]),
                resolution=graph.resolution, graph_input=ir["graph_input"], graph_output=ir["graph_output"],
                input_z=z_in.astype(np.int64), nodes=nodes, notes=list(notes))
