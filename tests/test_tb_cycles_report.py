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
    assert len(cycles_report.rows()) > 10
