"""The accelerator's top level (rtl/machine.py) under Verilator, driven as a board user would: the host
driver lays the DRAM image of a compiled program (tests/test_golden_model.py's every-op network at
16x16, the tiny preset) into cocotbext-axi's AxiRam and starts the machine through its AXI4-Lite
registers (tb/machine_cocotb.py). AXI channels get random pauses and the DRAM a random read latency.

Two builds:

* the **control plane** with test-only echo executors on every opcode (tb/machine_hooks.py): the
  sequencer walks the whole program and every record arrives whole and in order at an executor,
  which writes it back to DRAM through the DMA; then every malformed program the sequencer must
  refuse (bad magic, wrong configuration key, operation count, too many operations, misaligned base,
  bad opcode, an operation index out of order, weights / activation operands out of range, a program
  in memory that answers SLVERR) stops with its error code and the failing operation's index,
  raises the interrupt line, leaves the machine idle, and a good program runs after it;
* the **machine as built** (rtl/executors.py) refuses a program that keeps tensors in the on-chip
  activation buffer (its executors stream operands from DRAM) with BAD_GEOMETRY at the first
  operation (tb/test_executors.py and tb/test_run_network.py run what it does execute).
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from arch import encoding
from arch.compiler import compile_ir
from arch.config import PRESETS
from arch.program import OPCODES
from arch.regmap import ErrorCode
from tb.harness import run_cocotb

BASE = 0x12_3456_0000               # above 4 GiB: the upper address bits matter
CFG = PRESETS["tiny"]


def _program():
    from golden import convert, program
    from tests.test_golden_model import tiny_ir
    ir = tiny_ir()
    prog = compile_ir(ir, CFG)
    return prog, program.dram_image(prog, convert.from_ir(ir))


def _record(prog, i: int, word: int) -> int:
    return prog.program_addr + encoding.HEADER_BYTES + i * encoding.RECORD_BYTES + 4 * word


def _echo_image(prog, image):
    """The image grown by one record per operation (where the echo executor writes), ``dram_bytes``
    in the header patched to match."""
    n = len(prog.ops)
    grown = np.concatenate([image, np.zeros(n * encoding.RECORD_BYTES, np.uint8)])
    struct.pack_into("<I", grown, prog.program_addr + encoding.HEADER_DRAM_BYTES, grown.size)
    return grown


def _scenarios(prog, image):
    n = len(prog.ops)
    head = prog.program_addr
    word = lambda off: int(struct.unpack_from("<I", image, off)[0])      # noqa: E731
    k = n // 2
    kw = next(op.index for op in prog.ops if op.weights >= 0 and op.index > 0)
    ka, slot = next((op.index, j) for op in prog.ops for j, t in enumerate(op.inputs + op.outputs)
                    if prog.tensors[t].space == "act" and op.index > 1)
    operand = lambda i, j, w: _record(prog, i, encoding.OPERAND_WORDS + 3 * j + w)    # noqa: E731
    act_bytes = CFG.act_buffer_kib * 1024
    E = ErrorCode
    return [
        # name, expected code (NONE: done), expected ERROR_OP, patches / overrides
        ("good", E.NONE, 0, {"readback": [image.size - n * encoding.RECORD_BYTES, n * encoding.RECORD_BYTES]}),
        ("bad_magic", E.BAD_PROGRAM, 0, {"patches": [[head, 0x12345678]]}),
        ("wrong_config_key", E.BAD_PROGRAM, 0, {"patches": [[head + 16, word(head + 16) ^ 1]]}),
        ("ops_mismatch", E.BAD_PROGRAM, 0, {"ops": n - 1}),
        ("too_long", E.PROGRAM_TOO_LONG, 0, {"ops": 70_000}),
        ("misaligned_base", E.MISALIGNED, 0, {"program_offset": head + 16}),
        ("bad_opcode", E.BAD_OPCODE, k, {"patches": [[_record(prog, k, 0), word(_record(prog, k, 0)) | 0x7F]]}),
        ("index_out_of_order", E.BAD_PROGRAM, k, {"patches": [[_record(prog, k, 1), word(_record(prog, k, 1)) ^ 1]]}),
        ("weights_past_image", E.ADDR_RANGE, kw, {"patches": [[_record(prog, kw, 13), image.size - 4]]}),
        ("act_operand_past_buffer", E.ADDR_RANGE, ka, {"patches": [[operand(ka, slot, 1), act_bytes - 4]]}),
        ("program_in_faulting_memory", E.AXI_SLVERR, 0, {"program_offset": FAULT_OFFSET}),
        ("good_after_errors", E.NONE, 0, {}),
    ]


FAULT_OFFSET = 1 << 20              # the AxiRam answers SLVERR from BASE + FAULT_OFFSET on


def _run(make, case, runs, image, n_ops, pauses=0.2, latency=(0, 8), seed=3):
    return run_cocotb(unit="machine", make=make, config=CFG, module="tb.machine_cocotb", case=case,
                      gen={"executors": "echo"}, arrays={"image": image}, seed=seed,
                      params={"runs": runs, "base": BASE, "fault_base": BASE + FAULT_OFFSET,
                              "program_offset": 0, "ops": n_ops, "cycle_limit": 200_000,
                              "pauses": pauses, "latency": list(latency)})


@pytest.mark.sim
def test_control_plane_walks_the_program_and_refuses_every_malformed_one():
    from rtl.machine import Machine
    from tb.machine_hooks import EchoExecutor
    prog, image = _program()
    image = _echo_image(prog, image)
    n = len(prog.ops)
    scen = _scenarios(prog, image)
    runs = [{"name": name, **extra} for name, _, _, extra in scen]
    res = _run(lambda: Machine(CFG, {op: EchoExecutor for op in OPCODES}), "echo-pauses", runs, image, n)
    assert res["ident"]["CONFIG_KEY"] == int(CFG.key()[:8], 16)
    records = image[prog.program_addr + encoding.HEADER_BYTES:][:n * encoding.RECORD_BYTES]
    for (name, code, err_op, _), r in zip(scen, res["runs"], strict=True):
        assert not r["hung"], f"{name}: neither DONE nor ERROR within the cycle limit: {r}"
        assert not r["busy_after"], f"{name}: the machine stayed busy after stopping: {r}"
        assert r["irq"] == 0, f"{name}: irq without IRQ_EN: {r}"
        if code == ErrorCode.NONE:
            assert r["status"]["DONE"] and not r["status"]["ERROR"], f"{name}: {r}"
            assert r["counters"]["ops_done"] == n and r["counters"]["cycles"] > 0, f"{name}: {r['counters']}"
            assert r["counters"]["dma_busy"] > 0 and r["counters"]["mat_busy"] > 0, r["counters"]
        else:
            assert r["status"]["ERROR"] and not r["status"]["DONE"], f"{name}: {r}"
            got = ErrorCode(r["error_code"]).name if r["error_code"] in ErrorCode._value2member_map_ else r["error_code"]
            assert (r["error_code"], r["error_op"]) == (code, err_op), \
                f"{name}: stopped with {got} after {r['error_op']} ops, expected {code.name} after {err_op}"
            assert r["counters"]["ops_done"] == err_op, f"{name}: {r['counters']}"
    # every record reached an executor whole, in order (the echo writes record i at the i-th slot from the end)
    echoed = np.frombuffer(bytes.fromhex(res["runs"][0]["readback"]), np.uint8).reshape(n, encoding.RECORD_BYTES)[::-1]
    for i in range(n):
        assert bytes(echoed[i]) == bytes(records[i * encoding.RECORD_BYTES:(i + 1) * encoding.RECORD_BYTES]), \
            f"record {i} ({prog.ops[i].opcode}) arrived altered at its executor"


@pytest.mark.sim
def test_machine_as_built_refuses_operands_in_the_activation_buffer():
    """The staged executors stream every operand from DRAM (compile_ir(on_chip=False)); a program that
    places tensors in the on-chip activation buffer stops at its first operation with BAD_GEOMETRY."""
    from rtl.executors import EXECUTORS, machine
    prog, image = _program()
    assert prog.tensors[prog.ops[0].output].space != "dram"
    res = run_cocotb(unit="machine", make=lambda: machine(CFG), config=CFG, module="tb.machine_cocotb",
                     case="built", gen={"executors": sorted(EXECUTORS)}, arrays={"image": image}, seed=1,
                     params={"runs": [{"name": "on_chip_program"}], "base": BASE, "fault_base": BASE + FAULT_OFFSET,
                             "program_offset": 0, "ops": len(prog.ops), "cycle_limit": 200_000, "pauses": 0.0,
                             "latency": [0, 0]})
    (r,) = res["runs"]
    assert r["status"]["ERROR"] and not r["hung"] and not r["busy_after"], r
    assert (r["error_code"], r["error_op"]) == (ErrorCode.BAD_GEOMETRY, 0), r


def test_machine_ports_follow_the_axi_conventions():
    """What Vivado's packager needs: aclk / aresetn, s_axi_* (AXI4-Lite), m_axi_* (AXI4), irq."""
    from rtl.machine import Machine
    from tb.harness import to_verilog
    v = to_verilog(Machine(CFG), "triovit_machine_tiny")
    top = v[v.index("module triovit_machine_tiny("):]
    top = top[:top.index("endmodule")]
    ports = {line.split()[-1].rstrip(";") for line in top.splitlines()
             if line.strip().startswith(("input", "output")) and "module" not in line}
    assert {"aclk", "aresetn", "irq", "s_axi_awaddr", "s_axi_rdata", "m_axi_araddr", "m_axi_wdata",
            "m_axi_bresp", "m_axi_rlast"} <= ports
    assert not {p for p in ports if p.startswith(("clk", "rst"))}, ports
    assert all(p in ("aclk", "aresetn", "irq") or p.startswith(("s_axi_", "m_axi_")) for p in ports), ports


def test_machine_refuses_executors_for_unknown_opcodes():
    from rtl.machine import Machine
    with pytest.raises(ValueError, match="unknown opcodes.*MAT.CONVX"):
        Machine(CFG, {"MAT.CONVX": object})
