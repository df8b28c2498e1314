"""How a matrix product is cut into MAT-engine tiles (the controller's side; numpy only).

``mat_tiles(X, W, bias, cfg, ...)`` turns ``out[p, c] = bias[c] + sum_k X[p,k] W[c,k]``
into the beat sequences rtl/mat_engine.MatEngine consumes: one ``cmd`` per
tile of ``mat_lanes`` output channels, the tile's weight words, the input
beats of every pixel group, and for each output beat the flat index
``p * C + c`` of every element (-1 for padding lanes / padding pixels), so a
testbench or pysim can reassemble ``(P, C)``. Reduction taps beyond ``K`` are
padded with weight 0 (their input codes are then irrelevant; 0 is sent).
Pixels beyond ``P`` (to fill the last group of ``replicas``) repeat pixel 0
and are discarded.

Weight reuse (``load = 0``): the engine double-buffers its weights (a tile's
weights load into the idle buffer while the previous tile issues) and a cmd with
``load = 0`` reads the buffer loaded last in command order, i.e. the weights of
the closest earlier cmd with ``load = 1``. A controller may therefore send
``load = 0`` exactly when a tile has the same weights (and ``w_zero`` /
``ones``) as that cmd, which in practice means consecutive cmds of one column
tile: ``max_groups`` cuts every column tile's pixel groups into cmds of at most
that many groups (the groups field's limit, ``2^MAT_GROUPS_BITS - 1``, or a row band
of the intra-layer pipeline), the first loading the weights, the others
reusing them. The buffer loaded two cmds back is not addressable (it is being
overwritten by then, or about to be).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arch.config import AccelConfig
from arch.timing import MAT_GROUPS_BITS


@dataclass
class MatPlan:
    cmds: list[dict]          # one per tile, fields of MatEngine.cmd_layout
    w: np.ndarray             # (n_w_beats, M*N) int64 weight operands
    x: np.ndarray             # (n_x_beats, L*N) int64 codes
    omap: np.ndarray          # (n_o_beats, L*M) flat output index or -1
    tile_chunks: list[int]
    tile_groups: list[int]

    @property
    def n_tiles(self) -> int:
        return len(self.cmds)

    @property
    def tiles(self) -> list[tuple[int, int, int]]:
        """``(chunks, groups, load)`` of every cmd, as arch.cost.mat_tiles_cycles takes them."""
        return [(c["chunks"], c["groups"], c["load"]) for c in self.cmds]


def mat_tiles(X, W, bias, cfg: AccelConfig, relu: bool = False, x_zero: int = 0,
              w_zero=None, ones=None, max_groups: int | None = None) -> MatPlan:
    """Tile ``X (P,K)`` codes against ``W (C,K)`` operands (+ ``bias (C,)``) for ``cfg``.

    ``w_zero`` (C,) is subtracted from W's column by the engine as weights load
    (attention v zero point), ``ones`` (C,) bool makes a channel's weights all 1
    (the k-sum column). ``relu``/``x_zero`` apply ReLU-with-zero-point to X.
    ``max_groups``: at most that many pixel groups per cmd; a column tile's later cmds
    reuse its weights (``load = 0``, no w beats; the x and o beats are unchanged).
    """
    X = np.asarray(X, dtype=np.int64)
    W = np.asarray(W, dtype=np.int64)
    P, K = X.shape
    C, K2 = W.shape
    if K != K2:
        raise ValueError(f"mat_tiles: X has K={K} taps but W has {K2}")
    M, N, L = cfg.mat_lanes, cfg.mat_mults, cfg.replicas
    chunks = -(-K // N)
    if chunks > cfg.mat_wbuf_words:
        raise ValueError(f"mat_tiles: K={K} needs {chunks} weight words; the MAT buffer holds "
                         f"{cfg.mat_wbuf_words} (raise AccelConfig.mat_wbuf_words or split K)")
    bias = np.zeros(C, np.int64) if bias is None else np.asarray(bias, np.int64)
    w_zero = np.zeros(C, np.int64) if w_zero is None else np.asarray(w_zero, np.int64)
    ones = np.zeros(C, bool) if ones is None else np.asarray(ones, bool)
    groups = -(-P // L)
    limit = (1 << MAT_GROUPS_BITS) - 1
    block = min(limit, max_groups or limit)
    if block < 1:
        raise ValueError(f"mat_tiles: max_groups must be >= 1, got {max_groups}")
    Kp = chunks * N
    Xp = np.zeros((groups * L, Kp), np.int64)
    Xp[:P, :K] = X
    Xp[P:, :K] = X[0]
    # x beats: group-major, then chunk; element l*N + n
    xb = Xp.reshape(groups, L, chunks, N).transpose(0, 2, 1, 3).reshape(groups * chunks, L * N)
    cmds, wbs, xbs, obs, tch, tgr = [], [], [], [], [], []
    for c0 in range(0, C, M):
        cs = list(range(c0, min(C, c0 + M)))
        Wt = np.zeros((M, Kp), np.int64)
        Wt[:len(cs), :K] = W[cs]
        wz = np.zeros(M, np.int64)
        wz[:len(cs)] = w_zero[cs]
        on = 0
        for i, c in enumerate(cs):
            if ones[c]:
                on |= 1 << i
        bt = np.zeros(M, np.int64)
        bt[:len(cs)] = bias[cs]
        # w' = w - w_zero must leave padded taps at 0: pad them with w_zero
        Wt[:, K:] = wz[:, None]
        Wt[len(cs):, :] = 0
        for g0 in range(0, groups, block):
            ng = min(block, groups - g0)
            cmds.append(dict(chunks=chunks, groups=ng, load=int(g0 == 0), relu=int(relu), x_zero=int(x_zero),
                             w_zero=[int(v) for v in wz], ones=on, bias=[int(v) for v in bt]))
            tch.append(chunks)
            tgr.append(ng)
        wbs.append(Wt.reshape(M, chunks, N).transpose(1, 0, 2).reshape(chunks, M * N))
        xbs.append(xb)
        om = np.full((groups, L, M), -1, np.int64)
        for g in range(groups):
            for l in range(L):
                p = g * L + l
                if p < P:
                    om[g, l, :len(cs)] = [p * C + c for c in cs]
        obs.append(om.reshape(groups, L * M))
    return MatPlan(cmds, np.concatenate(wbs), np.concatenate(xbs), np.concatenate(obs), tch, tgr)
