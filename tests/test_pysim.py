"""pysim: the engines' cost functions, pricing invariants of compiled programs, the memory model, the CLI."""
from __future__ import annotations

import json
import math

import pytest

from arch import cost, timing
from arch.compiler import compile_ir
from arch.config import PRESETS
from pysim.__main__ import UsageError, apply_overrides, main
from pysim.price import price

PAPER, ZCU = PRESETS["paper"], PRESETS["zcu102"]


@pytest.fixture(scope="module")
def b0_ir():
    from quant.export import structure_ir
    return structure_ir("b0-r224")


@pytest.fixture(scope="module")
def b0_paper(b0_ir):
    return price(compile_ir(b0_ir, PAPER))

# ------------------------------------------------------------ cost functions --
def test_mat_tile_formula_on_exact_multiples():
    cfg = PAPER  # M = N = 8, L = 16, tree depth 3
    rows, red, cols = 16 * 5, 8 * 7, 8
    assert cost.mat_matmul_cycles(cfg, rows, red, cols) == 1 + 7 + 5 * 7 + 3 + 3
    # two column tiles back to back: the second tile's weights load while the first issues and
    # the first one drains while the second issues: one load, one drain
    assert cost.mat_matmul_cycles(cfg, rows, red, 16) == 1 + 7 + 2 * 5 * 7 + 3 + 3
    assert cost.mat_tile_cycles(cfg, 7, 5) == 1 + 7 + 5 * 7 + 3 + 3


def test_back_to_back_formula():
    """cycles = 1 + max(1, W0) + sum_i max(I_i, W_{i+1}) + PIPE (arch/cost.py, the engines' docstrings)."""
    assert cost.back_to_back([10, 10, 10], loads=[4, 4, 4], pipe=6) == 1 + 4 + 30 + 6
    # a load longer than the previous command's issue holds the next command back
    assert cost.back_to_back([2, 10], loads=[4, 9], pipe=6) == 1 + 4 + 9 + 10 + 6
    # a first command that reuses its weights takes one cycle to start; later reuses cost nothing
    assert cost.back_to_back([5, 5], loads=[0, 0], pipe=3) == 1 + 1 + 10 + 3
    assert cost.back_to_back([5, 5], streamed=True, loads=[4, 4], pipe=3) == 10
    assert cost.back_to_back([]) == 0
    cfg = PAPER   # T = 3: PIPE = 6
    assert cost.mat_tiles_cycles(cfg, [(7, 1), (7, 1, False), (3, 1)]) == 1 + 7 + 7 + 7 + 3 + 6
    assert cost.mat_tiles_cycles(cfg, [(2, 1), (7, 3)]) == 1 + 2 + 7 + 21 + 6
    assert cost.rmac_cmds_cycles([(3, 3, 1, 1), (5, 5, 2, 1, True)]) == 1 + 9 + 25 + 50 + 3
    assert cost.rmac_cmds_cycles([dict(kh=3, kw=3, rows=2, xsegs=1, load=0)]) == 1 + 1 + 18 + 3


def test_mat_cost_grows_with_each_ragged_dimension():
    base = cost.mat_matmul_cycles(PAPER, 16, 8, 8)
    assert cost.mat_matmul_cycles(PAPER, 17, 8, 8) > base     # a second pixel group
    assert cost.mat_matmul_cycles(PAPER, 16, 9, 8) > base     # a second weight word
    assert cost.mat_matmul_cycles(PAPER, 16, 8, 9) > base     # a second tile


def test_mat_reduction_longer_than_weight_buffer_is_split_into_passes():
    cfg = PAPER.replace(mat_wbuf_words=4)
    one = cost.mat_tile_cycles(cfg, 4, 1)
    assert one == 1 + 4 + 4 + 3 + 3
    # pass 2's 4 weight words load while pass 1 issues its 4 beats
    assert cost.mat_matmul_cycles(cfg, 1, 8 * 8, 8) == 1 + 4 + 2 * 4 + 3 + 3
    # passes of 4 and 1 words, two column tiles: 4-word loads exceed the 1-word pass's issue
    assert cost.mat_matmul_cycles(cfg, 1, 8 * 5, 16) == 1 + 4 + max(4, 1) + max(1, 4) + max(4, 1) + 1 + 3 + 3
    with pytest.raises(ValueError, match="exceeds mat_wbuf_words=4"):
        cost.mat_tile_cycles(cfg, 5, 1)


def test_rmac_dw_formula():
    cfg = PAPER  # S = T = 8, L = 16
    # 8 channels, 16 x 8 output: one command, one row group, one segment
    assert cost.rmac_dw_cycles(cfg, 8, 16, 8, 3, 1) == 1 + 9 + 9 + 3
    # two commands back to back: one weight load, one drain
    assert cost.rmac_dw_cycles(cfg, 16, 16, 8, 5, 2) == 1 + 25 + 2 * 25 + 3
    assert cost.rmac_cmd_cycles(5, 5, 1, 1) == 1 + 25 + 25 + 3
    with pytest.raises(ValueError, match="k=7"):
        cost.rmac_dw_cycles(cfg, 8, 8, 8, 7, 1)


def test_rmac_pointwise_refuses_inputs_beyond_its_buffer():
    with pytest.raises(ValueError, match="exceeds its weight buffer"):
        cost.rmac_pw_cycles(PAPER, PAPER.rmac_wbuf_words + 1, 8, 4, 4)


def test_stream_units_take_one_beat_per_cycle_plus_latency():
    assert cost.stream_unit_cycles("requant", PAPER, 10, 20) == 10 * 3 + timing.REQUANT_LATENCY
    assert cost.stream_unit_cycles("hswish", PAPER, 1, 8) == 1 + timing.HSWISH_LATENCY
    # the latencies are the RTL components' own (one source: arch/timing.py)
    from rtl.hswish import Hardswish
    from rtl.requant import Requant
    assert (timing.HSWISH_LATENCY, timing.REQUANT_LATENCY) == (Hardswish.LATENCY, Requant.LATENCY) == (14, 8)
    with pytest.raises(KeyError, match="no cost function for RTL unit 'foo'"):
        cost.unit_cycles("foo", {}, PAPER)


# ------------------------------------------------------------ pricing a program --
@pytest.mark.parametrize("preset", ["paper", "zcu102", "small"])
def test_invariants(b0_ir, preset):
    cfg = PRESETS[preset]
    prog = compile_ir(b0_ir, cfg)
    r = price(prog)
    assert r["total_macs"] == prog.macs == sum(x["macs"] for x in r["ops"])
    assert 0 < r["mac_utilization"] <= 1
    assert r["cycles"] >= math.ceil(r["total_macs"] / cfg.multipliers)
    assert r["cycles"] >= r["dram_bytes"] / cfg.dram_bytes_per_cycle
    assert r["cycles"] == sum(g["cycles"] for g in r["groups"])
    assert math.isclose(r["fps"] * r["latency_ms"], 1e3)
    assert math.isclose(r["gops"], 2 * r["total_macs"] * r["fps"] / 1e9)
    assert math.isclose(r["gops_per_dsp"], r["gops"] / cfg.dsps)
    assert r["dram_bytes"] == sum(x["dram_bytes"] for x in r["ops"])
    for g in r["groups"]:
        assert g["cycles"] >= max(g["mat_busy"], g["rmac_busy"])
    for x in r["ops"]:
        assert 0 <= x["utilization"] <= 1, x
        assert x["bound"] in ("compute", "memory")


def test_engines_by_opcode(b0_paper):
    engines = {x["opcode"]: x["engine"] for x in b0_paper["ops"]}
    assert engines == {"MAT.CONV": "MAT", "MAT.LINEAR": "MAT", "MAT.ATTN_KV": "MAT", "MAT.ATTN_QKV": "MAT",
                       "RMAC.DW": "RMAC", "RMAC.PW": "RMAC", "UNIT.ADD": "UNIT", "UNIT.POOL": "UNIT",
                       "UNIT.LNORM": "UNIT"}


def test_mbconv_is_one_fused_group_with_both_engines(b0_ir):
    prog = compile_ir(b0_ir, PAPER)
    ops = [prog.ops[i] for i in prog.groups[prog.ops[next(
        i for i, o in enumerate(prog.ops) if o.node == "stages.1.blocks.1.expand")].group].ops]
    assert [o.node.rsplit(".", 1)[1] for o in ops if o.engine != "RMAC" or o.opcode == "RMAC.DW"] == \
        ["expand", "dw", "project", "add"]
    assert {o.engine for o in ops} == {"MAT", "RMAC", "UNIT"}
    # the expanded and the depthwise tensors stream through the line buffers, never stored whole
    assert prog.tensors["stages.1.blocks.1.expand.out"].space == "line"
    assert prog.tensors["stages.1.blocks.1.dw.out"].space == "line"


def test_fused_mbconv_moves_only_its_weights(b0_ir):
    prog = compile_ir(b0_ir, PAPER)
    r = price(prog)
    gi = next(o.group for o in prog.ops if o.node == "stages.1.blocks.1.expand")
    g = r["groups"][gi]
    weights = sum(prog.ops[i].weight_bytes + prog.ops[i].param_bytes for i in prog.groups[gi].ops)
    assert g["spill_bytes"] == 0 and g["rmac_busy"] > 0 and g["mat_busy"] > 0
    assert g["dram_bytes"] == weights < prog.tensors["stages.1.blocks.1.expand.out"].bytes


def test_engine_balancing_helps(b0_ir):
    on = price(compile_ir(b0_ir, PAPER))
    off = price(compile_ir(b0_ir, PAPER, rmac_pointwise=False))
    assert on["cycles"] < off["cycles"]
    assert "RMAC.PW" in {x["opcode"] for x in on["ops"]} and "RMAC.PW" not in {x["opcode"] for x in off["ops"]}


def test_starved_dram_makes_the_network_memory_bound(b0_ir):
    r = price(compile_ir(b0_ir, PAPER.replace(dram_bytes_per_cycle=0.5)))
    assert r["bound"] == "memory"
    assert r["cycles"] >= r["dram_bytes"] / 0.5
    fast = price(compile_ir(b0_ir, PAPER.replace(dram_bytes_per_cycle=1e6)))
    assert fast["bound"] == "compute" and fast["cycles"] < r["cycles"]


def test_small_buffers_spill(b0_ir):
    tight = price(compile_ir(b0_ir, PAPER.replace(act_buffer_kib=32, weight_buffer_kib=8)))
    roomy = price(compile_ir(b0_ir, PAPER))
    assert tight["dram_breakdown"]["spills"] > roomy["dram_breakdown"]["spills"]
    assert tight["dram_bytes"] > roomy["dram_bytes"]


def test_dsp_count_is_what_synthesis_reports():
    """Two products per DSP48E2 (rtl/dsp_pack.py): the compute engines of every preset in the
    committed synthesis baseline (rtl/synth_baseline.json) add up to the configuration's count."""
    from pathlib import Path
    base = json.loads((Path(__file__).resolve().parents[1] / "rtl" / "synth_baseline.json").read_text())
    checked = 0
    for preset, units in base.items():
        if {"mat_engine", "rmac_engine"} <= units.keys():
            assert PRESETS[preset].dsps == units["mat_engine"]["DSP48E2"] + units["rmac_engine"]["DSP48E2"], preset
            checked += 1
    assert checked >= 3      # tiny, small, paper


# ------------------------------------------------------------ overrides / CLI --
def test_overrides():
    cfg = apply_overrides(ZCU, dsps=2520)
    assert cfg.dsps <= 2520 and cfg.replace(replicas=cfg.replicas + 1).dsps > 2520
    fast = apply_overrides(PAPER, clock_mhz=400)
    assert fast.clock_mhz == 400 and math.isclose(fast.dram_gbps, PAPER.dram_gbps)
    assert math.isclose(apply_overrides(PAPER, dram_gbps=9.6).dram_bytes_per_cycle, 48)
    with pytest.raises(UsageError, match="needs 96 DSPs"):
        apply_overrides(PAPER, dsps=10)
    for bad in (float("nan"), float("inf"), 0.0, -5.0):
        with pytest.raises(UsageError, match="--clock-mhz must be a positive number"):
            apply_overrides(PAPER, clock_mhz=bad)


def test_cli_json_fields(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["--model", "b0-r224", "--preset", "zcu102", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("total_macs", "cycles", "mac_utilization", "fps", "gops", "gops_per_dsp", "dram_bytes", "ops",
                "groups"):
        assert key in r, key
    assert 0 < r["mac_utilization"] <= 1 and r["ops"]
    assert {"node", "opcode", "engine", "cycles", "utilization", "bound", "dram_bytes"} <= r["ops"][0].keys()
    text = capsys.readouterr().out
    assert "FPS" in text and "GOPS/DSP" in text and "MB/frame" in text


def test_cli_writes_the_program_and_its_listing(tmp_path, capsys):
    from arch.program import Program
    out = tmp_path / "p.json"
    assert main(["--model", "b0-r224", "--preset", "tiny", "--program", str(out), "--listing"]) == 0
    prog = Program.load(out)
    text = capsys.readouterr().out
    assert f"; {len(prog.ops)} operations in {len(prog.groups)} groups" in text
    assert sum(line.startswith("  0") for line in text.splitlines()) == len(prog.ops)


def test_cli_plots(tmp_path):
    assert main(["--model", "b0-r224", "--preset", "paper", "--plot", str(tmp_path)]) == 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["b0-r224_paper_roofline.png", "b0-r224_paper_utilization.png"]
    assert all((tmp_path / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_cli_rejects_bad_input_in_one_line(tmp_path, capsys):
    assert main(["--model", "b9-r224"]) == 2
    assert main(["--model", "b0-r224", "--preset", "huge"]) == 2
    assert main(["--model", "b0-r224", "--clock-mhz", "nan"]) == 2
    assert main(["--quantized", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    assert "valid names: b0-r224" in err[0] and "known presets: paper, small, tiny, zcu102" in err[1]
    assert "--clock-mhz must be a positive number, got nan" in err[2] and "missing.pt not found" in err[3]


def test_perf_writes_summary(tmp_path):
    assert main(["perf", "--out", str(tmp_path), "--models", "b0-r224", "--presets", "paper,zcu102",
                 "--no-plots"]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| paper | b0-r224 |" in summary and "| zcu102 | b0-r224 |" in summary
    assert json.loads((tmp_path / "b0-r224_zcu102.json").read_text())["config"]["name"] == "zcu102"


def test_sweep_stays_within_budget(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["sweep", "--dsps", "128", "--model", "b0-r224", "--top", "3", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows and all(r["config"]["dsps"] <= 128 for r in rows)
    assert [r["fps"] for r in rows] == sorted((r["fps"] for r in rows), reverse=True)
    assert "best 3" in capsys.readouterr().out


@pytest.mark.parametrize("w_bits,a_bits", [(8, 8), (6, 6)])
def test_priced_macs_are_the_macs_golden_executes(tmp_path, w_bits, a_bits):
    """pysim prices the exported graph that golden/ runs: its total is the MACs golden's integer model
    multiplies (counted from the operand arrays), for a quantized.pt with every op type."""
    from arch import ir as arch_ir
    from golden import convert, execute
    from tests.test_golden_model import images, tiny_ir
    path = arch_ir.save(tmp_path / "q.pt", arch_ir.load(tiny_ir(w_bits=w_bits, a_bits=a_bits)))
    st = execute.Stats()
    execute.run(convert.from_ir(path), images(1), stats=st)
    out = tmp_path / "r.json"
    assert main(["--quantized", str(path), "--preset", "small", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["total_macs"] == st.macs


@pytest.mark.assets
def test_priced_macs_of_the_real_proxy(tmp_path):
    """The same on the real proxy's quantized.pt (quantized here from 16 calibration images)."""
    import torch

    from golden import convert, execute
    from golden.images import load_image
    from quant.config import QuantConfig
    from quant.data import calibration_subset, image_folder
    from quant.engine import quantize
    from quant.export import save_quantized
    from quant.models import build_model, get_spec
    from tests.assets import IMAGENETTE, PROXY_MODEL, assets_dir
    assets = assets_dir()
    spec = get_spec("b0-r224")
    ds = calibration_subset(image_folder(assets / IMAGENETTE, "train", spec.input_size, spec.crop_ratio), 16, 0)
    cfg = QuantConfig(iters_w=0, iters_a=0, batch_size=16)
    qm, rep = quantize(build_model("b0-r224", str(assets / PROXY_MODEL)),
                       [torch.stack([ds[i][0] for i in range(len(ds))])], cfg, progress=False)
    path = save_quantized(tmp_path / "quantized.pt", qm, "b0-r224", cfg, rep)
    st = execute.Stats()
    img = sorted((assets / IMAGENETTE / "val").rglob("*.JPEG"))[0]
    execute.run(convert.from_ir(path), load_image(img, spec.input_size, spec.crop_ratio), stats=st)
    out = tmp_path / "r.json"
    assert main(["--quantized", str(path), "--preset", "paper", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["total_macs"] == st.macs == 98_966_016
