"""tb.cycles_report: the per-unit cycles-vs-ideal table read from the testbenches' records."""
import json

import pytest

from tb import cycles_report


def test_report_lists_every_record_with_its_efficiency(tmp_path):
    (tmp_path / "mat_engine").mkdir()
    (tmp_path / "mat_engine" / "pw.json").write_text(json.dumps(
        {"unit": "mat_engine", "cycles": 400, "ideal_cycles": 300, "config": {"name": "small"}}))
    (tmp_path / "hswish").mkdir()
    (tmp_path / "hswish" / "throughput.json").write_text(json.dumps({"cycles": 263, "ideal_cycles": 256}))
    text = cycles_report.table(cycles_report.rows(tmp_path))
    assert "| mat_engine | pw | small | 400 | 300 | 75.0% |" in text
    assert "| hswish | throughput | - | 263 | 256 | 97.3% |" in text


def test_report_names_a_malformed_record(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "bad.json").write_text(json.dumps({"cycles": 3}))
    with pytest.raises(ValueError, match="bad.json: a cycle record needs"):
        cycles_report.rows(tmp_path)


def test_committed_records_parse():
    assert len(cycles_report.rows(cycles_report.BASELINE_CYCLES)) > 10


def test_drift_names_changed_and_new_records():
    base = [dict(unit="u", case="a", cycles=10), dict(unit="u", case="b", cycles=5)]
    run = [dict(unit="u", case="a", cycles=11), dict(unit="u", case="b", cycles=5), dict(unit="u", case="c", cycles=1)]
    assert cycles_report.drift(run, base) == ["u/a: 11 cycles, baseline 10", "u/c: new (no baseline)"]


def test_update_baselines_copies_the_run_records(tmp_path):
    (tmp_path / "run" / "hswish").mkdir(parents=True)
    (tmp_path / "run" / "hswish" / "t.json").write_text("{}")
    assert cycles_report.update_baselines(tmp_path / "run", tmp_path / "base") == 1
    assert (tmp_path / "base" / "hswish" / "t.json").read_text() == "{}"
