"""Integer-only inference of a converted EfficientViT (golden/convert.py) with golden/ops.py.

Images enter as uint8 pixels ``(N, 3, H, W)``; logits leave as int16-range
codes.  Every arithmetic step is a ``golden.ops`` call made through a
``vectors.Recorder`` (which can dump it as a golden vector), and every
accumulator is measured (``Stats``) for comparison with the SPEC's
worst-case bounds (section 9).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .vectors import Recorder


@dataclass
class Stats:
    """Largest |value| seen per accumulator kind (and the largest folded bias), with the layer, and
    the MACs executed (counted from the operand arrays, all images)."""
    max_abs: dict[str, int] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    macs: int = 0

    def track(self, kind: str, layer: str, a) -> None:
        a = np.asarray(a)
        if a.size == 0:
            return
        m = int(np.abs(a).max())
        if m > self.max_abs.get(kind, -1):
            self.max_abs[kind] = m
            self.where[kind] = layer


def mac_kind(node: dict) -> str:
    """The SPEC 9 product type of a MAC node."""
    if node["op"] == "linear":
        return "linear"
    w, g = node["w"], node["groups"]
    if g == 1:
        return "pointwise conv" if w.shape[2] * w.shape[3] == 1 else "generic conv"
    return "depthwise conv" if w.shape[1] == 1 and g == w.shape[0] else "grouped conv"


def run_mac(node: dict, x: np.ndarray, rec: Recorder, st: Stats) -> np.ndarray:
    """conv2d / linear, then the output stage: requantize, pre-activation + hardswish, or logits."""
    name = node["name"]
    bits = dict(x_bits=node["x_bits"], w_bits=node["w_bits"])
    if node["op"] == "linear":
        acc = rec.call(name, "linear", x=x, w=node["w"], bias=node["bias"], **bits)
    else:
        acc = rec.call(name, "conv2d", x=x, z_x=node["z_x"], w=node["w"], bias=node["bias"], stride=node["stride"],
                       padding=node["padding"], groups=node["groups"], **bits)
    st.macs += acc.size * node["w"][0].size          # outputs x taps per output
    st.track(mac_kind(node), name, acc)
    st.track("folded bias", name, node["bias"])
    if "hswish" in node:
        pre, hs = node["pre"], node["hswish"]
        p = rec.call(name, "requantize", acc=acc, M=pre["M"], n=pre["n"], z_out=pre["z"], lo=pre["lo"], hi=pre["hi"])
        return rec.call(name, "hardswish", p=p, z_p=hs["z_p"], t3=hs["t3"], M=hs["M"], n=hs["n"], z_out=hs["z_out"],
                        lo=hs["lo"], hi=hs["hi"])
    if "logits" in node:
        lg = node["logits"]
        return rec.call(name, "logits_requant", acc=acc, M=lg["M"], n=lg["n"], bits=lg["bits"])
    rq = node["requant"]
    return rec.call(name, "requantize", acc=acc, M=rq["M"], n=rq["n"], z_out=rq["z_out"], lo=rq["lo"], hi=rq["hi"])


def split_qkv(node: dict, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, 3 H d, h, w) codes -> q, k, v token-major (B, H, N, d): per head h the channels
    [h 3d, h 3d + d) are q, then k, then v (timm's layout)."""
    B, _, h, w = t.shape
    H, d = node["heads"], node["dim"]
    tt = t.reshape(B, H, 3 * d, h * w).transpose(0, 1, 3, 2)
    return tt[..., :d], tt[..., d:2 * d], tt[..., 2 * d:]


def attention_kv_half(node: dict, t: np.ndarray, rec: Recorder, st: Stats) -> tuple[np.ndarray, np.ndarray]:
    """k^T [v | 1] of every head, requantized: the kv codes (B, H, d, d) and k-sum codes (B, H, d)."""
    name = node["name"]
    _, k, v = split_qkv(node, t)
    kv_acc, ksum = rec.call(name, "attention_kv", k=k, z_k=node["z_k"], v=v, z_v=node["z_v"])
    st.track("attention k^T v", name, kv_acc)
    st.track("attention k-sum", name, ksum)
    st.macs += k.size * (v.shape[-1] + 1)                # B H N d (d + 1)
    return rec.call(name, "attention_requant_kv", kv_acc=kv_acc, ksum=ksum, M_kv=node["M_kv"], n_kv=node["n_kv"],
                    M_ks=node["M_ks"], n_ks=node["n_ks"], bits=node["kv_bits"])


def attention_qkv_half(node: dict, t: np.ndarray, kv: np.ndarray, ks: np.ndarray, rec: Recorder,
                       st: Stats) -> np.ndarray:
    """q [kv | ks] of every head, the log2 divisor and the shift division: (B, H d, h, w) codes."""
    name = node["name"]
    B, _, h, w = t.shape
    q, _, _ = split_qkv(node, t)
    num, den = rec.call(name, "attention_num_den", q=q, z_q=node["z_q"], kv=kv, ks=ks)
    st.track("attention q kv (numerator)", name, num)
    st.track("attention q ks (denominator)", name, den)
    st.macs += q.size * (kv.shape[-1] + 1)               # B H N d (d + 1)
    b = int(node.get("frac_bits", 0))
    e, code = rec.call(name, "log2_code", den=den, e_lo=node["e_lo"], code_bits=node["code_bits"], frac_bits=b)
    half = dict(f=code & ((1 << b) - 1), M_o1=node["M_o1"], n_o1=node["n_o1"]) if b else {}
    out = rec.call(name, "attention_divide", num=num, e=e, M_o=node["M_o"], n_o=node["n_o"], z_out=node["z_out"],
                   lo=node["lo"], hi=node["hi"], **half)
    return out.transpose(0, 1, 3, 2).reshape(B, -1, h, w)            # channel = head * d + j


def run_attention(node: dict, t: np.ndarray, rec: Recorder, st: Stats) -> np.ndarray:
    """One attention branch, all heads: (B, 3 H d, h, w) codes -> (B, H d, h, w) codes."""
    kv, ks = attention_kv_half(node, t, rec, st)
    return attention_qkv_half(node, t, kv, ks, rec, st)


def run_add(node: dict, a: np.ndarray, b: np.ndarray, rec: Recorder) -> np.ndarray:
    return rec.call(node["name"], "residual_add", a=a, z_a=node["z_a"], Ma=node["Ma"], b=b, z_b=node["z_b"],
                    Mb=node["Mb"], n=node["n"], z_out=node["z_out"], lo=node["lo"], hi=node["hi"])


def run_pool(node: dict, x: np.ndarray, rec: Recorder, st: Stats) -> np.ndarray:
    st.track("global avgpool sum", node["name"], (x - node["z_x"]).sum(axis=(2, 3)))
    return rec.call(node["name"], "global_avgpool", x=x, z_x=node["z_x"], M=node["M"], n=node["n"],
                    z_out=node["z_out"], lo=node["lo"], hi=node["hi"])


def run_layernorm(node: dict, x: np.ndarray, rec: Recorder) -> np.ndarray:
    """The head's LayerNorm to the pre-activation, then its hardswish."""
    name = node["name"]
    p = rec.call(name, "layernorm", x=x, z_x=node["z_x"], eps_int=node["eps_int"], G=node["G"], B=node["B"],
                 n_g=node["n_g"], z_out=node["z_pre"], lo=node["pre_lo"], hi=node["pre_hi"],
                 frac_bits=node["frac_bits"], recip_bits=node["recip_bits"])
    return rec.call(name, "hardswish", p=p, z_p=node["z_pre"], t3=node["t3"], M=node["M"], n=node["n"],
                    z_out=node["z_out"], lo=node["lo"], hi=node["hi"])


def run_node(node: dict, env: dict, rec: Recorder, st: Stats) -> None:
    op = node["op"]
    if op in ("conv", "linear"):
        env[node["output"]] = run_mac(node, env[node["input"]], rec, st)
    elif op == "add":
        env[node["output"]] = run_add(node, *(env[i] for i in node["inputs"]), rec)
    elif op == "attention":
        t = env[node["input"]]
        out = env.get(node["output"])
        if out is None:                       # both branches write one tensor, each its channel range
            out = env[node["output"]] = np.zeros((t.shape[0], node["out_channels"], *t.shape[2:]), np.int64)
        o = node["out_channel_offset"]
        out[:, o:o + node["heads"] * node["dim"]] = run_attention(node, t, rec, st)
    elif op == "avgpool":
        env[node["output"]] = run_pool(node, env[node["input"]], rec, st)
    elif op == "layernorm_hswish":
        env[node["output"]] = run_layernorm(node, env[node["input"]], rec)
    else:
        raise ValueError(f"unknown op {op!r} (node {node['name']}) in the integer model")


def _last_use(model: dict) -> dict[str, int]:
    last = {}
    for i, node in enumerate(model["nodes"]):
        for t in node.get("inputs") or [node["input"]]:
            last[t] = i
    return last


def check_images(model: dict, images) -> np.ndarray:
    """uint8 images ``(N, 3, H, W)`` (or one ``(3, H, W)``) of the model's resolution, as (N, 3, H, W)."""
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise TypeError(f"images must be uint8 pixels, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {x.shape}")
    res = model["resolution"]
    if x.shape[2:] != (res, res):
        raise ValueError(f"the integer model was converted for {res}x{res} images, got {x.shape[2]}x{x.shape[3]}")
    return x


def run(model: dict, images: np.ndarray, rec: Recorder | None = None, stats: Stats | None = None,
        keep: bool = False) -> np.ndarray | dict:
    """Integer logits ``(N, classes)`` of uint8 images ``(N, 3, H, W)`` (or one ``(3, H, W)``).

    With ``keep`` the whole tensor environment (name -> codes) is returned instead.
    """
    x = check_images(model, images)
    rec = rec if rec is not None else Recorder(layers=())
    st = stats if stats is not None else Stats()
    env = {model["graph_input"]: x.astype(np.int64)}
    last = _last_use(model)
    for i, node in enumerate(model["nodes"]):
        run_node(node, env, rec, st)
        if not keep:
            for t in node.get("inputs") or [node["input"]]:
                if last.get(t) == i and t != model["graph_output"]:
                    env.pop(t, None)
    return env if keep else env[model["graph_output"]]
