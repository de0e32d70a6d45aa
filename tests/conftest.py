"""Shared fixtures and helpers: the tiny MLP task, a local search config, a CLI environment,
the tiny CNN task (``cnn``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from autocompress.study.config import SearchConfig

TESTS = Path(__file__).resolve().parent
MLP_TASK = f"{TESTS / '_support' / 'tasks.py'}:mlp"
# subprocesses see tests/ (task modules) and whatever the caller put first (e.g. a worktree)
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p),
}


def local_config(out: Path, **overrides: Any) -> SearchConfig:
    """A small local search of the MLP task: 1 epoch, no tracking, run dir ``out``."""
    data: dict[str, Any] = {
        "name": "mlp",
        "task": MLP_TASK,
        "trials": 4,
        "seed": 0,
        "backend": "local",
        "epochs": 1,
        "tracking": False,
        "out": str(out),
        **overrides,
    }
    return SearchConfig.from_dict(data)


@pytest.fixture
def make_config(tmp_path: Path):
    """``make_config(**overrides)`` -> a :func:`local_config` writing to ``tmp_path / "run"``."""
    return lambda **overrides: local_config(tmp_path / "run", **overrides)


@pytest.fixture(scope="module")
def cnn():
    """The tiny CNN task, its teacher trained two epochs (once per test module)."""
    from _support.models import cnn_task

    return cnn_task(epochs=2)


# -- fault-injection summary (tests/_support/faults.py) -----------------------------------------------
def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    from _support.faults import summary_line

    line = summary_line()
    if line:
        terminalreporter.write_sep("=", "fault injection")
        terminalreporter.write_line(line)
