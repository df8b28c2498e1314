"""Integer-only inference of a converted EfficientViT (golden/convert.py) with golden/ops.py.

Images enter as uint8 pixels ``(N, 3, H, W)``; logits leave as int16-range
codes.  Every arithmetic step is a ``golden.ops`` call made through a
``vectors.Recorder`` (which can dump it as a golden vector) and every
accumulator is measured (``Stats``) against the SPEC's worst-case bounds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .vectors import Recorder


@dataclass
class Stats:
    """Largest |value| seen per accumulator kind (and the largest folded bias)."""
    max_abs: dict[str, int] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)

    def track(self, kind: str, layer: str, a) -> None:
        a = np.asarray(a)
        if a.size == 0:
            return
        m = int(np.abs(a).max())
        if m > self.max_abs.get(kind, -1):
            self.max_abs[kind] = m
            self.where[kind] = layer

    def merge(self, other: "Stats") -> None:
        for k, v in other.max_abs.items():
            if v > self.max_abs.get(k, -1):
                self.max_abs[k], self.where[k] = v, other.where[k]


def conv_kind(node: dict) -> str:
    if node["kind"] == "linear":
        return "linear"
    w, g = node["w"], node["groups"]
    if g == 1:
        return "pointwise conv" if w.shape[2] * w.shape[3] == 1 else "generic conv"
    return "depthwise conv" if w.shape[1] == 1 and g == w.shape[0] else "grouped conv"


def run_conv(node: dict, x: np.ndarray, rec: Recorder, st: Stats) -> np.ndarray:
    """MAC (conv2d or linear) then its output stage: requantize, or pre-activation + hardswish."""
    name = node["name"]
    if node["kind"] == "linear":
        acc = rec.call(name, "linear", x=x, w=node["w"], bias=node["bias"])
    else:
        acc = rec.call(name, "conv2d", x=x, z_x=node["z_x"], w=node["w"], bias=node["bias"], stride=node["stride"],
                       padding=node["padding"], groups=node["groups"])
    kind = conv_kind(node)
    st.track(kind, name, acc)
    st.track("folded bias", name, node["bias"])
    if "hswish" in node:
        pre, hs = node["pre"], node["hswish"]
        p = rec.call(name, "requantize", acc=acc, M=pre["M"], n=pre["n"], z_out=pre["z"])
        return rec.call(name, "hardswish", p=p, z_p=hs["z_p"], t3=hs["t3"], M=hs["M"], n=hs["n"], z_out=hs["z_out"])
    rq = node["requant"]
    return rec.call(name, "requantize", acc=acc, M=rq["M"], n=rq["n"], z_out=rq["z_out"], lo=rq["lo"], hi=rq["hi"])


def run_add(node: dict, a: np.ndarray, b: np.ndarray, rec: Recorder) -> np.ndarray:
    return rec.call(node["name"], "residual_add", a=a, z_a=node["z_a"], Ma=node["Ma"], b=b, z_b=node["z_b"],
                    Mb=node["Mb"], n=node["n"], z_out=node["z_out"])


def run_core(core: dict, t: np.ndarray, z_attn, rec: Recorder, st: Stats) -> np.ndarray:
    """One attention branch, all heads: (B, 3 H d, h, w) codes -> (B, H, N, d) codes."""
    B, C, h, w = t.shape
    H, d, name = core["heads"], core["dim"], core["name"]
    tt = t.reshape(B, H, 3 * d, h * w).transpose(0, 1, 3, 2)          # (B, H, N, 3d), timm's layout
    q, k, v = tt[..., :d], tt[..., d:2 * d], tt[..., 2 * d:]
    kv_acc, ksum = rec.call(name, "attention_kv", k=k, z_k=core["z_k"], v=v, z_v=core["z_v"])
    st.track("attention k^T v", name, kv_acc)
    st.track("attention k-sum", name, ksum)
    kv, ks = rec.call(name, "attention_requant_kv", kv_acc=kv_acc, ksum=ksum, M_kv=core["M_kv"], n_kv=core["n_kv"],
                      M_ks=core["M_ks"], n_ks=core["n_ks"])
    num, den = rec.call(name, "attention_num_den", q=q, z_q=core["z_q"], kv=kv, ks=ks)
    st.track("attention q kv (numerator)", name, num)
    st.track("attention q ks (denominator)", name, den)
    e, _ = rec.call(name, "log2_code", den=den, e_lo=core["e_lo"], code_bits=core["code_bits"])
    return rec.call(name, "attention_divide", num=num, e=e, M_o=core["M_o"], n_o=core["n_o"], z_out=z_attn)


def run_mla(blk: dict, x: np.ndarray, rec: Recorder, st: Stats) -> np.ndarray:
    qkv = run_conv(blk["qkv"], x, rec, st)
    agg = run_conv(blk["agg_pw"], run_conv(blk["agg_dw"], qkv, rec, st), rec, st)
    outs = [run_core(core, t, blk["z_attn"], rec, st) for core, t in zip(blk["cores"], (qkv, agg))]
    out = np.concatenate(outs, axis=1)                                 # (B, 2H, N, d)
    B, H2, N, d = out.shape
    out = out.transpose(0, 1, 3, 2).reshape(B, H2 * d, x.shape[2], x.shape[3])
    return run_add(blk["add"], run_conv(blk["proj"], out, rec, st), x, rec)


def run_head(blk: dict, x: np.ndarray, rec: Recorder, st: Stats) -> np.ndarray:
    y = run_conv(blk["in_conv"], x, rec, st)
    pool = blk["pool"]
    st.track("global avgpool sum", pool["name"], (y.astype(np.int64) - pool["z_x"]).sum(axis=(2, 3)))
    y = rec.call(pool["name"], "global_avgpool", x=y, z_x=pool["z_x"], M=pool["M"], n=pool["n"], z_out=pool["z_out"])
    y = run_conv(blk["fc1"], y, rec, st)
    ln = blk["ln"]
    p = rec.call(ln["name"], "layernorm", x=y, z_x=ln["z_x"], eps_int=ln["eps_int"], G=ln["G"], B=ln["B"],
                 n_g=ln["n_g"], z_out=ln["z_pre"])
    y = rec.call(ln["name"], "hardswish", p=p, z_p=ln["z_pre"], t3=ln["t3"], M=ln["M"], n=ln["n"], z_out=ln["z_out"])
    fc2 = blk["fc2"]
    acc = rec.call(fc2["name"], "linear", x=y, w=fc2["w"], bias=fc2["bias"])
    st.track("linear", fc2["name"], acc)
    st.track("folded bias", fc2["name"], fc2["bias"])
    rq = fc2["requant"]
    return rec.call(fc2["name"], "logits_requant", acc=acc, M=rq["M"], n=rq["n"], bits=fc2["logits_bits"])


def run_block(blk: dict, x: np.ndarray, rec: Recorder, st: Stats) -> np.ndarray:
    """One block of the integer model (codes in, codes out)."""
    if blk["kind"] == "seq":
        y = x
        for node in blk["convs"]:
            y = run_conv(node, y, rec, st)
        return run_add(blk["add"], y, x, rec) if blk["add"] is not None else y
    if blk["kind"] == "mla":
        return run_mla(blk, x, rec, st)
    if blk["kind"] == "head":
        return run_head(blk, x, rec, st)
    raise ValueError(f"unknown block kind {blk['kind']!r} in the integer model")


def run(model: dict, images: np.ndarray, rec: Recorder | None = None, stats: Stats | None = None,
        trace: list | None = None) -> np.ndarray:
    """Integer logits ``(N, classes)`` of uint8 images ``(N, 3, H, W)`` (or one ``(3, H, W)``).

    ``trace``, if given, receives ``(block name, output codes)`` for every block.
    """
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise TypeError(f"images must be uint8 pixels, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {x.shape}")
    res = model.get("resolution")
    if res is not None and x.shape[2:] != (res, res):
        raise ValueError(f"the integer model was converted for {res}x{res} images, got {x.shape[2]}x{x.shape[3]}")
    rec = rec if rec is not None else Recorder(layers=())
    st = stats if stats is not None else Stats()
    x = x.astype(np.int64)
    for blk in model["blocks"]:
        x = run_block(blk, x, rec, st)
        if trace is not None:
            trace.append((blk["name"], x))
    return x
