"""The Vivado project generator (rtl/vivado.py; python -m rtl.fpga vivado): what can be checked without
Vivado. The files come from the configuration; the XDC's clock is the configuration's; the ports the
TCL expects on each AXI interface are exactly the generated Verilog top level's; the board driver
addresses the register block where the TCL maps it; a bus the ZynqMP's HP port cannot take is refused."""
from __future__ import annotations

import json
import re

import pytest

from arch.config import PRESETS


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from rtl.vivado import vivado_project
    cfg = PRESETS["tiny"].replace(clock_mhz=187.5)
    out = tmp_path_factory.mktemp("vivado")
    return cfg, vivado_project(cfg, out), out


def _verilog_ports(text: str, top: str) -> dict[str, str]:
    body = text[text.index(f"module {top}("):]
    body = body[:body.index("endmodule")]
    ports = {}
    for m in re.finditer(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);", body, re.M):
        ports[m.group(3)] = m.group(1)
    return ports


def test_files_ports_and_clock_agree_with_the_rtl_and_the_configuration(project):
    from rtl.build import module_name
    from rtl.vivado import INTERFACES, REG_BASE
    cfg, r, out = project
    top = module_name("machine", cfg)
    assert r["top"] == top and {f"{top}.v", f"{top}.xdc", "build.tcl", "ports.json", "run_on_board.py"} <= set(r["files"])
    # XDC: the configuration's clock on aclk
    period = float(re.search(r"create_clock -name aclk -period ([\d.]+) \[get_ports aclk\]",
                             (out / f"{top}.xdc").read_text()).group(1))
    assert period == pytest.approx(1000 / cfg.clock_mhz, abs=1e-3)
    tcl = (out / "build.tcl").read_text()
    assert f"PL0_REF_CTRL__FREQMHZ {{{cfg.clock_mhz:g}}}" in tcl
    assert f"SAXIGP2__DATA_WIDTH {{{cfg.axi_data_bits}}}" in tcl
    # ports.json == the Verilog top level's ports, names and directions
    pj = json.loads((out / "ports.json").read_text())
    v = _verilog_ports((out / f"{top}.v").read_text(), top)
    assert {p["name"]: "input" if p["dir"] == "in" else "output" for p in pj["ports"]} == v
    # every port belongs to an interface, and the TCL expects exactly the Verilog's ports per interface
    assert all(p["interface"] for p in pj["ports"]), [p for p in pj["ports"] if not p["interface"]]
    for iface, (pfx, _, mode) in INTERFACES.items():
        want = sorted(n[len(pfx):].upper() for n in v if n.startswith(pfx))
        got = re.search(rf"set want_{iface} \[lsort \{{([^}}]*)\}}\]", tcl).group(1).split()
        assert sorted(got) == want and want, iface
    assert {"aclk", "aresetn", "irq"} <= set(v)
    assert f"{REG_BASE:#x}" in tcl and f"REG_BASE = {REG_BASE:#x}" in (out / "run_on_board.py").read_text()
    assert r["vivado"] is None or r["vivado"].endswith("vivado")


def test_a_bus_the_hp_port_cannot_take_is_refused():
    from rtl.vivado import tcl
    with pytest.raises(ValueError, match="HP ports are 32, 64 or 128 bits"):
        tcl(PRESETS["tiny"].replace(axi_data_bits=256), "top", [])


def test_the_command_line_says_vivado_is_missing(tmp_path, capsys, monkeypatch):
    import shutil

    from rtl.fpga import main
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["vivado", "--preset", "tiny", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Vivado is not installed here" in out and "NOT synthesized" in out
    assert (tmp_path / "tiny" / "build.tcl").is_file()
