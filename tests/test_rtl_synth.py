"""rtl.synth: resource counts stay within a tolerance of the committed baselines (rtl/synth_baseline.json).

A change that doubles the DSPs (or the LUTs, FFs, BRAM) of a unit fails here.
The fast test synthesizes the tiny preset's compute engines; the rest of the
baseline (every unit, small / paper presets) is checked by the slow tests.
"""
import json
from pathlib import Path

import pytest

from rtl.build import _sources_digest, generate
from arch.config import PRESETS
from rtl.synth import COLUMNS, synth_one

BASELINE = Path(__file__).resolve().parents[1] / "rtl" / "synth_baseline.json"
REL_TOL = 0.10      # hls4ml's tolerance on FF, LUT, BRAM, DSP
ABS_TOL = 8         # small counts (tiny configurations) may move by a few cells


def _check(preset, unit, tmp_path):
    base = json.loads(BASELINE.read_text())
    if unit not in base.get(preset, {}):
        pytest.fail(f"no baseline for {preset}/{unit}: run python -m rtl.synth --presets {preset} "
                    f"--units {unit} --write-baseline rtl/synth_baseline.json")
    v, _ = generate(unit, PRESETS[preset], tmp_path / "verilog", _sources_digest())
    got = synth_one(v, tmp_path, reuse=False)
    want = base[preset][unit]
    bad = [f"{c}: {got[c]:g} vs baseline {want[c]:g}" for c in COLUMNS
           if abs(got[c] - want[c]) > max(ABS_TOL if c != "DSP48E2" else 0, REL_TOL * want[c])]
    assert not bad, f"{preset}/{unit} resources moved beyond tolerance: " + "; ".join(bad)


def test_summarize_counts_cells():
    from rtl.synth import summarize
    s = summarize({"DSP48E2": 3, "LUT2": 4, "LUT6": 1, "FDRE": 7, "FDSE": 1, "CARRY4": 2,
                   "RAMB18E2": 3, "RAMB36E2": 1, "IBUF": 9})
    assert (s["DSP48E2"], s["LUT"], s["FF"], s["CARRY"], s["BRAM"]) == (3, 5, 8, 2, 2.5)


@pytest.mark.parametrize("unit", ["mat_engine", "rmac_engine"])
def test_synth_tiny_engines_match_baseline(tmp_path, unit):
    _check("tiny", unit, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["requant", "hswish", "residual", "divider", "avgpool", "layernorm"])
def test_synth_tiny_norm_units_match_baseline(tmp_path, unit):
    _check("tiny", unit, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["mat_engine", "rmac_engine"])
def test_synth_small_engines_match_baseline(tmp_path, unit):
    _check("small", unit, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["mat_engine", "rmac_engine"])
def test_synth_paper_engines_match_baseline(tmp_path, unit):
    """The paper's budget: 1,024 multipliers per engine, two per DSP48E2 (rtl/dsp_pack.py) -> 512 DSP48E2
    each (tens of minutes on a shared machine)."""
    _check("paper", unit, tmp_path)
