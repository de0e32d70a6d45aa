"""Shared fixtures and helpers: the tiny MLP task (its spec, a local search config and a search
config file), a CLI environment, the tiny CNN task (``cnn``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from autocompress.study.config import SearchConfig

TESTS = Path(__file__).resolve().parent


def task_spec(entry: str) -> str:
    """The spec of a task entry point in ``tests/_support/tasks.py`` (``.../tasks.py:mlp``)."""
    return f"{TESTS / '_support' / 'tasks.py'}:{entry}"


MLP_TASK = task_spec("mlp")
# subprocesses see tests/ (task modules) and whatever the caller put first (e.g. a worktree)
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p),
}


def local_config(out: Path, **overrides: Any) -> SearchConfig:
    """A small local search of the MLP task: 1 epoch, no tracking, run dir ``out``."""
    from _support.study_inputs import QUICK_SEARCH

    data: dict[str, Any] = {
        **QUICK_SEARCH,
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
    if "baselines" in overrides:  # the older name of starts
        data.pop("starts")
    return SearchConfig.from_dict(data)


def write_search(folder: Path, name: str, **keys: Any) -> str:
    """A search config file for the MLP task (``keys`` added or replacing), written to
    ``folder / "search.yaml"``; its path."""
    from _support.study_inputs import QUICK_SEARCH_YAML, write_yaml

    data = {**QUICK_SEARCH_YAML, "name": name, "task": MLP_TASK, **keys}
    if "baselines" in keys:  # the older name of starts
        data.pop("starts")
    return write_yaml(folder, "search.yaml", data)


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
