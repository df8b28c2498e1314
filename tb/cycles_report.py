"""`python -m tb.cycles_report`: the cycles each RTL unit took per operation against its ideal.

Reads the records the testbenches write (tb/cycles/<unit>/<case>.json,
cocotb_kit.record_cycles). The ideal is the operation's MACs over the unit's
multipliers (engines) or one beat per cycle (streaming units); efficiency =
ideal / measured. `make sim` prints it after the testbenches.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .harness import CYCLES_ROOT as CYCLES  # where cocotb_kit.record_cycles writes


def rows(root: Path = CYCLES) -> list[dict]:
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


def main(argv=None) -> int:
    records = rows()
    if not records:
        print(f"no cycle records under {CYCLES}: run `make sim` first", file=sys.stderr)
        return 1
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
