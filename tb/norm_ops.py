"""Adapters: one golden.ops call (its keyword arguments and its outputs) -> one RTL stream case.

The random testbenches (tb/test_requant.py & co.) and the replay of golden
vector folders (tb/test_norm_vectors.py) both go through these, so a tensor
reaches the hardware the same way whether it is random or from a real layer.
Each adapter lays the tensor out as the MAT engine hands it over (channels
last, ``lanes`` channels per beat), puts the op's parameters on the unit's
configuration ports / parameter table, and expects golden's output beat by
beat. Lanes past the last channel carry neutral values and are not compared
(``None`` in the expected beats). Nothing here computes an expected value.
"""
from __future__ import annotations

import numpy as np

from arch.formats import DEFAULT

from rtl.avgpool import GlobalAvgPool
from rtl.divider import Log2Divider
from rtl.hswish import Hardswish
from rtl.layernorm import DEFAULT_FRAC_BITS, DEFAULT_RECIP_BITS, LayerNorm, calc_cycles, cycles_per_token
from rtl.requant import Requant
from rtl.residual import ResidualAdd
from tb.norm_cases import pad_channels, param_rows, run_stream_case

A = DEFAULT.act     # the golden ops' default output range (a kw without lo/hi)


# ------------------------------------------------------------------ helpers
def _i64(v) -> np.ndarray:
    return np.asarray(v, dtype=np.int64)


def _scalar(v, what: str) -> int:
    """A parameter the unit holds per tensor: a scalar, or a vector whose entries are all equal."""
    a = _i64(v)
    if a.ndim and a.size and not (a == a.flat[0]).all():
        raise ValueError(f"{what}: the RTL unit takes one value per tensor, got a varying vector {a[:8]}...")
    return int(a.flat[0]) if a.ndim else int(a)


def _per_channel(v, C: int) -> np.ndarray:
    a = _i64(v)
    if a.ndim == 0:
        return np.full(C, int(a), dtype=np.int64)
    if a.shape != (C,):
        raise ValueError(f"per-channel parameter has shape {a.shape}, expected ({C},)")
    return a


def _rows(x, axis: int) -> np.ndarray:
    """Channels (``axis``) last, everything else flattened into rows: ``(rows, C)``."""
    x = _i64(x)
    ax = 0 if x.ndim == 1 else axis % x.ndim
    x = np.moveaxis(x, ax, -1)
    return x.reshape(-1, x.shape[-1])


def _out_shape(lo: int, hi: int) -> list:
    """The narrowest code shape holding [lo, hi] (JSON form for the unit's ``out_shape``)."""
    if lo >= 0:
        return ["unsigned", max(1, int(hi).bit_length())]
    return ["signed", max((-int(lo) - 1).bit_length(), int(hi).bit_length()) + 1]


def _beats(x: np.ndarray, lanes: int, field: str, group: bool = True, extra=None, fill=0, masked=False):
    """``(rows, C)`` -> one beat per (row, lane group). ``masked``: padding lanes become None
    (expected beats: not compared)."""
    rows, C = x.shape
    G = -(-C // lanes)
    out = []
    for r in range(rows):
        for g in range(G):
            vals = [int(v) for v in x[r, g * lanes:(g + 1) * lanes]]
            vals += [None if masked else fill] * (lanes - len(vals))
            b = {field: vals}
            if group:
                b["group"] = g
            if extra is not None:
                b.update(extra(r, g))
            out.append(b)
    return out


def _collect(res: dict, port: str, field: str, rows: int, C: int, lanes: int) -> np.ndarray:
    """The unit's output beats (``return_outputs=True``) back to ``(rows, C)``."""
    G = -(-C // lanes)
    a = np.array([b[field] for b in res["outputs"][port]], dtype=np.int64)
    return a.reshape(rows, G * lanes)[:, :C]


def _restore(flat: np.ndarray, like, axis: int) -> np.ndarray:
    """Inverse of ``_rows``: ``(rows, C)`` back to the shape of ``like`` (channels on ``axis``)."""
    like = np.asarray(like)
    ax = 0 if like.ndim == 1 else axis % like.ndim
    return np.moveaxis(flat.reshape(np.moveaxis(like, ax, -1).shape), -1, ax)


def _with_tensor(res: dict, make) -> dict:
    """Add ``res["tensor"]`` (the RTL output in golden's layout) when the beats came back."""
    if "outputs" in res:
        res["tensor"] = make()
    return res


def _op(name: str, lanes: int, beats: int, latency: int, **shape) -> dict:
    return {"name": name, "lanes": lanes, "beats": beats, "latency": latency, "ideal_cycles": beats, **shape}


# ------------------------------------------------------------------ SPEC 1 / 8
def requantize(cfg, case: str, kw: dict, out, *, unit: str = "requant", **run) -> dict:
    """golden.ops.requantize(acc, M, n, z_out, lo, hi, axis) on rtl.requant.Requant (per-channel table)."""
    L = cfg.mat_lanes
    acc = _rows(kw["acc"], kw.get("axis", 1))
    rows, C = acc.shape
    lo, hi = int(kw.get("lo", A.lo)), int(kw.get("hi", A.hi))
    M, n, z = (pad_channels(_per_channel(kw[k], C), L, 0) for k in ("M", "n", "z_out"))
    z[C:] = lo
    beats = _beats(acc, L, "acc")
    exp = [{"q": b["acc"]} for b in _beats(_rows(out, kw.get("axis", 1)), L, "acc", masked=True)]
    res = run_stream_case(unit, "rtl.requant:Requant", cfg, case, inputs={"i": beats}, expected={"o": exp},
                          ports={"lo": lo, "hi": hi}, prm={"prm": param_rows(L, m=M, n=n, z=z)},
                          kwargs={"out_shape": _out_shape(lo, hi), "per_channel": True},
                          op=_op("requantize", L, len(beats), Requant.LATENCY, rows=rows, channels=C),
                          row_groups=-(-C // L), **run)
    return _with_tensor(res, lambda: _restore(_collect(res, "o", "q", rows, C, L), kw["acc"], kw.get("axis", 1)))


def logits_requant(cfg, case: str, kw: dict, out, **run) -> dict:
    """golden.ops.logits_requant(acc, M, n, bits): the requantizer with a signed ``bits`` output."""
    bits = int(kw.get("bits", 16))
    acc = _i64(kw["acc"])
    lim = 1 << (bits - 1)
    return requantize(cfg, case, {"acc": acc, "M": kw["M"], "n": kw["n"], "z_out": 0, "lo": -lim, "hi": lim - 1,
                                  "axis": acc.ndim - 1}, out, **run)


# ------------------------------------------------------------------ SPEC 3
def hardswish(cfg, case: str, kw: dict, out, **run) -> dict:
    """golden.ops.hardswish(p, z_p, t3, M, n, z_out, lo, hi, axis) on rtl.hswish.Hardswish
    (``z_p``, ``t3`` scalar or per channel, like ``M``, ``n``, ``z_out``)."""
    L = cfg.mat_lanes
    axis = kw.get("axis", 1)
    p = _rows(kw["p"], axis)
    rows, C = p.shape
    lo, hi = int(kw.get("lo", A.lo)), int(kw.get("hi", A.hi))
    M, n, z, zp = (pad_channels(_per_channel(kw[k], C), L, 0) for k in ("M", "n", "z_out", "z_p"))
    t3 = pad_channels(_per_channel(kw["t3"], C), L, 1)
    beats = _beats(p, L, "p")
    exp = [{"q": b["p"]} for b in _beats(_rows(out, axis), L, "p", masked=True)]
    res = run_stream_case("hswish", "rtl.hswish:Hardswish", cfg, case, inputs={"i": beats}, expected={"o": exp},
                          ports={"lo": lo, "hi": hi}, prm={"prm": param_rows(L, m=M, n=n, z=z, zp=zp, t3=t3)},
                          op=_op("hardswish", L, len(beats), Hardswish.LATENCY, rows=rows, channels=C),
                          row_groups=-(-C // L), **run)
    return _with_tensor(res, lambda: _restore(_collect(res, "o", "q", rows, C, L), kw["p"], axis))


# ------------------------------------------------------------------ SPEC 4
def residual_add(cfg, case: str, kw: dict, out, **run) -> dict:
    """golden.ops.residual_add(a, z_a, Ma, b, z_b, Mb, n, z_out, lo, hi, axis) on rtl.residual.ResidualAdd
    (``z_a``, ``z_b``, ``Ma``, ``Mb``, ``n``, ``z_out`` scalar or per channel, all in the parameter table)."""
    L = cfg.mat_lanes
    axis = kw.get("axis", 1)
    a, b = _rows(kw["a"], axis), _rows(kw["b"], axis)
    rows, C = a.shape
    za, zb, Ma, Mb, n, z = (pad_channels(_per_channel(kw[k], C), L, 0)
                            for k in ("z_a", "z_b", "Ma", "Mb", "n", "z_out"))
    for k, zp in (("z_a", za), ("z_b", zb)):
        if zp.min() < 0 or zp.max() >= 1 << cfg.act_bits:
            raise ValueError(f"residual_add {k}: the unit holds {cfg.act_bits}-bit codes, got values in "
                             f"[{zp.min()}, {zp.max()}]")
    ina, inb = _beats(a, L, "x"), _beats(b, L, "x")
    exp = _beats(_rows(out, axis), L, "q", group=False, masked=True)
    res = run_stream_case("residual", "rtl.residual:ResidualAdd", cfg, case, inputs={"a": ina, "b": inb},
                          expected={"o": exp}, ports={"lo": int(kw.get("lo", A.lo)), "hi": int(kw.get("hi", A.hi))},
                          prm={"prm": param_rows(L, za=za, zb=zb, ma=Ma, mb=Mb, n=n, z=z)},
                          op=_op("residual_add", L, len(ina), ResidualAdd.LATENCY, rows=rows, channels=C),
                          row_groups=-(-C // L), **run)
    return _with_tensor(res, lambda: _restore(_collect(res, "o", "q", rows, C, L), kw["a"], axis))


# ------------------------------------------------------------------ SPEC 5 steps 4-5
def attention_divide(cfg, case: str, kw_code: dict, code_out: dict, kw_div: dict, out, **run) -> dict:
    """golden.ops.log2_code(den, e_lo, code_bits, frac_bits) then attention_divide(num, e, M_o, n_o, z_out,
    lo, hi[, f, M_o1, n_o1]) on rtl.divider.Log2Divider (which computes the code from ``den`` itself);
    with the mantissa bit the rows of ``M_o1, n_o1`` follow those of ``M_o, n_o``."""
    L = cfg.mat_lanes
    code_bits = int(kw_code.get("code_bits", 4))
    if code_bits != cfg.log2_code_bits:
        raise ValueError(f"log2 code of {code_bits} bits, the configuration's divider has {cfg.log2_code_bits}")
    num = _i64(kw_div["num"])
    d = num.shape[-1]
    num = num.reshape(-1, d)
    den = _i64(kw_code["den"]).reshape(-1)
    code = _i64(code_out["code"]).reshape(-1)
    if den.shape[0] != num.shape[0]:
        raise ValueError(f"log2_code has {den.shape[0]} tokens, attention_divide {num.shape[0]}")
    lo, hi = int(kw_div.get("lo", A.lo)), int(kw_div.get("hi", A.hi))
    frac = int(kw_code.get("frac_bits", 0))
    M, n, z = (pad_channels(_per_channel(kw_div[k], d), L, 0) for k in ("M_o", "n_o", "z_out"))
    n[d:] = max(0, -int(kw_code["e_lo"]))
    groups = -(-d // L)
    if frac:
        M1, n1 = (pad_channels(_per_channel(kw_div[k], d), L, 0) for k in ("M_o1", "n_o1"))
        n1[d:] = n[d:]
        M, n, z = np.concatenate([M, M1]), np.concatenate([n, n1]), np.concatenate([z, z])
    beats = _beats(num, L, "num", extra=lambda r, g: {"den": int(den[r])})
    exp = [{"q": b["q"], "tag": int(code[i // groups])}
           for i, b in enumerate(_beats(_i64(out).reshape(-1, d), L, "q", group=False, masked=True))]
    res = run_stream_case("divider", "rtl.divider:Log2Divider", cfg, case, inputs={"i": beats},
                          expected={"o": exp}, ports={"e_lo": int(kw_code["e_lo"]), "lo": lo, "hi": hi,
                                                      "frac": frac, "f_rows": groups},
                          prm={"prm": param_rows(L, m=M, n=n, z=z)},
                          op=_op("attention_divide", L, len(beats), Log2Divider.LATENCY, tokens=num.shape[0], d=d),
                          row_groups=groups, **run)
    return _with_tensor(res, lambda: _collect(res, "o", "q", num.shape[0], d, L).reshape(np.shape(kw_div["num"])))


# ------------------------------------------------------------------ SPEC 6
def global_avgpool(cfg, case: str, kw: dict, out, **run) -> dict:
    """golden.ops.global_avgpool(x (N,C,H,W), z_x, M, n, z_out, lo, hi) on rtl.avgpool.GlobalAvgPool."""
    L = cfg.mat_lanes
    x = _i64(kw["x"])
    N, C, H, W = x.shape
    sc = {k: _scalar(kw[k], f"global_avgpool {k}") for k in ("z_x", "M", "n", "z_out")}
    G = -(-C // L)
    beats, exp = [], []
    for i in range(N):
        px = x[i].reshape(C, H * W).T                       # pixel-major, channels last
        beats += _beats(px, L, "x", fill=sc["z_x"],
                        extra=lambda r, g: {"first": int(r == 0), "last": int(r == H * W - 1)})
        exp += _beats(_i64(out)[i:i + 1], L, "q", group=False, masked=True,
                      extra=lambda r, g: {"tag": g})
    ports = {"z_x": sc["z_x"], "m": sc["M"], "n": sc["n"], "z_out": sc["z_out"],
             "lo": int(kw.get("lo", A.lo)), "hi": int(kw.get("hi", A.hi))}
    res = run_stream_case("avgpool", "rtl.avgpool:GlobalAvgPool", cfg, case, inputs={"i": beats},
                          expected={"o": exp}, ports=ports,
                          op=_op("global_avgpool", L, len(beats), GlobalAvgPool.LATENCY, images=N, channels=C,
                                 hw=H * W), row_groups=G, **run)
    return _with_tensor(res, lambda: _collect(res, "o", "q", N, C, L))


# ------------------------------------------------------------------ SPEC 7
def layernorm(cfg, case: str, kw: dict, out, **run) -> dict:
    """golden.ops.layernorm(x (..., C), z_x, eps_int, G, B, n_g, z_out, lo, hi, frac_bits) on rtl.layernorm."""
    L = cfg.mat_lanes
    x = _rows(kw["x"], -1)
    tokens, C = x.shape
    z_x = _scalar(kw["z_x"], "layernorm z_x")
    frac = int(kw.get("frac_bits", DEFAULT_FRAC_BITS))
    recip = int(kw.get("recip_bits", DEFAULT_RECIP_BITS))
    gen = {k: v for k, v in (("frac_bits", frac), ("recip_bits", recip))
           if v != {"frac_bits": DEFAULT_FRAC_BITS, "recip_bits": DEFAULT_RECIP_BITS}[k]}
    Gp, Bp, np_, zp = (pad_channels(_per_channel(kw[k], C), L, 0) for k in ("G", "B", "n_g", "z_out"))
    groups = -(-C // L)
    beats = _beats(x, L, "x", fill=z_x, extra=lambda r, g: {"last": int(g == groups - 1)})
    exp = [{"q": b["q"]} for b in _beats(_rows(out, -1), L, "q", group=False, masked=True)]
    ports = {"channels": C, "z_x": z_x, "eps_int": _scalar(kw["eps_int"], "layernorm eps_int"),
             "lo": int(kw.get("lo", A.lo)), "hi": int(kw.get("hi", A.hi))}
    op = _op("layernorm", L, len(beats), LayerNorm.OUT_LATENCY, tokens=tokens, channels=C, groups=groups,
             recip_bits=recip, calc_cycles=calc_cycles(recip))
    op["ideal_cycles"] = tokens * cycles_per_token(groups, recip)
    res = run_stream_case("layernorm", "rtl.layernorm:LayerNorm", cfg, case, inputs={"i": beats},
                          expected={"o": exp}, ports=ports, prm={"prm": param_rows(L, g=Gp, b=Bp, n=np_, z=zp)},
                          kwargs=gen, op=op, row_groups=groups, **run)
    return _with_tensor(res, lambda: _restore(_collect(res, "o", "q", tokens, C, L), kw["x"], -1))
