"""The packages stand on each other one way: arch/ imports nothing of the project, golden/ never
imports quant/, and no two packages import each other (directly or around a cycle)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("arch", "golden", "quant", "pysim", "rtl", "tb", "flow", "host")


def imports_of(package: str) -> set[str]:
    """The project packages a package's modules import (top-level or inside functions)."""
    found = set()
    for f in (REPO / package).glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found |= {n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES}
    return found - {package}


def loaded(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    """The modules of ``packages`` a fresh interpreter has loaded after importing ``modules``."""
    code = (f"import sys, {', '.join(modules)}; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {packages!r}))")
    return eval(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout)


def test_arch_is_the_ground_floor():
    assert imports_of("arch") == set()
    assert loaded(["arch.compiler", "arch.cost", "arch.widths", "arch.program"],
                  ("torch", "amaranth", "quant", "golden", "pysim", "rtl")) == []


def test_golden_does_not_import_quant():
    assert "quant" not in imports_of("golden")
    assert loaded(["golden", "golden.convert", "golden.execute", "golden.evaluate", "golden.program",
                   "golden.reference", "golden.vectors", "golden.__main__"], ("quant",)) == []


def test_no_import_cycle_between_packages():
    graph = {p: imports_of(p) for p in PACKAGES}
    assert not any(graph[p] & {"flow"} for p in PACKAGES if p != "flow")

    def reach(start, node, seen):
        for nxt in graph[node]:
            if nxt == start:
                return True
            if nxt not in seen:
                seen.add(nxt)
                if reach(start, nxt, seen):
                    return True
        return False

    cyclic = [p for p in PACKAGES if reach(p, p, set())]
    assert not cyclic, {p: sorted(graph[p]) for p in PACKAGES}
