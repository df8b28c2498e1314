"""Pytest-side launch of the compute engines (tb/engine_cocotb.py) on lists of planned ops.

``ops`` entries: ``{"name", "cmds", ...}`` with arrays ``<name>.w``, ``<name>.x``,
``<name>.omap`` and optionally ``<name>.expected`` (else give ``"shape"``: the
engine's outputs are then returned for a chained test, and the stalled run is
compared with the stall-free one), and optionally ``"beats"`` (per cmd: weight,
input, output beats) for the overlap report :func:`check_overlap` reads.
"""
from __future__ import annotations

import numpy as np

from tb.harness import run_cocotb

ENGINES = {
    "mat_engine": ("rtl.mat_engine:MatEngine", "w"),
    "rmac_engine": ("rtl.rmac_engine:RmacEngine", "wt"),
}


def run_engine(unit: str, cfg, ops: list[dict], arrays: dict, case: str, gap: float = 0.3,
               backpressure: float = 0.3, seed: int = 1) -> tuple[dict, dict[str, np.ndarray]]:
    """Simulate ``ops`` on ``unit`` for ``cfg``; returns (result dict with "cycles", outputs by op name)."""
    import importlib
    factory, wport = ENGINES[unit]
    mod, cls = factory.split(":")
    eng = getattr(importlib.import_module(mod), cls)
    res = run_cocotb(unit=unit, make=lambda: eng(cfg), config=cfg, module="tb.engine_cocotb", case=case,
                     params={"ops": ops, "gap": gap, "backpressure": backpressure, "wport": wport,
                             "engine": factory}, arrays=arrays, seed=seed)
    with np.load(res["outputs_npz"]) as z:
        outputs = {k.replace("|", "/"): z[k] for k in z.files}
    return res, outputs


def check_overlap(res: dict, op: dict, issues: list[int], loads: list[int]) -> int:
    """The stall-free run of ``op`` overlapped its cmds as the engines' cycle formula says
    (arch/cost.py back_to_back): every cmd i >= 1 whose weight load ``loads[i]`` fits in the
    previous cmd's ``issues[i-1]`` issue cycles took its first weight beat and its first input
    beat before the previous cmd's last output. Returns how many cmds were checked."""
    got = res["overlap"][op["name"]]
    assert len(got) == len(issues) - 1, (op["name"], len(got), len(issues))
    checked = 0
    for i in range(1, len(issues)):
        if loads[i] <= issues[i - 1]:
            assert got[i - 1] == [1, 1], (op["name"], i, got[i - 1])
            checked += 1
    return checked


def chain(ops_out: list, arrays: dict, name: str, parts: list[dict], part_arrays: dict, per_cmd: str) -> None:
    """The ops ``parts`` (built into ``part_arrays``) as ONE op: all their commands back to back;
    the expected values are the parts' flattened one after the other. ``per_cmd`` names the list each
    op keeps beside its commands (MAT: ``tiles``, R-MAC: ``geometry``)."""
    cmds, per, beats, ws, xs, oms, exps, off = [], [], [], [], [], [], [], 0
    for op in parts:
        n = op["name"]
        cmds += op["cmds"]
        per += op[per_cmd]
        beats += op["beats"]
        ws.append(part_arrays[f"{n}.w"])
        xs.append(part_arrays[f"{n}.x"])
        om = part_arrays[f"{n}.omap"].copy()
        om[om >= 0] += off
        oms.append(om)
        e = part_arrays[f"{n}.expected"].reshape(-1)
        exps.append(e)
        off += e.size
    ops_out.append({"name": name, "cmds": cmds, per_cmd: per, "beats": beats, "record": None})
    arrays[f"{name}.w"] = np.concatenate([w for w in ws if len(w)])
    arrays[f"{name}.x"] = np.concatenate(xs)
    arrays[f"{name}.omap"] = np.concatenate(oms)
    arrays[f"{name}.expected"] = np.concatenate(exps)
