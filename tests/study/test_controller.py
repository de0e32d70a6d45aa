"""The controller's Optuna study: named metrics, the policy as a user attribute, readable in
optuna-dashboard; a killed driver's RUNNING trial repaired through the public API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from _support.models import mlp_task
from conftest import local_config

from autocompress.api import run_search

DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("study") / "run"
    result = run_search(local_config(run, trials=3, report_every=0), mlp_task())
    return run, result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_study_names_its_metrics_and_keeps_the_policy(finished_run):
    run, result = finished_run
    study = optuna.load_study(study_name="mlp", storage=f"sqlite:///{run / 'study.db'}")
    assert study.metric_names == ["accuracy", "size_bytes", "latency_ms"]
    for trial, record in zip(study.trials, result.trials, strict=True):
        assert trial.user_attrs["autocompress.policy"] == record["policy"]


def test_optuna_dashboard_serves_the_metric_names(finished_run):
    if not DASHBOARD.exists():
        pytest.fail(f"{DASHBOARD} missing: pip install optuna-dashboard (the dev extra)")
    run, _ = finished_run
    port = _free_port()
    proc = subprocess.Popen(
        [str(DASHBOARD), f"sqlite:///{run / 'study.db'}", "--host", "127.0.0.1"]
        + ["--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = _get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "optuna-dashboard did not start"
                time.sleep(0.3)
        (study,) = [s for s in studies if s["study_name"] == "mlp"]
        detail = _get(f"{base}/api/studies/{study['study_id']}")
        assert detail["objective_names"] == ["accuracy", "size_bytes", "latency_ms"]
        assert "autocompress.policy" in {a["key"] for a in detail["union_user_attrs"]}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_running_trial_left_by_a_killed_driver_is_repaired(finished_run, tmp_path):
    """A trial recorded in trials.jsonl but still RUNNING in the study (the driver died
    between the two) is re-added finished, with its values, through public Optuna calls."""
    run, result = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    storage = f"sqlite:///{copy / 'study.db'}"
    study = optuna.load_study(study_name="mlp", storage=storage)
    trial = study.ask()  # a proposal the dead driver had recorded: fake its record
    record = {**result.trials[0], "number": trial.number, "start": None}
    with (copy / "trials.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    resumed = run_search(local_config(copy, trials=4, report_every=0), mlp_task())
    study = optuna.load_study(study_name="mlp", storage=storage)
    states = optuna.trial.TrialState
    assert study.trials[trial.number].state == states.FAIL
    readded = [t for t in study.trials if t.user_attrs.get("autocompress.number") == trial.number]
    assert len(readded) == 1 and readded[0].state == states.COMPLETE
    assert readded[0].values[0] == pytest.approx(record["metrics"]["accuracy"])
    assert len(resumed.trials) == 4
    numbers = [r["number"] for r in resumed.trials]
    assert len(numbers) == len(set(numbers))
