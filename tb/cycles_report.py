"""`python -m tb.cycles_report`: the cycles each RTL unit took per operation against its ideal.

Reads the records the testbenches write (build/tb/cycles/<unit>/<case>.json,
cocotb_kit.record_cycles; ``--baselines``: the committed ones under
tb/baselines/cycles/). The ideal is the operation's MACs over the unit's
multipliers (engines) or one beat per cycle (streaming units); efficiency =
ideal / measured. `make sim` prints it after the testbenches, with every
record whose cycles differ from its baseline.

``--update-baselines`` copies this run's records over the committed baselines:
the one command that changes what tests/test_pysim_vs_rtl.py holds pysim to.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .harness import BASELINE_CYCLES, CYCLES_ROOT


def rows(root: Path = CYCLES_ROOT) -> list[dict]:
    out = []
    for f in sorted(root.glob("*/*.json")):
        r = json.loads(f.read_text())
        if "cycles" not in r or "ideal_cycles" not in r:
            raise ValueError(f"{f}: a cycle record needs 'cycles' and 'ideal_cycles'")
        out.append(dict(unit=r.get("unit", f.parent.name), case=f.stem, config=r.get("config", {}).get("name", "-"),
                        cycles=int(r["cycles"]), ideal=int(r["ideal_cycles"])))
    return out


def table(records: list[dict]) -> str:
    lines = ["| unit | case | config | cycles | ideal | efficiency |", "| --- | --- | --- | --- | --- | --- |"]
    for r in records:
        eff = r["ideal"] / r["cycles"] if r["cycles"] else float("nan")
        lines.append(f"| {r['unit']} | {r['case']} | {r['config']} | {r['cycles']} | {r['ideal']} | {eff:.1%} |")
    return "\n".join(lines)


def drift(run: list[dict], baseline: list[dict]) -> list[str]:
    """Records of this run whose cycles differ from the committed baseline of the same case."""
    base = {(r["unit"], r["case"]): r for r in baseline}
    out = []
    for r in run:
        b = base.get((r["unit"], r["case"]))
        if b is None:
            out.append(f"{r['unit']}/{r['case']}: new (no baseline)")
        elif b["cycles"] != r["cycles"]:
            out.append(f"{r['unit']}/{r['case']}: {r['cycles']} cycles, baseline {b['cycles']}")
    return out


def update_baselines(src: Path = CYCLES_ROOT, dst: Path = BASELINE_CYCLES) -> int:
    files = sorted(src.glob("*/*.json"))
    for f in files:
        (dst / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst / f.parent.name / f.name)
    return len(files)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tb.cycles_report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baselines", action="store_true", help="report the committed baselines instead of this run")
    ap.add_argument("--update-baselines", action="store_true",
                    help=f"copy this run's records ({CYCLES_ROOT}) over the committed ones ({BASELINE_CYCLES})")
    a = ap.parse_args(argv)
    if a.update_baselines:
        n = update_baselines()
        if not n:
            print(f"no cycle records under {CYCLES_ROOT}: run `make sim` first", file=sys.stderr)
            return 1
        print(f"copied {n} records into {BASELINE_CYCLES}; review with git diff and commit them")
        return 0
    records = rows(BASELINE_CYCLES if a.baselines else CYCLES_ROOT)
    if not records:
        print(f"no cycle records under {CYCLES_ROOT}: run `make sim` first (or --baselines)", file=sys.stderr)
        return 1
    print(table(records))
    if not a.baselines:
        d = drift(records, rows(BASELINE_CYCLES))
        print(f"\n{len(d)} records differ from the committed baselines" + (":" if d else ""))
        for line in d:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
