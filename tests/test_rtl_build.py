"""rtl.build: every registered unit generates Verilog and lints clean (waivers in rtl/lint_waivers.md)."""
import pytest

from rtl.build import LINT_WAIVERS, main
from rtl.units import UNITS


def test_lint_waivers_documented():
    text = open("rtl/lint_waivers.md").read()
    for w in LINT_WAIVERS:
        assert f"| {w} |" in text, f"waiver {w} has no reason in rtl/lint_waivers.md"


def test_build_tiny_lints_clean(tmp_path):
    assert main(["--out", str(tmp_path), "--presets", "tiny"]) == 0
    for unit in UNITS:
        assert (tmp_path / "tiny" / f"{unit}.v").is_file()


def test_module_names_carry_unit_and_configuration(tmp_path):
    """Every module of a generated unit is named after the unit and the configuration, so the units
    of several presets can sit in one Vivado project without a clash."""
    import re

    from arch.config import PRESETS
    from rtl.build import _sources_digest, generate, module_name
    names = {(u, p): module_name(u, PRESETS[p]) for u in UNITS for p in ("tiny", "small")}
    assert len(set(names.values())) == len(names)
    assert module_name("hswish", PRESETS["tiny"].replace(name="paper-2520dsp")).startswith("triovit_hswish_paper_2520dsp_")
    for p in ("tiny", "small"):
        path, _ = generate("requant", PRESETS[p], tmp_path / p, _sources_digest())
        modules = re.findall(r"^module \\?([\w.]+)", path.read_text(), re.M)
        assert modules and all(m.split(".")[0] == names[("requant", p)] for m in modules), modules


def test_build_rejects_unknown_unit(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--units", "no_such_unit"])
    assert "unknown unit 'no_such_unit'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["mat_engine", "rmac_engine"])
def test_build_paper_engines_lint_clean(tmp_path, unit):
    assert main(["--out", str(tmp_path), "--presets", "paper", "--units", unit]) == 0
