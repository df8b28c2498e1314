"""Minimal reshaping helpers for the testbenches (no arithmetic: golden/ops.py is the reference)."""
from __future__ import annotations

import numpy as np


def im2col(x, kh: int, kw: int, stride: int = 1, padding: int = 0, z=0) -> np.ndarray:
    """``x (Cin, H, W)`` codes -> ``(Ho*Wo, Cin*kh*kw)`` windows, padded with the zero-point
    code ``z`` (scalar or per channel), taps ordered like ``w.reshape(Cout, -1)``."""
    x = np.asarray(x, np.int64)
    cin, H, W = x.shape
    zc = np.broadcast_to(np.asarray(z, np.int64), (cin,))
    xp = np.empty((cin, H + 2 * padding, W + 2 * padding), np.int64)
    xp[:] = zc[:, None, None]
    xp[:, padding:padding + H, padding:padding + W] = x
    Ho = (H + 2 * padding - kh) // stride + 1
    Wo = (W + 2 * padding - kw) // stride + 1
    cols = np.empty((Ho, Wo, cin, kh, kw), np.int64)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j] = xp[:, i:i + stride * (Ho - 1) + 1:stride,
                                     j:j + stride * (Wo - 1) + 1:stride].transpose(1, 2, 0)
    return cols.reshape(Ho * Wo, cin * kh * kw)
