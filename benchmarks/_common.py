"""What the search benchmarks share: paths and which task they run."""

from __future__ import annotations

import argparse
import os
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


def parse_search_args(description: str, **defaults: int) -> argparse.Namespace:
    """``--<name> N`` for each default (e.g. trials=8) plus ``--task auto|cnn``; Ray kept on
    127.0.0.1 without a token prompt."""
    parser = argparse.ArgumentParser(description=description)
    for name, value in defaults.items():
        parser.add_argument(f"--{name}", type=int, default=value)
    parser.add_argument(
        "--task", choices=("auto", "cnn"), default="auto", help="cnn: tests/tasks.py:cnn"
    )
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    return parser.parse_args()
