"""The Tracker protocol is a plug-in point: a user's own tracker, written here in a few lines
(no MLflow), follows a real 3-trial local search from its start to its end."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _support.models import mlp_task
from conftest import local_config

from autocompress.api import run_search
from autocompress.integrations import Tracker, TrialState
from autocompress.integrations.mlflow import MlflowTracker
from autocompress.study.rundir import read_jsonl


class ListTracker:
    """What a user writes: keep every call, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.config: dict[str, Any] = {}
        self.trials: list[dict[str, Any]] = []
        self.synced: list[list[int]] = []
        self.finished: tuple[set[int], list[Path], dict[int, Path]] | None = None

    def start_search(self, config: Mapping[str, Any]) -> None:
        self.calls.append("start_search")
        self.config = dict(config)

    def log_trial(self, record: Mapping[str, Any]) -> None:
        self.calls.append("log_trial")
        self.trials.append(json.loads(json.dumps(record)))  # what a remote store would keep

    def sync(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.calls.append("sync")
        self.synced.append([int(r["number"]) for r in records])

    def finish(
        self, pareto_numbers: set[int], files: Sequence[Path], models: Mapping[int, Path]
    ) -> None:
        self.calls.append("finish")
        self.finished = (set(pareto_numbers), list(files), dict(models))


def test_the_shipped_tracker_and_a_users_tracker_follow_the_protocol():
    assert issubclass(MlflowTracker, Tracker)
    assert isinstance(ListTracker(), Tracker)
    assert not isinstance(object(), Tracker)


def test_a_users_tracker_receives_every_trial_of_a_search(tmp_path):
    tracker = ListTracker()
    run = tmp_path / "run"
    result = run_search(local_config(run, trials=3, report_every=0), mlp_task(), tracker=tracker)

    assert tracker.calls == ["start_search", "sync", "log_trial", "log_trial", "log_trial", "sync", "finish"]  # fmt: skip
    assert tracker.config["name"] == "mlp" and tracker.config["trials"] == 3
    assert tracker.synced == [[], [0, 1, 2]]
    on_disk = read_jsonl(run / "trials.jsonl")
    assert tracker.trials == on_disk  # every trial, exactly as trials.jsonl holds it
    assert [t["number"] for t in tracker.trials] == [0, 1, 2]
    assert all(t["state"] in tuple(TrialState) for t in tracker.trials)
    assert tracker.trials[0]["state"] == TrialState.COMPLETE  # identity: the teacher itself
    assert tracker.finished is not None
    pareto, files, models = tracker.finished
    assert pareto == {t["number"] for t in result.pareto} and pareto
    assert run / "pareto.json" in files and (run / "report.html") in files
    assert set(models) == pareto and all(p.is_dir() for p in models.values())
