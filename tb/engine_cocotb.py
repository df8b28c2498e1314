"""Cocotb side of tb/test_mat_engine.py and tb/test_rmac_engine.py.

Plays a compute engine's command plans (rtl/mat_schedule.py, rtl/rmac_schedule.py):
``cmd`` beats, weight beats, input beats, and collects the ``o`` beats; every
output element is placed by the plan's ``omap`` and compared with golden/'s
result of the op.

The ``cmd``, weight and input streams are driven by three independent sources
(all of an op's beats are queued at once), so the engine takes the next
command's weights while the current one computes, as it would from the weight
buffer. For an op that gives ``beats`` (per cmd: weight, input and output
beats) the stall-free run reports, per cmd after the first, whether its first
weight beat and its first input beat were taken before the previous cmd's last
output (the overlap of weight load and pipeline drain with computation).
"""
import importlib
import os
from pathlib import Path

import cocotb
import numpy as np

from tb.cocotb_kit import TB, assert_equal, load_case, record_cycles, write_result

MISSING = np.iinfo(np.int64).min


def _layouts(p):
    from arch.config import AccelConfig
    mod, cls = p["engine"].split(":")
    eng_cls = getattr(importlib.import_module(mod), cls)
    cfg = AccelConfig(**{k: v for k, v in p["config"].items() if k in AccelConfig.__dataclass_fields__})
    sig = eng_cls(cfg).signature.members
    return {name: sig[name].signature.members["payload"].shape for name in ("cmd", p["wport"], "x", "o")}


async def _play(dut, gap: float, bp: float, record: bool, reference: dict | None = None):
    """Run every op; compare with ``<op>.expected`` when the case has it, else with
    ``reference[op]`` (the stall-free run's outputs) when given. Returns (cycles, outputs)."""
    p, a = load_case()
    lay = _layouts(p)
    tb = TB(dut, seed=p["seed"] + (0 if record else 1))
    await tb.reset()
    cmd = tb.source("cmd", lay["cmd"], gap)
    w = tb.source(p["wport"], lay[p["wport"]], gap)
    x = tb.source("x", lay["x"], gap)
    o = tb.sink("o", lay["o"], bp)
    cycles, outputs, overlap = {}, {}, {}
    for op in p["ops"]:
        name = op["name"]
        first_cmd = len(cmd.fire_cycles)
        n_before = len(o.beats)
        w_before, x_before = len(w.fire_cycles), len(x.fire_cycles)
        for c in op["cmds"]:
            cmd.send(c)
        for beat in a[f"{name}.w"]:
            w.send(beat)
        for beat in a[f"{name}.x"]:
            x.send(beat)
        omap = a[f"{name}.omap"]
        await o.wait_beats(n_before + len(omap))
        got = np.asarray(o.beats[n_before:], np.int64)
        expected = a.get(f"{name}.expected")
        if expected is None and reference is not None:
            expected = reference[name]
        shape = tuple(op["shape"]) if "shape" in op else expected.shape
        actual = np.full(int(np.prod(shape)), MISSING, np.int64)
        sel = omap >= 0
        actual[omap[sel]] = got[sel]
        outputs[name] = actual.reshape(shape)
        if expected is not None:
            assert_equal(outputs[name], expected, f"{p['case']}/{name}")
        n = o.fire_cycles[-1] - cmd.fire_cycles[first_cmd] + 1
        cycles[name] = n
        if record and op.get("beats"):
            overlap[name] = _overlap(op["beats"], w.fire_cycles[w_before:], x.fire_cycles[x_before:],
                                     o.fire_cycles[n_before:])
        if record and op.get("record"):
            record_cycles(p, op["record"]["op"], n, op["record"]["ideal_cycles"],
                          case=f"{p['config']['name']}_{name}")
    return cycles, outputs, overlap


def _overlap(beats, wf, xf, of):
    """Per cmd i >= 1: [first weight beat of i, first input beat of i] taken before the last output
    beat of cmd i - 1 (1/0; a cmd without weight beats gives 1 for the first)."""
    res, wi, xi, oi = [], 0, 0, 0
    for i, (nw, nx, no) in enumerate(beats):
        if i:
            last_o = of[oi - 1]
            res.append([int(nw == 0 or wf[wi] < last_o), int(xf[xi] < last_o)])
        wi, xi, oi = wi + nw, xi + nx, oi + no
    return res


def _outputs_file() -> Path:
    return Path(os.environ["TB_CASE_DIR"]) / "outputs.npz"


@cocotb.test()
async def ops_nostall(dut):
    """Every op with the streams never stalled: bit-exact, and the cycles recorded.
    The outputs go to outputs.npz (a chained test feeds them to the next unit)."""
    cycles, outputs, overlap = await _play(dut, 0.0, 0.0, record=True)
    np.savez(_outputs_file(), **{k.replace("/", "|"): v for k, v in outputs.items()})
    write_result({"cycles": cycles, "overlap": overlap, "outputs_npz": str(_outputs_file())})


@cocotb.test()
async def ops_random_stalls(dut):
    """The same ops with random valid gaps on the inputs and random backpressure on the output
    (compared with golden where the case has expected values, else with the stall-free run)."""
    p, _ = load_case()
    with np.load(_outputs_file()) as z:
        reference = {k.replace("|", "/"): z[k] for k in z.files}
    await _play(dut, p["gap"], p["backpressure"], record=False, reference=reference)
