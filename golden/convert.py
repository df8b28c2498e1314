"""Fake-quant model -> integer model: int8 weights, int32 folded biases, (M, n) multipliers, zero points,
hardswish knees, log2 windows, LayerNorm integers (golden/SPEC.md sections 1-8, 10).

The integer model is plain data: nested dicts and lists of numpy integer
arrays and Python ints (no float survives conversion), so golden/execute.py
runs it with golden/ops.py only.

Sources:
* ``from_qmodel(qmodel)``: an in-memory ``quant.qmodel.QEfficientViT``
  (quantizers calibrated and enabled);
* ``load_quantized(path)``: a ``quantized.pt`` written by quant/export.py
  (format: docs/quantized_format.md), checked for format and version.

Every real factor becomes an ``(M, n)`` pair by ``ops.quantize_multiplier``;
every conversion that is not exact with respect to the fake-quant model is
listed in ``model["notes"]`` (e.g. the stem's per-input-channel scales).
"""
from __future__ import annotations

import numpy as np

from . import ops

INT_MODEL_VERSION = 1


# --------------------------------------------------------------------------- small helpers
def _np(t) -> np.ndarray:
    """A torch tensor (or array) as float64 numpy."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def _int_round(a) -> np.ndarray:
    """Round half up to int64 (the converter's one rounding rule, like rshift_round)."""
    return np.floor(np.asarray(a, dtype=np.float64) + 0.5).astype(np.int64)


def _mults(reals, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return ops.quantize_multipliers(np.asarray(reals, dtype=np.float64))
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


def act_params(q, channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float) and integer zero point of an ActQuantizer, per channel when ``channels`` is given.

    Filter-wise shifting's per-channel offset is included in the zero point.
    """
    if not q.enabled:
        raise ValueError(f"activation quantizer {q.name} is disabled: golden/ needs a fully quantized model")
    s = np.abs(_np(q.scale))
    z = _np(q.zero_point)
    if q.channel_index.numel():
        idx = q.channel_index.cpu().numpy()
        s, z = s[idx], z[idx]
    elif channels is not None and q.groups == 1:
        s, z = np.full(channels, s[0]), np.full(channels, z[0])
    zi = _int_round(z)
    if q.shift.numel():
        sh = _np(q.shift)
        s = np.broadcast_to(s, sh.shape).copy()
        zi = np.broadcast_to(zi, sh.shape) - _int_round(sh / s)
    return s, zi


def _scalar(a: np.ndarray, what: str):
    a = np.asarray(a)
    if a.size and np.all(a == a.flat[0]):
        return a.flat[0]
    raise ValueError(f"{what} must be one value per tensor, got {a.size} different values")


# --------------------------------------------------------------------------- ops
class Notes(list):
    """Conversion notes (strings), plus each MAC's float accumulator scale for diagnostics only
    (``acc_scales``; never part of the integer model)."""

    def __init__(self):
        super().__init__()
        self.acc_scales: dict[str, np.ndarray] = {}


def conv_node(op, s_x: np.ndarray, z_x: np.ndarray, notes: Notes, kind: str = "conv") -> dict:
    """One QConv/QLinear: integer weights, folded bias, and its output stage (requant or hardswish)."""
    if op.wq is None or not op.wq.enabled:
        raise ValueError(f"{op.name}: weights are not quantized")
    if bool((op.wq.zero_point != 0).any()):
        raise ValueError(f"{op.name}: asymmetric weights (the reference recipe); golden/ runs the hardware "
                         "recipe only (symmetric weights, see golden/SPEC.md section 0)")
    w = _int_round(_np(op.wq.codes(op.weight)))
    s_w = np.abs(_np(op.wq.scale)).reshape(-1)
    if s_w.size == 1:
        s_w = np.full(w.shape[0], s_w[0])
    bias = _np(op.bias)
    cout = w.shape[0]
    groups = getattr(op, "groups", 1)
    cin = w.shape[1] * groups
    s_x = np.broadcast_to(np.asarray(s_x, dtype=np.float64), (cin,))
    # the accumulator of output channel c has scale s_in(c) * s_w[c]: s_in must be uniform over
    # the input channels that c sums (per-tensor, depthwise, or uniform per group)
    per_group = s_x.reshape(groups, -1)
    if np.all(per_group == per_group[:, :1]):
        s_in = np.repeat(per_group[:, 0], cout // groups)
    else:
        # per-input-channel scales meeting one filter (the stem's normalisation): fold them into the
        # weights against the group's largest scale and re-round the codes (not exact w.r.t. fake quant)
        ref = per_group.max(axis=1)                              # (groups,)
        ratio = per_group / ref[:, None]                         # (groups, cin_g), <= 1: codes stay in range
        r_c = ratio[np.arange(cout) // (cout // groups)]         # (cout, cin_g)
        w = _int_round(w * (r_c[:, :, None, None] if w.ndim == 4 else r_c))
        s_in = np.repeat(ref, cout // groups)
        notes.append(f"{op.name}: per-input-channel input scales folded into the weights and the codes "
                     "re-rounded (the fake-quant model quantizes the weights before this fold)")
    s_acc = s_in * s_w
    notes.acc_scales[op.name] = s_acc
    b_int = _int_round(bias / s_acc)
    z_x = np.asarray(z_x, dtype=np.int64)
    z_fold = z_x if z_x.ndim == 0 or not np.all(z_x == z_x.flat[0]) else z_x.flat[0]
    node = dict(name=op.name, kind=kind, w=w.astype(np.int8), bias=ops.fold_bias(b_int, w, z_fold, groups),
                z_x=np.asarray(z_fold, dtype=np.int64))
    if kind == "conv":
        node.update(stride=_sq(op.stride, op.name), padding=_sq(op.padding, op.name), groups=int(groups))
    # output stage
    s_out, z_out = act_params(op.out_q, cout)
    div = _np(op.out_div) if op.out_div.numel() else np.ones(cout)
    if op.act == "hswish":
        s_p, z_p = act_params(op.pre_q)
        s_p, z_p = float(s_p[0]), int(z_p[0])
        node["pre"] = dict(zip(("M", "n"), _mults(s_acc / s_p, f"{op.name} pre-activation requant")))
        node["pre"]["z"] = np.int64(z_p)
        node["hswish"] = dict(t3=np.int64(max(ops.hardswish_t3(s_p), 1)), z_p=np.int64(z_p))
        node["hswish"].update(zip(("M", "n"), _mults(s_p * s_p / (6.0 * div * s_out), f"{op.name} hardswish")))
        node["hswish"]["z_out"] = z_out.astype(np.int64)
    elif op.act is None:
        node["requant"] = dict(zip(("M", "n"), _mults(s_acc / (div * s_out), f"{op.name} requant")))
        node["requant"]["z_out"] = z_out.astype(np.int64)
        lo, hi = op.out_q.code_range
        node["requant"].update(lo=int(lo), hi=int(hi))
    else:
        raise ValueError(f"{op.name}: activation {op.act!r} has no integer unit")
    # the consumer sees scale s_out: migration's 1/div is already inside its (multiplied) filters
    return node, s_out, z_out


def add_node(add, s_a, z_a, s_b, z_b) -> tuple[dict, float, np.ndarray]:
    s_o, z_o = act_params(add.out_q)
    s_a, s_b, s_o = (float(_scalar(v, f"{add.name}: scale")) for v in (s_a, s_b, s_o))
    Ma, Mb, n = ops.quantize_multiplier_pair(s_a / s_o, s_b / s_o)
    node = dict(name=add.name, z_a=np.int64(_scalar(z_a, f"{add.name}: z_a")),
                z_b=np.int64(_scalar(z_b, f"{add.name}: z_b")), Ma=np.int64(Ma), Mb=np.int64(Mb), n=np.int64(n),
                z_out=np.int64(z_o[0]))
    return node, s_o, z_o


def core_node(core, s_q, z_q, s_k, z_k, s_v, z_v, s_o) -> dict:
    """One QAttnCore (all heads of one branch): kv / ks requant, log2 window, output multipliers."""
    if not core.log2:
        raise ValueError(f"{core.name}: the divisor is not log2-quantized; the accelerator only divides by shifts "
                         "(quantize with the log2 technique on)")
    H, d = core.heads, core.dim
    s_kv = np.abs(_np(core.kv_q.scale)).reshape(H, d)
    if bool((core.kv_q.zero_point != 0).any()):
        raise ValueError(f"{core.name}: kv quantizer has a nonzero zero point (must be symmetric)")
    s_ks = np.abs(_np(core.ks_q.scale)).reshape(H)
    if bool((core.ks_q.zero_point != 0).any()):
        raise ValueError(f"{core.name}: k-sum quantizer has a nonzero zero point (must be 0: values >= 0)")
    M_kv, n_kv = _mults(s_k * s_v / s_kv, f"{core.name} kv requant")
    M_ks, n_ks = _mults(s_k / s_ks, f"{core.name} k-sum requant")
    M_o, n_o = _mults(s_kv / (s_ks[:, None] * s_o), f"{core.name} output (divide) requant")
    e_lo = int(core.e_lo)
    bits = int(core.log2_bits)
    if int(n_o.min()) + e_lo < 0 or int(n_o.max()) + e_lo + (1 << bits) - 1 > ops.SHIFT_MAX:
        raise ValueError(f"{core.name}: output shifts n_o in [{int(n_o.min())}, {int(n_o.max())}] with the log2 "
                         f"window [{e_lo}, {e_lo + (1 << bits) - 1}] leave [0, {ops.SHIFT_MAX}]")
    return dict(name=core.name, heads=H, dim=d, z_q=np.int64(z_q), z_k=np.int64(z_k), z_v=np.int64(z_v),
                M_kv=M_kv.reshape(H, 1, d), n_kv=n_kv.reshape(H, 1, d), M_ks=M_ks.reshape(H, 1),
                n_ks=n_ks.reshape(H, 1), M_o=M_o.reshape(H, 1, d), n_o=n_o.reshape(H, 1, d), e_lo=np.int64(e_lo),
                code_bits=bits)


# --------------------------------------------------------------------------- blocks
def from_qmodel(qm, resolution: int, notes: Notes | None = None) -> dict:
    """Convert a calibrated ``QEfficientViT`` (quantizers enabled) for ``resolution`` x ``resolution`` images."""
    from quant.qmodel import QHead, QLiteMLA, QSeq
    notes = Notes() if notes is None else notes
    s_x, z_x = act_params(qm.input_q)                      # per channel (3,)
    model = dict(version=INT_MODEL_VERSION, num_classes=int(qm.num_classes), resolution=int(resolution),
                 input=dict(z=z_x.astype(np.int64)), blocks=[], notes=list(notes))
    hw = [int(resolution)]                                  # spatial size, tracked for the pool multiplier
    for blk in qm.blocks:
        if isinstance(blk, QSeq):
            s_in, z_in = s_x, z_x
            convs = []
            for op in blk.ops:
                node, s_x, z_x = conv_node(op, s_x, z_x, notes)
                convs.append(node)
                hw[0] = _out_size(hw[0], op)
            b = dict(kind="seq", name=blk.name, convs=convs, add=None)
            if blk.add is not None:
                b["add"], s_x, z_x = add_node(blk.add, s_x, z_x, s_in, z_in)
            model["blocks"].append(b)
        elif isinstance(blk, QLiteMLA):
            s_in, z_in = s_x, z_x
            qkv, s1, z1 = conv_node(blk.qkv, s_x, z_x, notes)
            agg_dw, s2, z2 = conv_node(blk.agg_dw, s1, z1, notes)
            agg_pw, s3, z3 = conv_node(blk.agg_pw, s2, z2, notes)
            s_o, z_o = act_params(blk.attn_q)
            s_o, z_o = float(s_o[0]), int(z_o[0])
            d = blk.dim
            cores = []
            for core, (s, z) in zip(blk.cores, ((s1, z1), (s3, z3))):
                # per q/k/v group: the first head's q, k, v channels carry the group's scale
                sq, sk, sv = (float(s[i * d]) for i in range(3))
                zq, zk, zv = (int(z[i * d]) for i in range(3))
                cores.append(core_node(core, sq, zq, sk, zk, sv, zv, s_o))
            proj, sp, zp = conv_node(blk.proj, np.float64(s_o), np.int64(z_o), notes)
            add, s_x, z_x = add_node(blk.add, sp, zp, s_in, z_in)
            model["blocks"].append(dict(kind="mla", name=blk.name, dim=d, qkv=qkv, agg_dw=agg_dw, agg_pw=agg_pw,
                                        cores=cores, z_attn=np.int64(z_o), proj=proj, add=add))
        elif isinstance(blk, QHead):
            model["blocks"].append(head_block(blk, s_x, z_x, notes, hw[0] * hw[0]))
        else:
            raise ValueError(f"block {type(blk).__name__} has no integer mapping")
    model["notes"] = list(notes)
    return model


def _sq(v, name: str) -> int:
    """A square stride / padding as one int (tuples from nn.Conv2d must be equal)."""
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise ValueError(f"{name}: non-square stride/padding {v} is not supported")
        v = v[0]
    return int(v)


def _out_size(h: int, op) -> int:
    k = op.weight.shape[-1]
    return (h + 2 * _sq(op.padding, op.name) - k) // _sq(op.stride, op.name) + 1


def head_block(h, s_x, z_x, notes, hw: int) -> dict:
    in_conv, s1, z1 = conv_node(h.in_conv, s_x, z_x, notes)
    s1 = float(_scalar(s1, "head input scale"))
    s_pool, z_pool = act_params(h.pool.out_q)
    s_pool, z_pool = float(s_pool[0]), int(z_pool[0])
    M, n = ops.quantize_multiplier(s1 / (hw * s_pool))
    pool = dict(name=h.pool.name, hw=int(hw), z_x=np.int64(_scalar(z1, "head.pool: z_x")), M=np.int64(M),
                n=np.int64(n), z_out=np.int64(z_pool))
    fc1, s2, z2 = conv_node(h.fc1, np.float64(s_pool), np.int64(z_pool), notes, kind="linear")
    s2, z2 = float(_scalar(s2, "fc1 output scale")), int(_scalar(z2, "fc1 zero point"))
    s_pre, z_pre = act_params(h.ln.pre_q)
    s_pre, z_pre = float(s_pre[0]), int(z_pre[0])
    s_ln, z_ln = act_params(h.ln.out_q)
    s_ln, z_ln = float(s_ln[0]), int(z_ln[0])
    eps_int, G, B, n_g = ops.layernorm_params(_np(h.ln.weight), _np(h.ln.bias), s2, s_pre, float(h.ln.eps))
    M, n = ops.quantize_multiplier(s_pre * s_pre / (6.0 * s_ln))
    ln = dict(name=h.ln.name, z_x=np.int64(z2), eps_int=np.int64(eps_int), G=G, B=B, n_g=n_g, z_pre=np.int64(z_pre),
              t3=np.int64(ops.hardswish_t3(s_pre)), M=np.int64(M), n=np.int64(n), z_out=np.int64(z_ln))
    fc2, _, _ = conv_node(h.fc2, np.float64(s_ln), np.int64(z_ln), notes, kind="linear")
    fc2["logits_bits"] = int(h.fc2.out_q.bits)
    return dict(kind="head", name=h.name, in_conv=in_conv, pool=pool, fc1=fc1, ln=ln, fc2=fc2)
