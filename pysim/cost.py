"""Cycle costs of one operation on one engine, as rtl/ builds the engines.

Every function here takes the shared :class:`rtl.config.AccelConfig` and the
shape of one operation and returns the cycles one engine instance (one of the
``replicas``) needs when its input stream never stalls and its output is never
back-pressured: the quantity the rtl/tb testbenches measure and record in
``tb/cycles/<unit>/<case>.json``.  ``tests/test_pysim_vs_rtl.py`` holds these
functions to those records (:func:`unit_cycles` is the dispatcher it calls).

Streaming units (requant, hswish, residual, ...) take one beat of ``lanes``
elements per cycle behind a fixed pipeline: ``beats + LATENCY``.  The
latencies come from rtl/timing.py, the module the rtl/ components take their
``LATENCY`` from (it needs no amaranth); the agreement test holds both to the
testbench records.
"""
from __future__ import annotations

import functools
import math

from rtl import timing
from rtl.config import AccelConfig


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def tree_depth(cfg: AccelConfig) -> int:
    """Registered adder-tree levels of a MAT lane: log2(mat_mults) when cfg.tree_pipeline."""
    return int(math.log2(cfg.mat_mults)) if cfg.tree_pipeline else 0


# ---------------------------------------------------------------- MAT engine --
# rtl/mat_engine.py: one command computes a *tile*: M output channels (lanes) for
# ``groups`` pixel groups of L pixels (the replicas share the weights), reducing over
# ``chunks`` words of N taps.  With ``load`` it first takes ``chunks`` weight words
# (one per cycle); then one input beat per cycle; the result leaves after the
# multiply stage, T tree levels and the accumulator.  The next command is accepted
# only when the tile has drained, so tiles add up with no overlap.
def mat_tile_cycles(cfg: AccelConfig, chunks: int, groups: int, load: bool = True, streamed: bool = False) -> int:
    """cycles(tile) = 1 + load * chunks + groups * chunks + T + 3 (cmd accepted .. last output).

    ``streamed`` is a what-if, not the RTL: weights prefetched while the previous
    tile computes and the drain overlapped with the next tile (groups * chunks).
    """
    if chunks < 1 or groups < 1:
        raise ValueError(f"MAT tile needs chunks >= 1 and groups >= 1, got chunks={chunks} groups={groups}")
    if chunks > cfg.mat_wbuf_words:
        raise ValueError(f"MAT tile of {chunks} weight words exceeds mat_wbuf_words={cfg.mat_wbuf_words}")
    if streamed:
        return groups * chunks
    return 1 + int(load) * chunks + groups * chunks + tree_depth(cfg) + 3


def back_to_back(cmd_cycles: list[int], streamed: bool = False) -> int:
    """Commands issued back to back: the next command is accepted in the cycle the
    previous one's last output leaves (both engines), so consecutive commands share
    one cycle of the inclusive count."""
    return sum(cmd_cycles) - (0 if streamed else max(0, len(cmd_cycles) - 1))


@functools.lru_cache(maxsize=1 << 16)
def mat_matmul_cycles(cfg: AccelConfig, rows: int, red: int, cols: int, load: bool = True,
                      streamed: bool = False) -> int:
    """``rows`` x ``cols`` outputs, each a dot product of length ``red``, as back-to-back tiles
    (rtl/mat_schedule.py's plan).

    Rows go to the L replicas (``ceil(rows / L)`` pixel groups), columns to the
    M lanes (``ceil(cols / M)`` tiles, each loading its own weights), the
    reduction to ``ceil(red / N)`` words.  A reduction longer than the weight
    buffer (rtl/mat_schedule.py refuses it) is costed as passes whose partial
    sums come back as the next pass's bias: one more tile per pass.
    """
    if min(rows, red, cols) < 1:
        raise ValueError(f"MAT op needs positive rows/red/cols, got {rows}/{red}/{cols}")
    chunks = cdiv(red, cfg.mat_mults)
    groups = cdiv(rows, cfg.replicas)
    full, rest = divmod(chunks, cfg.mat_wbuf_words)
    passes = [cfg.mat_wbuf_words] * full + ([rest] if rest else [])
    tiles = [mat_tile_cycles(cfg, ch, groups, load, streamed) for ch in passes] * cdiv(cols, cfg.mat_lanes)
    return back_to_back(tiles, streamed)


def mat_ideal_cycles(cfg: AccelConfig, macs: int) -> int:
    return cdiv(macs, cfg.mat_multipliers)


@functools.lru_cache(maxsize=1 << 16)
def mat_conv_cycles(cfg: AccelConfig, cin: int, cout: int, oh: int, ow: int, k: int = 1,
                    groups: int = 1, streamed: bool = False) -> int:
    """Generic / pointwise / grouped convolution: one tile per (conv group, M output channels).

    The reduction of a generic conv is the im2col'd (cin/groups) x k x k window;
    the lanes of a tile share one broadcast input, so they take output channels
    of the same conv group.
    """
    if cin % groups or cout % groups:
        raise ValueError(f"channels {cin}->{cout} not divisible by groups={groups}")
    return groups * mat_matmul_cycles(cfg, oh * ow, cin // groups * k * k, cout // groups, streamed=streamed)


def mat_attn_kv_cycles(cfg: AccelConfig, tokens: int, dim: int, streamed: bool = False) -> int:
    """One head's ``k^T [v | 1]``: rows are the ``dim`` rows of kv, the reduction runs
    over ``tokens``, lanes are the ``dim`` columns of v plus the ones lane (the k-sum)."""
    return mat_matmul_cycles(cfg, rows=dim, red=tokens, cols=dim + 1, streamed=streamed)


def mat_attn_qkv_cycles(cfg: AccelConfig, tokens: int, dim: int, streamed: bool = False) -> int:
    """One head's ``q [kv | ks]``: rows are tokens, lanes the ``dim`` kv columns and ks."""
    return mat_matmul_cycles(cfg, rows=tokens, red=dim, cols=dim + 1, streamed=streamed)


# -------------------------------------------------------------- R-MAC engine --
# rtl/rmac_engine.py: PE (s, t) of replica l owns output pixel s of an output-row
# segment of S pixels, channel t of T channels; replica l takes output row oy + l
# (same weights).  One command per group of T channels:
#     cycles(cmd) = 1 + load*kh*kw + 1 + rows*xsegs*kh*kw + 3
# with rows = ceil(Ho / L) output row groups and xsegs = ceil(Wo / S) segments
# (depthwise), or kh = K input channels, kw = 1, rows = ceil(P / (L*S)), xsegs = 1
# (pointwise mode; K must fit the rmac_wbuf_words-deep weight buffer).
def rmac_cmd_cycles(kh: int, kw: int, rows: int, xsegs: int, load: bool = True, streamed: bool = False) -> int:
    if streamed:   # what-if: weights prefetched, pipeline overlapped with the next command
        return rows * xsegs * kh * kw
    return 1 + int(load) * kh * kw + 1 + rows * xsegs * kh * kw + 3


@functools.lru_cache(maxsize=1 << 16)
def rmac_dw_cycles(cfg: AccelConfig, c: int, oh: int, ow: int, k: int, stride: int = 1,
                   streamed: bool = False) -> int:
    """Depthwise k x k conv producing ``c`` x ``oh`` x ``ow`` (stride only moves the reads)."""
    if not 1 <= k <= 5 or stride not in (1, 2):
        raise ValueError(f"depthwise conv k={k} stride={stride} not supported by the R-MAC engine (k<=5, stride 1/2)")
    one = rmac_cmd_cycles(k, k, cdiv(oh, cfg.replicas), cdiv(ow, cfg.rmac_rows), streamed=streamed)
    return back_to_back([one] * cdiv(c, cfg.rmac_cols), streamed)


def rmac_pw_fits(cfg: AccelConfig, cin: int) -> bool:
    return cin <= max(cfg.rmac_wbuf_words, 25)


@functools.lru_cache(maxsize=1 << 16)
def rmac_pw_cycles(cfg: AccelConfig, cin: int, cout: int, oh: int, ow: int, streamed: bool = False) -> int:
    """Pointwise work on the R-MAC array: L*S pixels x T output channels per pass."""
    if not rmac_pw_fits(cfg, cin):
        raise ValueError(f"R-MAC pointwise with {cin} input channels exceeds rmac_wbuf_words={cfg.rmac_wbuf_words}")
    one = rmac_cmd_cycles(cin, 1, cdiv(oh * ow, cfg.replicas * cfg.rmac_rows), 1, streamed=streamed)
    return back_to_back([one] * cdiv(cout, cfg.rmac_cols), streamed)


# --------------------------------------------------------- integer units --
# Every unit takes one beat of ``lanes`` values per cycle (one (row, channel group)
# of a tensor laid out as the MAT engine hands it over) and emits each result a fixed
# LATENCY later: from the first beat accepted to the last result, beats + LATENCY.
def unit_lanes(cfg: AccelConfig) -> int:
    """Values per beat of the streaming integer units (rtl/ default: mat_lanes)."""
    return cfg.mat_lanes


def stream_beats(rows: int, channels: int, lanes: int) -> int:
    return rows * cdiv(channels, lanes)


UNIT_LATENCY = {
    "requant": timing.REQUANT_LATENCY,
    "hswish": timing.HSWISH_LATENCY,
    "residual": timing.RESIDUAL_LATENCY,
    "divider": timing.DIVIDER_LATENCY,
    "avgpool": timing.AVGPOOL_LATENCY,
}


def stream_unit_cycles(unit: str, cfg: AccelConfig, rows: int, channels: int, lanes: int | None = None) -> int:
    """``rows`` x ``channels`` values through ``unit`` (see UNIT_LATENCY)."""
    return stream_beats(rows, channels, lanes or unit_lanes(cfg)) + UNIT_LATENCY[unit]


def layernorm_cycles(cfg: AccelConfig, features: int, lanes: int | None = None, tokens: int = 1,
                     recip_bits: int = timing.LAYERNORM_RECIP_BITS) -> int:
    """rtl/layernorm.py, one token after the other: G input beats, the sequential
    variance / reciprocal / isqrt, then G output beats (G = ceil(features / lanes))."""
    g = cdiv(features, lanes or unit_lanes(cfg))
    return tokens * timing.layernorm_cycles_per_token(g, recip_bits)


# ------------------------------------------------------------- dispatcher --
def unit_cycles(unit: str, op: dict, cfg: AccelConfig) -> int:
    """Predicted cycles of one recorded testbench operation (tests/test_pysim_vs_rtl.py).

    ``op`` is the record's shape dictionary as the testbench wrote it.
    """
    if unit in UNIT_LATENCY:
        lanes = op.get("lanes") or unit_lanes(cfg)
        if "rows" in op and "channels" in op:
            return stream_unit_cycles(unit, cfg, op["rows"], op["channels"], lanes)
        if "beats" in op:
            return op["beats"] + UNIT_LATENCY[unit]
        raise KeyError(f"{unit} record op {op} has neither rows/channels nor beats")
    if unit == "layernorm":
        return layernorm_cycles(cfg, op["channels"], op.get("lanes"), op.get("tokens", 1),
                                op.get("recip_bits", timing.LAYERNORM_RECIP_BITS))
    if unit == "mat_engine":
        return _mat_record(cfg, op)
    if unit == "rmac_engine":
        return _rmac_record(cfg, op)
    raise KeyError(f"pysim has no cost function for RTL unit {unit!r}; known: "
                   f"{', '.join(sorted(list(UNIT_LATENCY) + ['layernorm', 'mat_engine', 'rmac_engine']))}")


def _mat_record(cfg: AccelConfig, op: dict) -> int:
    """tb/test_mat_engine.py records {P, K, C, kind, ...}: a P x K by K x C product
    (im2col'd convs included)."""
    if {"P", "K", "C"} <= op.keys():
        return mat_matmul_cycles(cfg, op["P"], op["K"], op["C"])
    raise KeyError(f"mat_engine record op {op} lacks P/K/C")


def _rmac_record(cfg: AccelConfig, op: dict) -> int:
    """tb/test_rmac_engine.py records {kind: dwKxK, C, H, W, stride, Ho, Wo} or {kind: pw, P, K, C}."""
    kind = op.get("kind", "")
    if kind.startswith("dw"):
        k = int(kind[2:].split("x")[0])
        return rmac_dw_cycles(cfg, op["C"], op["Ho"], op["Wo"], k, op["stride"])
    if kind == "pw":
        return rmac_pw_cycles(cfg, op["K"], op["C"], op["P"], 1)
    raise KeyError(f"rmac_engine record op {op}: unknown kind {kind!r}")
