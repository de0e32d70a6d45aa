"""Benchmarks and examples use only the package's public surface: no private module (a path part
starting with ``_``), no private name, and where the module declares ``__all__``, only its names.
A benchmark that reaches a private helper breaks when that helper is renamed; what such scripts
need is promoted (e.g. ``autocompress.targets.runtimes``)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("examples/**/*.py")])


def package_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, module, name)`` for each ``autocompress`` import (name None: ``import m``)."""
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found += [(node.lineno, node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names]
    return [f for f in found if f[1].split(".")[0] == "autocompress"]


def private_uses(path: Path, root: Path = ROOT) -> list[str]:
    """What ``path`` imports that is not public, as ``file:line module.name (why)``."""
    problems = []
    for line, module, name in package_imports(path):
        where = f"{path.relative_to(root)}:{line} {module}{'.' + name if name else ''}"
        if any(part.startswith("_") for part in module.split(".")):
            problems.append(f"{where} (private module)")
            continue
        if name is None:
            continue
        if name.startswith("_"):
            problems.append(f"{where} (private name)")
            continue
        public = getattr(importlib.import_module(module), "__all__", None)
        if public is not None and name not in public:
            problems.append(f"{where} (not in {module}.__all__)")
    return problems


def test_the_check_finds_private_imports(tmp_path):
    script = tmp_path / "bench.py"
    script.write_text(
        "from autocompress.targets._cpu import cpu_record\n"
        "from autocompress.targets import _et_lower\n"
        "from autocompress.reporting import compare_plots\n"
        "import autocompress._lazy\n"
        "from autocompress import search\n"
        "from autocompress.study.pareto import dominates\n"
    )
    assert private_uses(script, root=tmp_path) == [
        "bench.py:1 autocompress.targets._cpu.cpu_record (private module)",
        "bench.py:2 autocompress.targets._et_lower (private name)",
        "bench.py:3 autocompress.reporting.compare_plots (not in autocompress.reporting.__all__)",
        "bench.py:4 autocompress._lazy (private module)",
    ]


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(p.relative_to(ROOT)) for p in SCRIPTS])
def test_imports_only_public_names(script):
    assert private_uses(script) == []
