"""The cycle costs (arch/cost.py) against the cycles the RTL testbenches measured.

Every committed ``tb/baselines/cycles/<unit>/<case>.json`` (a testbench's
cocotb_kit.record_cycles: unit, the AccelConfig as a dict, the op's shape, the
measured stall-free cycles; runs write build/tb/cycles/ and
``python -m tb.cycles_report --update-baselines`` commits them) is replayed
through ``arch.cost.unit_cycles`` with the same configuration.  The
engines and units are deterministic when nothing stalls, so the prediction must be
exact; units whose cost pysim only approximates are listed in APPROX with the
issue's 5% tolerance.  No records at all is a failure, not a pass: run `make sim`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from arch import cost
from arch.config import AccelConfig

CYCLES = Path(__file__).resolve().parents[1] / "tb" / "baselines" / "cycles"
RECORDS = sorted(CYCLES.glob("*/*.json"))
APPROX: dict[str, float] = {}     # unit -> relative tolerance where pysim is not cycle-exact
TOLERANCE = 0.05


def config_from_record(d: dict) -> AccelConfig:
    return AccelConfig.from_dict(d)


def test_rtl_cycle_records_exist():
    assert RECORDS, (f"no RTL cycle records under {CYCLES}: run `make sim` (the tb/ testbenches write "
                     "build/tb/cycles/; `python -m tb.cycles_report --update-baselines` commits them); the cost model "
                     "cannot be checked against the RTL without them")


@pytest.mark.parametrize("path", RECORDS, ids=[f"{p.parent.name}/{p.stem}" for p in RECORDS])
def test_pysim_matches_rtl_cycles(path):
    rec = json.loads(path.read_text())
    for key in ("unit", "config", "op", "cycles"):
        assert key in rec, f"{path}: record lacks {key!r}"
    cfg = config_from_record(rec["config"])
    predicted = cost.unit_cycles(rec["unit"], rec["op"], cfg)
    measured = rec["cycles"]
    tol = APPROX.get(rec["unit"])
    if tol is None:
        assert predicted == measured, (f"{rec['unit']} {rec['op']} on {cfg.name}: pysim predicts {predicted} "
                                       f"cycles, the RTL took {measured}")
    else:
        assert abs(predicted - measured) <= tol * measured, (
            f"{rec['unit']} {rec['op']} on {cfg.name}: pysim {predicted} vs RTL {measured} cycles (> {tol:.0%})")
