"""The study's YAML inputs as the tests write and check them: a file from data or text, an
objectives file (constraints written ``"metric bound value"``), a preset's round trip, a loader's one-line error naming file and key, and a
resolved space asked for an enqueued trial."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from autocompress.errors import ConfigError

# What the test searches run with: the plain per-layer space, fixed starts and no polish stage,
# so each search stays seconds long. The product's defaults (the ``refine`` space with depth,
# the measured start ``auto``, the polish stage) are searched in tests/study/test_defaults.py.
QUICK_SEARCH: dict[str, Any] = {
    "search_space": "default",
    "starts": ("identity", "int8", "prune30-int8"),
    "polish": False,
}
# the same, as ``autocompress.search(...)`` keywords
QUICK_API: dict[str, Any] = {
    "space": QUICK_SEARCH["search_space"],
    "starts": QUICK_SEARCH["starts"],
    "polish": False,
}
# the same, as a YAML file writes it
QUICK_SEARCH_YAML: dict[str, Any] = {**QUICK_SEARCH, "starts": list(QUICK_SEARCH["starts"])}


def write_yaml(folder: Path, name: str, data: Any) -> str:
    """``data`` (text as it is, anything else dumped as YAML) in ``folder / name``; its path."""
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def constraint(text: str) -> dict:
    """``"size_bytes max_ratio 0.5"`` as a constraint: ``{metric: size_bytes, max_ratio: 0.5}``."""
    metric, bound, value = text.split()
    return {"metric": metric, bound: float(value)}


def write_objectives(folder: Path, name: str, objectives: str, *constraints: str) -> str:
    """An objectives file: ``objectives`` as ``"accuracy maximize, size_bytes minimize"``,
    ``constraints`` as :func:`constraint` reads them; its path."""
    listed = [
        dict(zip(("metric", "direction"), o.split(), strict=True)) for o in objectives.split(",")
    ]
    data = {"objectives": listed, "constraints": [constraint(c) for c in constraints]}
    return write_yaml(folder, name, data)


def check_preset(load: Callable[[str], Any], kind: str, name: str) -> Any:
    """Preset ``name`` loads from ``<kind>/<name>.yaml`` and survives ``to_dict`` and back."""
    loaded = load(name)
    assert loaded.source == f"{kind}/{name}.yaml"
    assert type(loaded).from_dict(loaded.to_dict()) == loaded
    return loaded


def check_file_error(load: Callable[[str], Any], path: str, key: str, message: str) -> None:
    """Loading ``path`` fails with one ConfigError naming the file and ``key``, with ``message``."""
    with pytest.raises(ConfigError) as info:
        load(path)
    assert f"{path}: {key}" in str(info.value)
    assert message in str(info.value)


def ask_enqueued(space: Any, params: dict, seed: int) -> tuple[optuna.trial.Trial, Any]:
    """A study's first trial with ``params`` enqueued (Optuna's warnings about out-of-range
    values raised as errors) and ``space``'s policy for it."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study.enqueue_trial(params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns about out-of-range enqueued values
        trial = study.ask()
        policy = space.suggest(trial)
    return trial, policy
