"""The machine's executors under Verilator, bit-exact against golden/ operation by operation.

tests/test_golden_model.py's every-op network (16x16, the tiny preset) is compiled with every tensor
in DRAM (tb/replay.py). For each operation whose opcode the machine as built executes
(rtl/executors.py), the DRAM state golden/ computes before it is loaded, with that operation alone as
the program; the machine runs it through the host driver, and the whole DRAM image it leaves must
equal golden's state after the operation, byte for byte (outside the program's bytes). AXI channels
get random pauses and the DRAM a random read latency.
"""
from __future__ import annotations

import numpy as np
import pytest

from arch.config import PRESETS
from arch.regmap import ErrorCode
from tb.harness import run_cocotb
from tb import replay

BASE = 0x12_3456_0000
CFG = PRESETS["tiny"]


def replay_failures(executors: dict, case: str, seed: int = 5, cfg=CFG) -> list[str]:
    """Replay every operation of the test network whose opcode ``executors`` runs on
    ``Machine(cfg, executors)``; the list of what differed (empty: all bit-exact)."""
    from rtl.machine import Machine
    from tests.test_golden_model import images, tiny_ir
    prog, model, image = replay.dram_program(tiny_ir(), cfg)
    states = replay.golden_states(prog, image, images(1)[0])
    ks = [op.index for op in prog.ops if op.opcode in executors]
    assert ks, f"no operation of the test network has an opcode in {sorted(executors)}"
    arrays, runs = {}, []
    for k in ks:
        arrays[f"op{k}"] = replay.single_op_image(prog, k, states[k])
        runs.append({"name": f"op{k}", "image": f"op{k}", "readback": [0, int(image.size)]})
    res = run_cocotb(unit="machine", make=lambda: Machine(cfg, executors), config=cfg, module="tb.machine_cocotb",
                     case=case, gen={"executors": sorted(executors)}, arrays=arrays, seed=seed,
                     params={"runs": runs, "base": BASE, "fault_base": BASE + (1 << 24), "program_offset": 0,
                             "ops": 1, "cycle_limit": 2_000_000, "pauses": 0.2, "latency": [0, 8]})
    failures = []
    for k, r in zip(ks, res["runs"], strict=True):
        op = prog.ops[k]
        what = f"op {k} {op.opcode} ({op.node})"
        if r["hung"] or not r["status"]["DONE"]:
            code = ErrorCode(r["error_code"]).name if r["error_code"] in ErrorCode._value2member_map_ else r["error_code"]
            failures.append(f"{what}: did not finish: error {code}, status {r['status']}")
            continue
        got = np.frombuffer(bytes.fromhex(r["readback"]), np.uint8)
        diff = replay.first_difference(prog, got, states[k + 1])
        if diff is not None:
            failures.append(f"{what}: {diff}")
    return failures


@pytest.mark.sim
def test_every_executor_replays_its_operations_bit_exact():
    from rtl.executors import EXECUTORS
    failures = replay_failures(EXECUTORS, "replay")
    assert not failures, "\n".join(failures)
