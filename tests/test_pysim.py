"""pysim: engine cost functions, schedule invariants, memory model, CLI."""
from __future__ import annotations

import json
import math

import pytest

from pysim import cost
from pysim.__main__ import apply_overrides, main
from pysim.layers import model_layers
from pysim.schedule import Options, make_groups, simulate
from arch import timing
from arch.config import PRESETS

PAPER, ZCU = PRESETS["paper"], PRESETS["zcu102"]


@pytest.fixture(scope="module")
def b0():
    return model_layers("b0-r224")


@pytest.fixture(scope="module")
def b0_paper(b0):
    return simulate(PAPER, b0)


# ------------------------------------------------------------ cost functions --
def test_mat_tile_formula_on_exact_multiples():
    cfg = PAPER  # M = N = 8, L = 16, tree depth 3
    rows, red, cols = 16 * 5, 8 * 7, 8
    assert cost.mat_matmul_cycles(cfg, rows, red, cols) == 1 + 7 + 5 * 7 + 3 + 3
    # two column tiles run back to back and share one cycle
    assert cost.mat_matmul_cycles(cfg, rows, red, 16) == 2 * (1 + 7 + 5 * 7 + 3 + 3) - 1


def test_mat_cost_grows_with_each_ragged_dimension():
    base = cost.mat_matmul_cycles(PAPER, 16, 8, 8)
    assert cost.mat_matmul_cycles(PAPER, 17, 8, 8) > base     # a second pixel group
    assert cost.mat_matmul_cycles(PAPER, 16, 9, 8) > base     # a second weight word
    assert cost.mat_matmul_cycles(PAPER, 16, 8, 9) > base     # a second tile


def test_mat_reduction_longer_than_weight_buffer_is_split_into_passes():
    cfg = PAPER.replace(mat_wbuf_words=4)
    one = cost.mat_tile_cycles(cfg, 4, 1)
    assert cost.mat_matmul_cycles(cfg, 1, 8 * 8, 8) == 2 * one - 1
    with pytest.raises(ValueError, match="exceeds mat_wbuf_words=4"):
        cost.mat_tile_cycles(cfg, 5, 1)


def test_rmac_dw_formula():
    cfg = PAPER  # S = T = 8, L = 16
    # 8 channels, 16 x 8 output: one command, one row group, one segment
    assert cost.rmac_dw_cycles(cfg, 8, 16, 8, 3, 1) == 1 + 9 + 1 + 9 + 3
    assert cost.rmac_dw_cycles(cfg, 16, 16, 8, 5, 2) == 2 * (1 + 25 + 1 + 25 + 3) - 1
    with pytest.raises(ValueError, match="k=7"):
        cost.rmac_dw_cycles(cfg, 8, 8, 8, 7, 1)


def test_rmac_pointwise_refuses_inputs_beyond_its_buffer():
    with pytest.raises(ValueError, match="exceeds rmac_wbuf_words"):
        cost.rmac_pw_cycles(PAPER, PAPER.rmac_wbuf_words + 1, 8, 4, 4)


def test_stream_units_take_one_beat_per_cycle_plus_latency():
    assert cost.stream_unit_cycles("requant", PAPER, 10, 20) == 10 * 3 + timing.REQUANT_LATENCY
    assert cost.stream_unit_cycles("hswish", PAPER, 1, 8) == 1 + timing.HSWISH_LATENCY
    # the latencies are the RTL components' own (one source: rtl/timing.py)
    from rtl.hswish import Hardswish
    from rtl.requant import Requant
    assert (timing.HSWISH_LATENCY, timing.REQUANT_LATENCY) == (Hardswish.LATENCY, Requant.LATENCY) == (7, 4)
    with pytest.raises(KeyError, match="no cost function for RTL unit 'foo'"):
        cost.unit_cycles("foo", {}, PAPER)


# ------------------------------------------------------------ schedule --
@pytest.mark.parametrize("preset", ["paper", "zcu102", "small"])
def test_invariants(b0, preset):
    cfg = PRESETS[preset]
    r = simulate(cfg, b0)
    assert r["total_macs"] == sum(lay.macs for lay in b0) == sum(x["macs"] for x in r["layers"])
    assert 0 < r["mac_utilization"] <= 1
    assert r["cycles"] >= math.ceil(r["total_macs"] / cfg.multipliers)
    assert r["cycles"] >= r["dram_bytes"] / cfg.dram_bytes_per_cycle
    assert r["cycles"] == sum(g["cycles"] for g in r["groups"])
    assert math.isclose(r["fps"] * r["latency_ms"], 1e3)
    assert math.isclose(r["gops"], 2 * r["total_macs"] * r["fps"] / 1e9)
    assert math.isclose(r["gops_per_dsp"], r["gops"] / cfg.dsps)
    assert r["dram_bytes"] == sum(x["dram_bytes"] for x in r["layers"])
    for g in r["groups"]:
        assert g["cycles"] >= max(g["mat_busy"], g["rmac_busy"])
    for x in r["layers"]:
        assert 0 <= x["utilization"] <= 1, x
        assert x["bound"] in ("compute", "memory")


def test_engines_by_layer_kind(b0_paper):
    for x in b0_paper["layers"]:
        if x["kind"] == "dw":
            assert x["engine"] == "R-MAC"
        elif x["kind"] in ("conv", "grouped", "linear", "attn_kv", "attn_qkv"):
            assert x["engine"] == "MAT"
        elif x["kind"] == "pw":
            assert x["engine"].startswith("MAT")
        else:
            assert x["engine"] == "unit"


def test_mbconv_is_one_fused_group_with_both_engines(b0):
    groups = {g.key: g for g in make_groups(b0)}
    g = groups["stages.1.blocks.1.main"]
    assert [lay.kind for lay in g.compute] == ["pw", "dw", "pw"]
    assert [lay.kind for lay in g.layers if not lay.is_compute][-1] == "residual"
    attn = [k for k in groups if k.endswith((":attn-a", ":attn-kv", ":attn-b"))]
    assert len(attn) == 3 * sum(lay.kind == "attn_kv" for lay in b0)


def test_fused_mbconv_has_no_dram_round_trip_when_its_band_fits(b0_paper, b0):
    key = "stages.1.blocks.1.main"
    g = next(g for g in b0_paper["groups"] if g["key"] == key)
    expand = next(lay for lay in b0 if lay.block == key and lay.role == "inverted_conv")
    assert g["spill_bytes"] == 0
    assert g["rmac_busy"] > 0 and g["mat_busy"] > 0
    # everything the group moves is weights: the expanded tensor never reaches DRAM
    weights = sum(lay.weight_bytes + lay.param_bytes for lay in b0 if lay.block == key and lay.is_compute)
    assert g["dram_bytes"] == weights < expand.out_bytes


def test_engine_balancing_helps(b0):
    on = simulate(PAPER, b0)
    off = simulate(PAPER, b0, Options(rmac_pointwise=False))
    assert on["cycles"] < off["cycles"]
    assert all(not x["engine"].startswith("MAT+R-MAC") for x in off["layers"])


def test_starved_dram_makes_the_network_memory_bound(b0):
    slow = PAPER.replace(dram_bytes_per_cycle=0.5)
    r = simulate(slow, b0)
    assert r["bound"] == "memory"
    assert r["cycles"] >= r["dram_bytes"] / 0.5
    fast = simulate(PAPER.replace(dram_bytes_per_cycle=1e6), b0)
    assert fast["bound"] == "compute" and fast["cycles"] < r["cycles"]


def test_small_buffers_spill(b0):
    tight = simulate(PAPER.replace(act_buffer_kib=32, weight_buffer_kib=8), b0)
    roomy = simulate(PAPER, b0)
    assert tight["dram_breakdown"]["spills"] > roomy["dram_breakdown"]["spills"]
    assert tight["dram_bytes"] > roomy["dram_bytes"]


# ------------------------------------------------------------ overrides / CLI --
def test_overrides():
    cfg = apply_overrides(ZCU, dsps=2520)
    assert cfg.dsps <= 2520 and cfg.replace(replicas=cfg.replicas + 1).dsps > 2520
    fast = apply_overrides(PAPER, clock_mhz=400)
    assert fast.clock_mhz == 400 and math.isclose(fast.dram_gbps, PAPER.dram_gbps)
    assert math.isclose(apply_overrides(PAPER, dram_gbps=9.6).dram_bytes_per_cycle, 48)
    with pytest.raises(ValueError, match="needs 64 DSPs"):
        apply_overrides(PAPER, dsps=10)


def test_cli_json_fields(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["--model", "b0-r224", "--preset", "zcu102", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("total_macs", "cycles", "mac_utilization", "fps", "gops", "gops_per_dsp", "dram_bytes", "layers"):
        assert key in r, key
    assert 0 < r["mac_utilization"] <= 1 and r["layers"]
    assert {"name", "kind", "engine", "cycles", "utilization", "bound", "dram_bytes"} <= r["layers"][0].keys()
    text = capsys.readouterr().out
    assert "FPS" in text and "GOPS/DSP" in text and "MB/frame" in text


def test_cli_plots(tmp_path):
    assert main(["--model", "b0-r224", "--preset", "paper", "--plot", str(tmp_path)]) == 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["b0-r224_paper_roofline.png", "b0-r224_paper_utilization.png"]
    assert all((tmp_path / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_cli_rejects_unknown_model_and_preset():
    with pytest.raises(SystemExit, match="valid names: b0-r224"):
        main(["--model", "b9-r224"])
    with pytest.raises(SystemExit, match="known presets: paper, small, tiny, zcu102"):
        main(["--model", "b0-r224", "--preset", "huge"])


def test_perf_writes_summary(tmp_path):
    assert main(["perf", "--out", str(tmp_path), "--models", "b0-r224", "--presets", "paper,zcu102",
                 "--no-plots"]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| paper | b0-r224 |" in summary and "| zcu102 | b0-r224 |" in summary
    assert json.loads((tmp_path / "b0-r224_zcu102.json").read_text())["config"]["name"] == "zcu102"


def test_sweep_stays_within_budget(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["sweep", "--dsps", "64", "--model", "b0-r224", "--top", "3", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows and all(r["config"]["dsps"] <= 64 for r in rows)
    assert [r["fps"] for r in rows] == sorted((r["fps"] for r in rows), reverse=True)
    assert "best 3" in capsys.readouterr().out
