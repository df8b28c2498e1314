"""Pytest side shared by the normalization-unit testbenches: lane packing and case launch.

Tensors are laid out the way the MAT engine hands them over: for each row
(pixel or token) the channels in groups of ``lanes``, one beat per group; a
last partial group is padded (the padding channels get parameters too, so
golden/ops.py computes their expected values like any other channel's).
Expected values always come from golden/ops.py; nothing here computes them.
"""
from __future__ import annotations

import importlib
import json

import numpy as np

from arch.config import PRESETS
from tb.harness import run_cocotb

CONFIGS = {"tiny": PRESETS["tiny"], "small": PRESETS["small"]}


def pad_channels(x: np.ndarray, lanes: int, fill=0) -> np.ndarray:
    """Pad the last axis of ``x`` to a multiple of ``lanes`` with ``fill``."""
    c = x.shape[-1]
    cp = -(-c // lanes) * lanes
    if cp == c:
        return x
    pad = np.full(x.shape[:-1] + (cp - c,), fill, dtype=x.dtype)
    return np.concatenate([x, pad], axis=-1)


def to_groups(x: np.ndarray, lanes: int) -> np.ndarray:
    """``(rows, C)`` with C a multiple of ``lanes`` -> ``(rows, G, lanes)``."""
    rows, c = x.shape
    return x.reshape(rows, c // lanes, lanes)


def lane_beats(x: np.ndarray, lanes: int, field: str, extra=None) -> list[dict]:
    """One beat per (row, group): ``{field: [lanes values], "group": g, **extra(row, g)}``."""
    xg = to_groups(x, lanes)
    beats = []
    for r in range(xg.shape[0]):
        for g in range(xg.shape[1]):
            b = {field: [int(v) for v in xg[r, g]], "group": g}
            if extra is not None:
                b.update(extra(r, g))
            beats.append(b)
    return beats


def param_rows(lanes: int, **per_channel: np.ndarray) -> list[dict]:
    """Parameter-table writes: one beat per group, ``{"group": g, "row": {name: [lanes values]}}``."""
    first = next(iter(per_channel.values()))
    groups = len(first) // lanes
    return [{"group": g, "row": {k: [int(v) for v in a[g * lanes:(g + 1) * lanes]] for k, a in per_channel.items()}}
            for g in range(groups)]


def run_stream_case(unit: str, factory: str, cfg, case: str, *, inputs: dict, expected: dict,
                    ports: dict | None = None, prm: dict | None = None, kwargs: dict | None = None,
                    gap: float = 0.0, backpressure: float = 0.0, op: dict | None = None, seed: int = 1,
                    return_outputs: bool = False, row_groups: int | None = None) -> dict:
    """Build ``factory`` (``"module:Class"``) for ``cfg`` and run tb/stream_unit_cocotb.py on one case.

    With ``return_outputs`` the result carries ``outputs``: the collected beats per output port
    (what the unit really produced, for feeding the next unit of a chain). ``row_groups``: beats per
    tensor row (lane groups), so mismatches are reported as [row, channel] instead of [beat, lane].
    """
    kwargs = kwargs or {}
    mod, cls = factory.split(":")

    def make():
        from tb.stream_unit_cocotb import decode_kwargs
        return getattr(importlib.import_module(mod), cls)(cfg, **decode_kwargs(kwargs))

    params = {"factory": factory, "kwargs": kwargs, "ports": ports or {}, "prm": prm or {},
              "inputs": inputs, "expected": expected, "gap": gap, "backpressure": backpressure,
              "op": op, "return_outputs": return_outputs, "row_groups": row_groups}
    json.dumps(params)  # fail here, not in the simulator, on a non-JSON value
    return run_cocotb(unit=unit, make=make, config=cfg, module="tb.stream_unit_cocotb", case=case,
                      params=params, gen={"factory": factory, "kwargs": kwargs}, seed=seed)


def edge_values(rng: np.random.Generator, n: int, lo: int, hi: int, edges=(), p_edge: float = 0.15) -> np.ndarray:
    """``n`` random integers in [lo, hi] with a share ``p_edge`` taken from ``edges`` (+ lo, hi)."""
    x = rng.integers(lo, hi, n, endpoint=True, dtype=np.int64)
    pool = np.array(sorted(set(list(edges) + [lo, hi])), dtype=np.int64)
    pick = rng.random(n) < p_edge
    x[pick] = rng.choice(pool, int(pick.sum()))
    return x
