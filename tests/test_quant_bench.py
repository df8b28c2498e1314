"""make bench-quant's bookkeeping: row selection, reuse of finished rows, the README rewrite (no runs here)."""
import json

import pytest

from quant import bench


def fake_result(i, top1, fakequant_top1=None):
    """A bench_row.json of today's main_imagenet.py: quant_* are the integer model's."""
    label, kw, extra = bench.ROWS[i - 1]
    return dict(label=label, n_bits_w=kw["w"], n_bits_a=kw["a"], quant_top1=top1, quant_top5=99.0,
                fp_top1=81.43, quant_agreement=90.0, agreement_int_vs_float=90.0, agreement_int_vs_fakequant=95.0,
                fakequant_top1=top1 + 0.5 if fakequant_top1 is None else fakequant_top1, fakequant_top5=99.0,
                fakequant_agreement=91.0, integer_model=True, int_logit_sqnr_db=25.0,
                wall_s=120.0, n_val=1966, cmd=bench.row_command(kw, extra), max_val=None, code=bench.code_digest())


def old_result(i, top1):
    """A bench_row.json from before the integer model was evaluated: quant_* were float32 fake-quant."""
    label, kw, extra = bench.ROWS[i - 1]
    return dict(label=label, n_bits_w=kw["w"], n_bits_a=kw["a"], quant_top1=top1, quant_top5=99.0,
                fp_top1=81.43, quant_agreement=90.0, wall_s=120.0, n_val=1966,
                cmd=bench.row_command(kw, extra), max_val=None)


def no_integer_result(i, top1):
    """A bench_row.json of a run whose model has no integer model (no log2 divisor)."""
    r = old_result(i, top1)
    r.update(fakequant_top1=top1, fakequant_top5=99.0, fakequant_agreement=90.0, integer_model=False,
             integer_model_reason="the quantized model has no integer model: stages.2.blocks.1.context.attn0: "
                                  "the divisor is not log2-quantized; the accelerator divides by shifts only")
    return r


def _rows(table):
    return [l for l in table.splitlines() if l.startswith("| ") and "---" not in l][1:]


def test_table_keeps_bench_order_and_lists_rows_not_run():
    table = bench.format_table([fake_result(3, 41.0), fake_result(1, 38.0)])
    lines = _rows(table)
    assert len(lines) == len(bench.ROWS)
    assert lines[0].startswith("| vanilla W8A8 | W8A8 | 38.00 | 99.00 | 43.43 | 90.00% | 38.50 |")
    assert lines[2].startswith("| shifting only | W8A8 | 41.00 |")
    assert "not run yet" in lines[1] and "not run yet" in lines[-1]
    assert "drop vs float" in table and "| 40.43 |" in table  # 81.43 - 41.00
    header = table.splitlines()[0]
    assert "top-1 (integer)" in header and "fake-quant top-1" in header and "agreement w/ float" in header
    assert all(l.count("|") == header.count("|") for l in table.splitlines() if l.startswith("|"))


def test_old_rows_and_rows_without_integer_model_do_not_crash():
    table = bench.format_table([old_result(7, 80.62), no_integer_result(2, 81.13), no_integer_result(5, 81.49),
                                fake_result(10, 81.0)])
    lines = _rows(table)
    stale = lines[6]
    assert stale.startswith("| Trio-ViT W8A8 | W8A8 | - (stale) | - | - | - | 80.62 |")
    assert lines[1].startswith("| migration only | W8A8 | - | - | - | - | 81.13 |")
    assert lines[9].startswith("| Trio-ViT W8A8 + reconstruction | W8A8 | 81.00 |")
    assert "Trio-ViT W8A8: results from before the integer model" in table
    # rows failing for the same reason share one footnote, without the node's name
    assert "no integer model for migration only, migration + shifting: the divisor is not log2-quantized" in table
    assert "stages.2.blocks.1" not in table
    header = table.splitlines()[0]
    assert all(l.count("|") == header.count("|") for l in table.splitlines() if l.startswith("|"))


def test_rows_parse_and_reject_bad_numbers():
    assert bench.parse_rows("1, 3") == {1, 3}
    assert bench.parse_rows(None) == set(range(1, len(bench.ROWS) + 1))
    with pytest.raises(SystemExit, match="no row 99"):
        bench.parse_rows("2,99")
    with pytest.raises(SystemExit, match="comma-separated row numbers"):
        bench.parse_rows("two")


def test_readme_without_markers_fails_before_any_run(tmp_path):
    assert bench.replace_table(f"a\n{bench.BEGIN}\nold\n{bench.END}\nb", "T", "R") == \
        f"a\n{bench.BEGIN}\nT\n{bench.END}\nb"
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "efficientvit_b0_imagenette.pt").write_bytes(b"")
    with pytest.raises(SystemExit, match="BENCH-QUANT"):
        bench.main(["--assets", str(tmp_path), "--readme", str(readme), "--out", str(tmp_path / "o")])


def test_finished_rows_are_reused_and_shown_even_when_not_selected(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    for i, top1, make in ((1, 38.0, fake_result), (2, 81.0, old_result)):
        d = out / bench.row_dir(bench.ROWS[i - 1][0])
        d.mkdir(parents=True)
        (d / "bench_row.json").write_text(json.dumps(make(i, top1)))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "efficientvit_b0_imagenette.pt").write_bytes(b"")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.BEGIN}\nold table\n{bench.END}\nafter\n")
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail("a finished row was rerun"))
    assert bench.main(["--assets", str(tmp_path), "--readme", str(readme), "--out", str(out), "--rows", "1"]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("after\n")
    assert "| vanilla W8A8 | W8A8 | 38.00 |" in text
    assert "| migration only † | W8A8 | - (stale) | - | - | - | 81.00 |" in text
    assert "†: migration only: measured on earlier sources" in text
    printed = capsys.readouterr().out
    assert "reusing" in printed and "stale" in printed and "measured on other sources" in printed


def test_rows_measured_on_other_sources_are_marked(tmp_path, monkeypatch):
    """A reused row whose quant/ golden/ arch/ sources differ from today's is marked, not passed off."""
    out = tmp_path / "out"
    r = fake_result(7, 80.0)
    r["code"] = "0123456789ab"
    d = out / bench.row_dir(bench.ROWS[6][0])
    d.mkdir(parents=True)
    (d / "bench_row.json").write_text(json.dumps(r))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "efficientvit_b0_imagenette.pt").write_bytes(b"")
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail("a finished row was rerun"))
    assert bench.main(["--assets", str(tmp_path), "--out", str(out), "--rows", "7"]) == 0
    table = bench.format_table(json.loads((out / "bench.json").read_text()))
    assert "| Trio-ViT W8A8 † | W8A8 | 80.00 |" in table and "†: Trio-ViT W8A8: measured on earlier" in table


def test_row_folders_are_distinct():
    dirs = [bench.row_dir(label) for label, _, _ in bench.ROWS]
    assert len(set(dirs)) == len(dirs) and all(d.replace("_", "").isalnum() for d in dirs)
