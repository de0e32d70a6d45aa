"""Same seed and config: the same policies and the same metrics except latency (local, Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _support.runs import same_trials, timing_free
from _support.study_inputs import QUICK_SEARCH

from autocompress.api import run_search
from autocompress.study.config import SearchConfig

TESTS = Path(__file__).resolve().parents[1]


def _config(out: Path, backend: str, **kw) -> SearchConfig:
    kw = {**QUICK_SEARCH, **kw}
    return SearchConfig(
        name="det",
        task=str(TESTS / "_support" / "tasks.py") + ":mlp",
        backend=backend,
        trials=4,
        epochs=1,
        sampler="tpe",
        seed=3,
        tracking=False,
        report_every=0,
        scheduler="none",
        out=str(out),
        **kw,
    )


def _same(a, b) -> None:
    same_trials(a.trials, b.trials)
    assert timing_free(a.teacher) == timing_free(b.teacher)


def test_local_search_is_deterministic(tmp_path):
    _same(
        run_search(_config(tmp_path / "a", "local")),
        run_search(_config(tmp_path / "b", "local")),
    )


@pytest.mark.slow
def test_ray_search_is_deterministic(tmp_path_factory, monkeypatch):
    """One trial at a time: with several, the order results reach the sampler varies."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    root = tmp_path_factory.mktemp("d")
    a = run_search(_config(root / "a", "ray", max_concurrent=1))
    b = run_search(_config(root / "b", "ray", max_concurrent=1))
    assert not ray.is_initialized()
    _same(a, b)
