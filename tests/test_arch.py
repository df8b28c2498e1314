"""arch/: the configuration, the formats, the IR's graph walk and the compiler's program."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from arch import formats
from arch import graph as arch_graph
from arch import ir as arch_ir
from arch.compiler import compile_ir
from arch.config import PRESETS, AccelConfig
from arch.program import Program


@pytest.fixture(scope="module")
def structure():
    from quant.export import structure_ir
    return {m: structure_ir(m) for m in ("b0-r224", "b1-r224", "b1-r288", "b2-r256")}


# --------------------------------------------------------------------------- configuration and formats
def test_presets_round_trip_and_refuse_bad_values():
    for cfg in PRESETS.values():
        assert AccelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="does not know: \\['mults_per_dsp'\\]"):
        AccelConfig.from_dict(dict(PRESETS["paper"].to_dict(), mults_per_dsp=2))
    for bad in (dict(clock_mhz=float("nan")), dict(mat_mults=6), dict(act_bits=1), dict(replicas=0)):
        with pytest.raises(ValueError):
            AccelConfig(**bad)


def test_formats_follow_the_configuration():
    F = formats.formats(AccelConfig())
    assert (F.act.lo, F.act.hi, F.weight.lo, F.weight.hi) == (0, 255, -127, 127)
    assert (F.acc.lo, F.acc.hi, F.shift_max, F.mult.hi) == (-2 ** 31, 2 ** 31 - 1, 63, 2 ** 31 - 1)
    assert (F.kv.lo, F.kv.hi, F.logits.lo, F.logits.hi, F.log2_code.hi) == (-127, 127, -32768, 32767, 15)
    assert F.t3.bits == 22 and F.ln_frac_bits == 10 and F.ln_recip_bits == 31
    F6 = formats.formats(AccelConfig(act_bits=6, weight_bits=4))
    assert (F6.act.hi, F6.weight.hi, F6.kv.hi, F6.t3.bits) == (63, 7, 31, 24)
    assert formats.IntFormat(6, False).fits_in(F.act) and not F.act.fits_in(F6.act)


def _tiny_ir():
    from tests.test_golden_model import tiny_ir
    return arch_ir.load(tiny_ir())


def test_a_model_wider_than_the_machine_is_refused_by_name():
    ir = _tiny_ir()
    with pytest.raises(ValueError, match="tensor 'input': 8-bit unsigned .* preset 'narrow' stores activations as "
                                         "6-bit unsigned"):
        arch_ir.check_formats(ir, AccelConfig(name="narrow", act_bits=6))
    with pytest.raises(ValueError, match="node 'stem' weights: 8-bit signed narrow .* multiplies weights of 4-bit"):
        arch_ir.check_formats(ir, AccelConfig(name="w4", weight_bits=4))
    with pytest.raises(ValueError, match="divisor code: 4-bit unsigned .* exponent in 3-bit"):
        arch_ir.check_formats(ir, AccelConfig(name="c3", log2_code_bits=3))
    arch_ir.check_formats(ir, AccelConfig(act_bits=10))      # narrower than the machine: fine


def test_divisor_mantissa_bits_beyond_the_machine_are_refused():
    ir = _tiny_ir()
    assert [n.get("log2_frac", 0) for n in ir["nodes"] if n["op"] == "attention"] == [0, 1]
    ir["nodes"][[n["op"] for n in ir["nodes"]].index("attention")]["log2_frac"] = 2
    with pytest.raises(ValueError, match="'mla.attn0': the divisor has 2 mantissa bits; the machine takes 0..1"):
        arch_ir.check_formats(ir, AccelConfig())


def test_the_mantissa_bit_reaches_the_program_and_its_binary():
    """attn1 of the test network has the mantissa bit: its divide op carries div_frac and the second
    multiplier rows, through the binary encoding and back; attn0's op has neither."""
    from arch import encoding
    prog = compile_ir(_tiny_ir(), PRESETS["tiny"])
    qkv = [op for op in prog.ops if op.opcode == "MAT.ATTN_QKV"]
    assert [op.geom.get("div_frac", 0) for op in qkv] == [0, 1]
    assert [[p.name for p in op.params][-2:] for op in qkv] == [["e_lo", "z_out"], ["M_o1", "n_o1"]]
    buf = np.zeros(prog.dram_bytes, np.uint8)
    blob = np.frombuffer(encoding.encode(prog), np.uint8)
    buf[prog.program_addr:prog.program_addr + blob.size] = blob
    back = encoding.decode(buf, prog.program_addr, prog.config)
    assert [op.geom.get("div_frac", 0) for op in back.ops if op.opcode == "MAT.ATTN_QKV"] == [0, 1]


def test_ir_v2_files_still_read():
    ir = _tiny_ir()
    old = dict(ir, version=2)
    old.pop("kind")
    old["nodes"] = [{k: v for k, v in n.items() if k != "weight_shape"} for n in ir["nodes"]]
    back = arch_ir.load(old)
    assert back["version"] == arch_ir.VERSION and back["kind"] == "quantized"
    assert [n.get("weight_shape") for n in back["nodes"]] == [n.get("weight_shape") for n in ir["nodes"]]


def test_ir_names_an_unknown_tensor():
    ir = _tiny_ir()
    ir["nodes"][2] = dict(ir["nodes"][2], input="nowhere")
    with pytest.raises(ValueError, match="uses tensor 'nowhere', which `tensors` does not describe"):
        arch_ir.load(ir)


# --------------------------------------------------------------------------- the graph walk
def independent_macs(variant: str, size: int) -> int:
    """MACs of a real float forward pass of timm's model: conv/linear from module hooks
    (output elements x reduction length), attention from the matmuls each LiteMLA runs
    (k^T v and q kv, v padded with a row of ones)."""
    import timm
    torch.manual_seed(0)
    model = timm.create_model(f"efficientvit_{variant}", pretrained=False).eval()
    count = [0]

    def conv(mod, inp, out):
        count[0] += out.numel() * mod.weight[0].numel()

    def lin(mod, inp, out):
        count[0] += out.numel() * mod.in_features

    orig = torch.Tensor.__matmul__

    def counting_matmul(a, b):
        out = orig(a, b)
        count[0] += out.numel() * a.shape[-1]
        return out

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(lin)
    torch.Tensor.__matmul__ = counting_matmul
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, size, size))
    finally:
        torch.Tensor.__matmul__ = orig
    return count[0]


@pytest.mark.parametrize("name", ["b0-r224", "b1-r224", "b1-r288", "b2-r256"])
def test_graph_macs_match_an_independent_count(structure, name):
    variant, size = name.split("-r")
    assert arch_graph.infer(structure[name]).macs == independent_macs(variant, int(size))


def test_b1_r224_is_the_published_half_gmac(structure):
    assert round(arch_graph.infer(structure["b1-r224"]).macs / 1e9, 2) == 0.52


def test_graph_kinds_and_attention_shapes(structure):
    g = arch_graph.infer(structure["b1-r224"])
    assert {n.kind for n in g.nodes} == {"conv", "pw", "dw", "grouped", "linear", "attention", "add", "avgpool",
                                        "layernorm"}
    assert {(n.k, n.stride) for n in g.nodes if n.kind == "dw"} == {(3, 1), (3, 2), (5, 1)}
    # stage 3 (14x14, 128 ch, dim 16: 8 heads a branch) and stage 4 (7x7, 256 ch, 16 heads)
    assert {(n.tokens, n.heads, n.dim) for n in g.nodes if n.kind == "attention"} == {(196, 8, 16), (49, 16, 16)}


# --------------------------------------------------------------------------- the compiler
@pytest.mark.parametrize("preset", ["tiny", "small", "paper", "zcu102"])
def test_program_covers_the_graph_exactly(structure, preset):
    cfg = PRESETS[preset]
    ir = structure["b1-r224"]
    g = arch_graph.infer(ir)
    prog = compile_ir(ir, cfg)
    assert prog.macs == g.macs
    # every node's output channels are computed exactly once (a split node: two adjacent ranges)
    for n in g.nodes:
        ops = [op for op in prog.ops if op.node == n.name]
        phases = {op.opcode for op in ops} if n.kind == "attention" else {None}
        for ph in phases:
            rng = sorted((op.oc0, op.oc1) for op in ops if ph is None or op.opcode == ph)
            assert rng[0][0] == 0 and rng[-1][1] == n.cout and all(a[1] == b[0] for a, b in zip(rng, rng[1:])), n.name
    # groups partition the operations in order
    assert [i for grp in prog.groups for i in grp.ops] == list(range(len(prog.ops)))
    assert all(prog.ops[i].group == grp.index for grp in prog.groups for i in grp.ops)


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_placement_never_overlaps_live_tensors_and_dram_segments(structure, preset):
    prog = compile_ir(structure["b0-r224"], PRESETS[preset])
    act = [t for t in prog.tensors.values() if t.space == "act"]
    for a in act:
        assert 0 <= a.addr and a.addr + a.bytes <= PRESETS[preset].act_buffer_kib * 1024
        for b in act:
            if a is not b and not (a.last < b.first or b.last < a.first):
                assert a.addr + a.bytes <= b.addr or b.addr + b.bytes <= a.addr, (a.name, b.name)
    segs = [(t.addr, t.bytes) for t in prog.tensors.values() if t.space == "dram"]
    segs += [(op.weights, op.weight_bytes) for op in prog.ops if op.weight_bytes]
    segs += [(p.addr, p.bytes) for op in prog.ops for p in op.params]
    segs.sort()
    assert all(a + n <= b for (a, n), (b, _) in zip(segs, segs[1:])) and segs[-1][0] + segs[-1][1] <= prog.dram_bytes
    assert prog.tensors[prog.input].space == prog.tensors[prog.output].space == "dram"


def test_program_json_round_trip_and_reader_errors(structure, tmp_path):
    prog = compile_ir(structure["b0-r224"], PRESETS["small"])
    back = Program.load(prog.save(tmp_path / "p.json"))
    assert back.listing() == prog.listing() and back.to_dict() == prog.to_dict()
    d = json.loads((tmp_path / "p.json").read_text())
    for mutate, msg in ((lambda d: d.update(version=99), "program format version 99"),
                        (lambda d: d.update(format="x"), "not a triovit-program"),
                        (lambda d: d.pop("ops"), "lacks the field 'ops'"),
                        (lambda d: d["ops"][0].update(opcode="MAT.FOO"), "unknown opcode 'MAT.FOO'")):
        bad = json.loads(json.dumps(d))
        mutate(bad)
        with pytest.raises(ValueError, match=msg):
            Program.from_dict(bad)
    with pytest.raises(FileNotFoundError, match="write a program with"):
        Program.load(tmp_path / "missing.json")


def test_the_compiler_needs_no_weights(structure):
    """A structure IR (float model, no values) and a quantized one of the same graph compile alike."""
    ir = structure["b0-r224"]
    assert ir["kind"] == "structure" and all("weight_codes" not in n for n in ir["nodes"])
    prog = compile_ir(ir, PRESETS["paper"])
    assert prog.ir_kind == "structure" and all(dataclasses.asdict(op) for op in prog.ops)
    assert np.all([op.weights >= 0 for op in prog.ops if op.weight_bytes])


# --------------------------------------------------------------------------- the binary program
def test_binary_program_round_trip(structure):
    from arch import encoding
    prog = compile_ir(structure["b1-r224"], PRESETS["small"])
    buf = np.zeros(prog.dram_bytes, np.uint8)
    blob = np.frombuffer(encoding.encode(prog), np.uint8)
    assert blob.size == encoding.HEADER_BYTES + len(prog.ops) * encoding.RECORD_BYTES <= \
        encoding.program_bytes(len(prog.ops))
    buf[prog.program_addr:prog.program_addr + blob.size] = blob
    back = encoding.decode(buf, prog.program_addr, prog.config)
    assert len(back.ops) == len(prog.ops) and [g.bands for g in back.groups] == [g.bands for g in prog.groups]
    for a, b in zip(prog.ops, back.ops):
        assert (a.index, a.opcode, a.group, a.epilogue, a.oc0, a.oc1, a.lo, a.hi, a.weights, a.weight_bytes) == \
               (b.index, b.opcode, b.group, b.epilogue, b.oc0, b.oc1, b.lo, b.hi, b.weights, b.weight_bytes)
        assert {k: v for k, v in a.geom.items() if k != "macs"} == {k: b.geom[k] for k in a.geom if k != "macs"}
        assert [(p.name, p.count, p.addr, p.bytes) for p in a.params] == \
               [(p.name, p.count, p.addr, p.bytes) for p in b.params]
        for x, y in zip(a.inputs + a.outputs, b.inputs + b.outputs):
            tx, ty = prog.tensors[x], back.tensors[y]
            assert (tx.space, tx.shape, tx.bits, tx.signed) == (ty.space, ty.shape, ty.bits, ty.signed)
            assert tx.space == "line" or tx.addr == ty.addr


def test_binary_program_errors(structure):
    from arch import encoding
    prog = compile_ir(structure["b0-r224"], PRESETS["tiny"])
    buf = np.frombuffer(encoding.encode(prog), np.uint8).copy()
    bad = buf.copy()
    bad[encoding.HEADER_BYTES + 5 * encoding.RECORD_BYTES] = 0x7F          # op 5's opcode byte
    with pytest.raises(ValueError, match="op record 5: unknown opcode 127"):
        encoding.decode(bad, 0, prog.config)
    with pytest.raises(ValueError, match="compiled for configuration"):
        encoding.decode(buf, 0, PRESETS["small"])
    bad = buf.copy()
    bad[:4] = np.frombuffer(b"XXXX", np.uint8)
    with pytest.raises(ValueError, match="no program at 0x0"):
        encoding.decode(bad, 0, prog.config)
    prog.ops[0].oc1 = 70000
    with pytest.raises(ValueError, match="oc1 = 70000 does not fit its 16-bit field"):
        encoding.encode(prog)
