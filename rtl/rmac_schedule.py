"""How depthwise / pointwise layers are cut into R-MAC-engine commands (controller side; numpy only).

``rmac_depthwise(x, w, bias, z, stride, pad, cfg)`` gives, per group of
``rmac_cols`` channels, one ``cmd``, the ``kh*kw`` weight beats and the row
beats (``kh`` per output segment) of rtl/rmac_engine.RmacEngine; positions
outside the input are filled with ``fill`` (any value: the engine replaces
them by the zero-point code, which the testbench proves by sending garbage).
``omap`` gives for each output element its flat index in the ``(C, Ho, Wo)``
result, -1 for padding PEs. ``rmac_pointwise`` does the same for
``out[p, c] = bias[c] + sum_k X[p, k] W[c, k]`` with a ``(P, C)`` result.

Weight reuse (``load = 0``): as on the MAT engine (rtl/mat_schedule.py), the
engine double-buffers its weights and a cmd with ``load = 0`` reads the buffer
loaded last in command order (the closest earlier cmd with ``load = 1``).
``rmac_pointwise(..., max_rows=R)`` cuts every channel group's pixel rows into
cmds of at most R rows, the later ones reusing the weights. A depthwise cmd
always starts at output row 0 (its padding is computed from there), so row
bands of a depthwise layer would need a first-row field in the cmd; until then
every depthwise cmd loads its weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arch import cost
from arch.config import AccelConfig
from arch.timing import KMAX, PADMAX, SMAX


@dataclass
class RmacPlan:
    cmds: list[dict]
    wt: np.ndarray      # (n_wt_beats, T)
    x: np.ndarray       # (n_x_beats, L*W_SEG*T)
    omap: np.ndarray    # (n_o_beats, L*S*T)
    shape: tuple        # result shape the flat indices refer to
    geometry: list[dict]  # per cmd: kh, kw, rows, xsegs, load (arch.cost.rmac_cmds_cycles)




def rmac_depthwise(x, w, bias, z, stride: int, pad: int, cfg: AccelConfig, fill=None) -> RmacPlan:
    """``x (C,H,W)`` codes, ``w (C,1,k,k)`` int8, folded ``bias (C,)``, zero point ``z`` (scalar or (C,))."""
    x = np.asarray(x, np.int64)
    w = np.asarray(w, np.int64)
    C, H, W = x.shape
    kh, kw = w.shape[2:]
    if w.shape[:2] != (C, 1) or kh > KMAX or kw > KMAX or stride not in (1, 2) or pad > PADMAX:
        raise ValueError(f"rmac_depthwise: unsupported w {w.shape} (k <= {KMAX}), stride {stride} "
                         f"(1 or {SMAX}), pad {pad} (<= {PADMAX}) for x {x.shape}")
    S, T, L = cfg.rmac_rows, cfg.rmac_cols, cfg.replicas
    WS = cost.rmac_segment_width(cfg)
    z = np.broadcast_to(np.asarray(z, np.int64), (C,))
    bias = np.asarray(bias, np.int64)
    Ho = (H + 2 * pad - kh) // stride + 1
    Wo = (W + 2 * pad - kw) // stride + 1
    rows, xsegs = -(-Ho // L), -(-Wo // S)
    rng = fill if fill is not None else np.random.default_rng(0)
    cmds, wts, xbs, obs, geo = [], [], [], [], []
    for c0 in range(0, C, T):
        cs = list(range(c0, min(C, c0 + T)))
        zt = np.zeros(T, np.int64)
        zt[:len(cs)] = z[cs]
        bt = np.zeros(T, np.int64)
        bt[:len(cs)] = bias[cs]
        cmds.append(dict(kh=kh, kw=kw, stride=stride, pad=pad, pw=0, load=1, h=H, w=W, rows=rows,
                         xsegs=xsegs, z=[int(v) for v in zt], bias=[int(v) for v in bt]))
        geo.append(dict(kh=kh, kw=kw, rows=rows, xsegs=xsegs, load=1))
        wt = np.zeros((kh * kw, T), np.int64)
        wt[:, :len(cs)] = w[cs, 0].reshape(len(cs), kh * kw).T
        wts.append(wt)
        # garbage everywhere, then the real codes where the window meets the input
        xb = rng.integers(0, 256, (rows, xsegs, kh, L, WS, T))
        om = np.full((rows, xsegs, L, S, T), -1, np.int64)
        for rg in range(rows):
            for l in range(L):
                oy = rg * L + l
                for ky in range(kh):
                    iy = oy * stride - pad + ky
                    if not 0 <= iy < H:
                        continue
                    for xs in range(xsegs):
                        ic = xs * S * stride - pad + np.arange(WS)
                        ok = (ic >= 0) & (ic < W)
                        xb[rg, xs, ky, l, ok, :len(cs)] = x[cs][:, iy, ic[ok]].T
                if oy < Ho:
                    for xs in range(xsegs):
                        for s in range(S):
                            ox = xs * S + s
                            if ox < Wo:
                                om[rg, xs, l, s, :len(cs)] = [(c * Ho + oy) * Wo + ox for c in cs]
        xbs.append(xb.reshape(rows * xsegs * kh, L * WS * T))
        obs.append(om.reshape(rows * xsegs, L * S * T))
    return RmacPlan(cmds, np.concatenate(wts), np.concatenate(xbs), np.concatenate(obs), (C, Ho, Wo), geo)


def rmac_pointwise(X, W, bias, cfg: AccelConfig, max_rows: int | None = None) -> RmacPlan:
    """``X (P,K)`` codes x ``W (C,K)`` int8 + ``bias (C,)`` on the R-MAC array (pointwise mode).

    ``max_rows``: at most that many rows (of L*S pixels) per cmd; a channel group's later
    cmds reuse its weights (``load = 0``, no wt beats; the x and o beats are unchanged)."""
    X = np.asarray(X, np.int64)
    W = np.asarray(W, np.int64)
    P, K = X.shape
    C = W.shape[0]
    S, T, L = cfg.rmac_rows, cfg.rmac_cols, cfg.replicas
    WS = cost.rmac_segment_width(cfg)
    depth = cost.rmac_buffer_depth(cfg)
    if K > depth:
        raise ValueError(f"rmac_pointwise: K={K} taps exceed the R-MAC weight buffer ({depth} words)")
    bias = np.asarray(bias, np.int64)
    per = L * S
    rows = -(-P // per)
    block = min(rows, max_rows or rows, (1 << 16) - 1)
    if block < 1:
        raise ValueError(f"rmac_pointwise: max_rows must be >= 1, got {max_rows}")
    Xp = np.zeros((rows * per, K), np.int64)
    Xp[:P] = X
    cmds, wts, xbs, obs, geo = [], [], [], [], []
    for c0 in range(0, C, T):
        cs = list(range(c0, min(C, c0 + T)))
        bt = np.zeros(T, np.int64)
        bt[:len(cs)] = bias[cs]
        for r0 in range(0, rows, block):
            nr = min(block, rows - r0)
            cmds.append(dict(kh=K, kw=1, stride=1, pad=0, pw=1, load=int(r0 == 0), h=0, w=0, rows=nr, xsegs=1,
                             z=[0] * T, bias=[int(v) for v in bt]))
            geo.append(dict(kh=K, kw=1, rows=nr, xsegs=1, load=int(r0 == 0)))
        wt = np.zeros((K, T), np.int64)
        wt[:, :len(cs)] = W[cs].T
        wts.append(wt)
        xb = np.zeros((rows, K, L, WS, T), np.int64)
        xb[:, :, :, :S, 0] = Xp.reshape(rows, L, S, K).transpose(0, 3, 1, 2)
        xbs.append(xb.reshape(rows * K, L * WS * T))
        om = np.full((rows, L, S, T), -1, np.int64)
        for r in range(rows):
            for l in range(L):
                for s in range(S):
                    p = (r * L + l) * S + s
                    if p < P:
                        om[r, l, s, :len(cs)] = [p * C + c for c in cs]
        obs.append(om.reshape(rows, L * S * T))
    return RmacPlan(cmds, np.concatenate(wts), np.concatenate(xbs), np.concatenate(obs), (P, C), geo)
