"""What the search benchmarks share: paths and which task they run."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def task_spec(which: str = "auto") -> tuple[str, str]:
    """(task spec, search space): the digits example, or with ``cnn`` the small test CNN."""
    digits = ROOT / "examples" / "digits" / "task.py"
    if which != "cnn" and digits.exists():
        return f"{digits}:build_task", "grouped"
    sys.path.insert(0, str(ROOT / "tests"))  # tests/tasks.py imports its sibling models.py
    return f"{ROOT / 'tests' / 'tasks.py'}:cnn", "default"
