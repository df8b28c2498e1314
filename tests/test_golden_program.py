"""golden/ as the executor of the compiled program (golden/program.py) and of the IR's real semantics
(golden/reference.py)."""
from __future__ import annotations

import numpy as np
import pytest

from arch.compiler import compile_ir
from arch.config import PRESETS
from golden import convert, execute, program
from golden.reference import Reference
from tests.test_golden_model import images, tiny_ir


@pytest.mark.parametrize("preset", ["tiny", "small", "paper", "zcu102"])
@pytest.mark.parametrize("w_bits,a_bits", [(8, 8), (6, 6)])
def test_program_computes_the_integer_models_bits(preset, w_bits, a_bits):
    """From the program and its DRAM image alone (weights and tables read back at their addresses, in
    their element formats; layers split between the engines; tensors placed by live range)."""
    ir = tiny_ir(w_bits=w_bits, a_bits=a_bits)
    model = convert.from_ir(ir)
    prog = compile_ir(ir, PRESETS[preset])
    for x in images(2):
        r = program.check(prog, model, x)
        assert r["bit_exact"] and r["first_difference"] is None, r
        assert r["macs"] == prog.macs


def test_a_corrupt_image_or_program_is_caught_and_located():
    ir = tiny_ir()
    model = convert.from_ir(ir)
    prog = compile_ir(ir, PRESETS["small"])
    x = images(1)[0]
    ref = execute.run(model, x)
    # a parameter table entry flipped in DRAM: the logits move, the first bad op is named
    dram = program.dram_image(prog, model)
    op = next(o for o in prog.ops if o.node == "mb.project")
    dram[op.param("M").addr + 3] ^= 0x40
    assert not np.array_equal(program.run(prog, dram, x), ref)
    r = program.check(prog, model, x, dram)
    assert not r["bit_exact"] and r["first_difference"]["node"] == "mb.project", r
    # one weight of a later layer: the first difference is that layer
    dram = program.dram_image(prog, model)
    dram[next(o for o in prog.ops if o.node == "mla.proj").weights + 5] ^= 0x03
    r = program.check(prog, model, x, dram)
    assert not r["bit_exact"] and r["first_difference"]["node"] == "mla.proj", r


def test_the_dram_image_refuses_a_program_of_another_model():
    prog = compile_ir(tiny_ir(), PRESETS["small"])
    model = convert.from_ir(tiny_ir(a_bits=6))
    model["nodes"] = [n for n in model["nodes"] if n["name"] != "mb.dw"]
    with pytest.raises(ValueError, match="executes node 'mb.dw', which the integer model lacks"):
        program.dram_image(prog, model)


@pytest.mark.parametrize("w_bits,a_bits", [(8, 8), (6, 6), (4, 8)])
def test_reference_is_the_semantics_of_every_node(w_bits, a_bits):
    """golden/reference.py and this file's node-by-node float64 emulation of docs/quantized_format.md
    give the same codes for every stored tensor on the reference's own inputs."""
    from tests.test_golden_model import emulate, emulate_attention
    ir = tiny_ir(w_bits=w_bits, a_bits=a_bits)
    env = Reference(ir)(images(3), keep=True)
    for node in ir["nodes"]:
        if node["op"] == "attention":
            o = node["out_channel_offset"]
            want = emulate_attention(node, ir, env)
            got = env[node["output"]][:, o:o + node["heads"] * node["dim"]]
        else:
            want, got = emulate(node, ir, env), env[node["output"]]
        assert np.array_equal(got, want), node["name"]


def test_reference_matches_quants_fakequant_model():
    """golden's reference (IR semantics, numpy/torch float64) and quant/'s fake-quant model (float64,
    weights pinned to the exported codes and bias) are two implementations of one definition."""
    import torch

    from golden.images import normalise
    from quant.export import load_quantized, save_quantized
    from tests.test_quant_engine import small_case
    from quant.engine import quantize
    from quant.config import QuantConfig

    model, x, _ = small_case()
    cfg = QuantConfig(iters_w=0, iters_a=0, batch_size=8)
    qm, rep = quantize(model, [x[:8]], cfg, progress=False)
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        path = save_quantized(Path(d) / "q.pt", qm, "b0-r224", cfg, rep)
        qm2, obj = load_quantized(path)
        codes = {n["name"]: n for n in obj["nodes"] if "weight_codes" in n}
        qm2 = qm2.double()
        for op in qm2.weight_ops():
            n = codes[op.name]
            op.weight.data = torch.from_numpy(n["weight_codes"]).double().view_as(op.weight) * op.wq.scale
            op.wq.mode = "nearest"
            op.pin_bias(torch.from_numpy(np.asarray(n["bias"], np.float64)))
        u8 = np.random.default_rng(0).integers(0, 256, (3, 3, 96, 96)).astype(np.uint8)
        ir = dict(obj, input_size=96)
        ref = Reference(ir)(u8)
        with torch.no_grad():
            fq = qm2(normalise(u8).double()).numpy()
    s = float(np.abs(obj["tensors"][obj["graph_output"]]["scale"]).reshape(-1)[0])
    fq_codes = np.floor(fq / s + 0.5)
    assert np.array_equal(ref, fq_codes)


def test_program_command_line(tmp_path, capsys):
    from PIL import Image

    from arch import ir as arch_ir
    from golden.__main__ import main
    from pysim.__main__ import main as pysim_main
    q = arch_ir.save(tmp_path / "q.pt", arch_ir.load(tiny_ir(a_bits=6)))
    img = tmp_path / "x.png"
    Image.fromarray(images(1)[0].transpose(1, 2, 0)).save(img)
    assert main(["program", "--quantized", str(q), "--image", str(img), "--preset", "tiny",
                 "--dram", str(tmp_path / "d.bin"), "--json", str(tmp_path / "r.json")]) == 0
    assert "bit-exact with the integer model" in capsys.readouterr().out
    # the same program written by pysim and loaded back
    assert pysim_main(["--quantized", str(q), "--preset", "small", "--program", str(tmp_path / "p.json")]) == 0
    assert main(["program", "--quantized", str(q), "--image", str(img), "--program", str(tmp_path / "p.json")]) == 0
    assert (tmp_path / "d.bin").stat().st_size > 0
    assert main(["program", "--quantized", str(q), "--image", str(img), "--preset", "huge"]) == 2
    assert "unknown accelerator preset 'huge'" in capsys.readouterr().err
