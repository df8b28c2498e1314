"""Cocotb side of tb/test_mat_engine.py: plays MAT-engine tile plans, checks every element."""
import cocotb
import numpy as np

from tb.cocotb_kit import TB, assert_equal, load_case, record_cycles, write_result

MISSING = np.iinfo(np.int64).min


def _layouts(dut_cfg):
    from rtl.config import AccelConfig
    from rtl.mat_engine import MatEngine
    cfg = AccelConfig(**{k: v for k, v in dut_cfg.items()
                         if k in AccelConfig.__dataclass_fields__})
    eng = MatEngine(cfg)
    sig = eng.signature.members
    return {name: sig[name].signature.members["payload"].shape for name in ("cmd", "w", "x", "o")}


async def _play(dut, gap: float, bp: float, record: bool):
    p, a = load_case()
    lay = _layouts(p["config"])
    tb = TB(dut, seed=p["seed"] + (0 if record else 1))
    await tb.reset()
    cmd = tb.source("cmd", lay["cmd"], gap)
    w = tb.source("w", lay["w"], gap)
    x = tb.source("x", lay["x"], gap)
    o = tb.sink("o", lay["o"], bp)
    cycles = {}
    for op in p["ops"]:
        name = op["name"]
        first_cmd = len(cmd.fire_cycles)
        n_before = len(o.beats)
        for c in op["cmds"]:
            cmd.send(c)
        for beat in a[f"{name}.w"]:
            w.send(beat)
        for beat in a[f"{name}.x"]:
            x.send(beat)
        omap = a[f"{name}.omap"]
        await o.wait_beats(n_before + len(omap))
        got = np.asarray(o.beats[n_before:], np.int64)
        actual = np.full(op["P"] * op["C"], MISSING, np.int64)
        sel = omap >= 0
        actual[omap[sel]] = got[sel]
        assert_equal(actual.reshape(op["P"], op["C"]), a[f"{name}.expected"].reshape(op["P"], op["C"]),
                     f"{p['case']}/{name}")
        n = o.fire_cycles[-1] - cmd.fire_cycles[first_cmd] + 1
        cycles[name] = n
        if record and op.get("record"):
            record_cycles(p, op["record"]["op"], n, op["record"]["ideal_cycles"],
                          case=f"{p['config']['name']}_{name}")
    return cycles


@cocotb.test()
async def mat_ops_nostall(dut):
    """Every op with the streams never stalled: bit-exact, and the cycles recorded."""
    cycles = await _play(dut, 0.0, 0.0, record=True)
    write_result({"cycles": cycles})


@cocotb.test()
async def mat_ops_random_stalls(dut):
    """The same ops with random valid gaps on the inputs and random backpressure on the output."""
    p, _ = load_case()
    await _play(dut, p["gap"], p["backpressure"], record=False)
