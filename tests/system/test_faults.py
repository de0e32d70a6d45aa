"""Fault injection: trials that fail on purpose (exception, NaN loss, over the time limit, a
worker killed by the OS), a search whose first trials all fail, and drivers SIGKILLed at random
points then resumed, with trials lost and duplicated counted across trials.jsonl, the Optuna
storage and MLflow. The figures go to the summary line (``tests/_support/faults.py``)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
import yaml
from _support import faults
from _support.study_inputs import QUICK_SEARCH
from typer.testing import CliRunner

from autocompress.api import run_search
from autocompress.cli import app
from autocompress.study._controller import _NUMBER_ATTR as NUMBER_ATTR
from autocompress.study.config import SearchConfig
from autocompress.study.failures import FailureMonitor, SearchAborted, no_feasible_trial
from autocompress.study.rundir import RunDir

pytestmark = pytest.mark.faults

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
FAULTY = f"{TESTS}/_support/faulty_tasks.py"
ENV = {
    **{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray binds 127.0.0.1
    "RAY_AUTH_MODE": "disabled",
}


def config(out: Path, task: str, **kw) -> SearchConfig:
    data = {
        **QUICK_SEARCH,
        "name": "faults",
        "task": task,
        "backend": "local",
        "tracking": False,
        "trials": 4,
        "epochs": 1,
        "report_every": 0,
        "scheduler": "none",
        "out": str(out),
        **kw,
    }
    return SearchConfig.from_dict(data)


def _check_failing_search(result, kind: str, text: str) -> list[dict]:
    failed = [r for r in result.trials if r["state"] == "failed"]
    faults.failing_search(failed_trials=len(failed), completed=len(result.trials) > len(failed))
    assert failed, [r["state"] for r in result.trials]
    for r in failed:
        assert r["failure"] == kind, r
        assert text in r["error"], r["error"]
    assert any(r["state"] == "complete" for r in result.trials)
    records = RunDir(result.run_dir).records()
    assert len(records) == len(result.trials)
    return failed


# -- failing trials: the search goes on ------------------------------------------------------
def test_an_exception_fails_the_trial_and_the_search_goes_on(tmp_path):
    cfg = config(tmp_path / "run", f"{FAULTY}:crash_in_metric", trials=5, epochs=0)
    result = run_search(cfg)
    assert len(result.trials) == 5
    _check_failing_search(result, "exception", "metric exploded")


def test_a_nan_loss_fails_the_trial_as_diverged(tmp_path):
    result = run_search(config(tmp_path / "run", f"{FAULTY}:nan_loss", trials=4))
    failed = _check_failing_search(result, "diverged", "loss is nan")
    assert all(r["policy"]["finetune"]["epochs"] >= 1 for r in failed)


def test_a_trial_over_its_time_limit_fails_as_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("AC_TEST_STEP_SLEEP", "0.1")  # 13 training batches: > 1 s per epoch
    cfg = config(tmp_path / "run", f"{FAULTY}:slow", trials=3, trial_timeout_s=0.5)
    result = run_search(cfg)
    failed = _check_failing_search(result, "timeout", "trial_timeout_s=0.5")
    for r in failed:
        assert r["duration_s"] < 5, r  # stopped at a step boundary, not after the epoch


def test_the_first_trials_all_failing_stop_the_search_with_a_summary(tmp_path):
    cfg = tmp_path / "search.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {**config(tmp_path / "run", f"{FAULTY}:always_crash").to_dict(), "trials": 30}
            | {"epochs": 0, "fail_fast_after": 3}
        )
    )
    result = CliRunner().invoke(app, ["search", str(cfg)])
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "the first 3 trials all failed" in lines[0]
    assert "3x RuntimeError: metric broken for every student" in lines[0]
    records = RunDir(tmp_path / "run").records()
    assert len(records) == 3  # the budget of 30 was not burnt
    faults.fail_fast_stop(failed_trials=3)
    faults.bad_input(clean=True)
    # the run directory is still whole: a fixed task could resume it
    assert (tmp_path / "run" / "pareto.json").exists()


@contextmanager
def _ray_environ(**extra: str):
    """This process's environment for a Ray search started here: ENV's Ray settings, no
    RAY_ADDRESS, and ``extra``; the environment as it was afterwards."""
    old = dict(os.environ)
    os.environ.update({k: ENV[k] for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")})
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.mark.slow
def test_ray_trials_fail_by_exception_timeout_and_killed_worker(tmp_path_factory):
    ray = pytest.importorskip("ray")
    short = tmp_path_factory.mktemp("f")
    with _ray_environ(AC_TEST_STEP_SLEEP="0.1"):
        timeout = run_search(
            config(short / "t", f"{FAULTY}:slow", backend="ray", trials=3, trial_timeout_s=0.5)
        )
        _check_failing_search(timeout, "timeout", "trial_timeout_s")
        died = run_search(
            config(short / "d", f"{FAULTY}:dies_when_pruned", backend="ray", trials=3, epochs=0)
        )
        _check_failing_search(died, "worker-died", "")
    assert not ray.is_initialized()


def test_ray_trials_whose_actor_cannot_be_reused_are_recorded_not_lost(tmp_path_factory):
    """Tune gives up on reusing an actor when the previous trial's thread has not ended in
    ``TUNE_FUNCTION_THREAD_TIMEOUT_S`` (2 s by default: too short under load); it then marks
    the trial ERROR without telling the searcher. Forced here with a 0 s timeout: every reuse
    fails, and each such trial must be a failed record whose study trial and MLflow run are
    closed, with the search asking, recording and finishing every trial."""
    ray = pytest.importorskip("ray")
    short = tmp_path_factory.mktemp("u")
    uri = f"sqlite:///{short}/mlflow.db"
    with _ray_environ(TUNE_FUNCTION_THREAD_TIMEOUT_S="0"):
        from autocompress.api import make_tracker

        cfg = config(
            short / "run",
            f"{TESTS}/_support/tasks.py:mlp",
            backend="ray",
            trials=4,
            max_concurrent=1,
            tracking=True,
            tracking_uri=uri,
        )
        result = run_search(cfg, tracker=make_tracker(cfg))
    assert not ray.is_initialized()
    records = RunDir(result.run_dir).records()
    assert sorted(r["number"] for r in records) == [0, 1, 2, 3]
    lost = [r for r in records if "re-use" in (r["error"] or "") or "reuse" in (r["error"] or "")]
    faults.failing_search(failed_trials=len(lost), completed=len(records) == 4)
    assert lost, [(r["state"], r["error"]) for r in records]
    for r in lost:
        assert r["state"] == "failed" and "Ray Tune ended the trial" in r["error"], r
    study = optuna.load_study(study_name="faults", storage=RunDir(result.run_dir).storage_url)
    assert not [t.number for t in study.trials if not t.state.is_finished()]
    numbers, running = _mlflow_trials(uri, "faults")
    assert sorted(numbers) == [0, 1, 2, 3] and running == 0


# -- drivers SIGKILLed at random points, then resumed ----------------------------------------
def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autocompress.cli", *args],
        env=ENV,
        start_new_session=True,  # the driver and what it starts (Ray) die together
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _mlflow_trials(uri: str, experiment: str) -> tuple[Counter, int]:
    """Trial numbers of the active MLflow child runs (how often each), and runs left RUNNING."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    numbers: Counter = Counter()
    running = 0
    for run in runs:
        if run.data.tags.get("autocompress.role") in ("search", "polish"):
            continue
        number = run.data.tags.get("trial.number") or run.info.run_name.removeprefix("trial-")
        numbers[int(number)] += 1
        running += run.info.status == "RUNNING"
    return numbers, running


def _audit(run: Path, name: str, uri: str) -> tuple[int, int, dict]:
    """(lost, duplicated) over trials.jsonl, the Optuna study and MLflow, with the details."""
    lines = [json.loads(ln) for ln in (run / "trials.jsonl").read_text().splitlines() if ln]
    numbers = Counter(r["number"] for r in lines)
    lines_by_number = {r["number"]: r for r in lines}
    recorded = set(numbers)
    study = optuna.load_study(study_name=name, storage=RunDir(run).storage_url)
    trials = study.get_trials(deepcopy=False)
    states = optuna.trial.TrialState
    finished = states.COMPLETE, states.PRUNED
    # a trial a resumed driver re-added for a record (killed between the record's append and
    # the study's tell) stands for that record's number, which it carries in a user attribute
    told: Counter = Counter(
        t.user_attrs.get(NUMBER_ATTR, t.number) for t in trials if t.state in finished
    )
    ended = {t.user_attrs.get(NUMBER_ATTR, t.number) for t in trials if t.state.is_finished()}
    with_values = {n for n, r in lines_by_number.items() if r["state"] in ("complete", "pruned")}
    lost_in_study = sorted(
        n for n in recorded if n not in ended or (n in with_values and not told[n])
    )
    # a study trial that finished with values but has no record was told twice or invented
    unrecorded = sorted(n for n in told if n not in recorded)
    told_twice = sum(c - 1 for c in told.values())
    left_running = [t.number for t in trials if t.state == states.RUNNING]
    tracked, mlflow_running = _mlflow_trials(uri, name)
    details = {
        "jsonl_dup": sum(c - 1 for c in numbers.values()),
        "study_lost": lost_in_study,
        "study_unrecorded": unrecorded,
        "study_told_twice": told_twice,
        "study_running": left_running,
        "mlflow_lost": sorted(recorded - set(tracked)),
        "mlflow_dup": sum(c - 1 for c in tracked.values()),
        "mlflow_unrecorded": sorted(set(tracked) - recorded),
        "mlflow_running": mlflow_running,
    }
    lost = len(lost_in_study) + len(details["mlflow_lost"]) + len(left_running)
    duplicated = (
        details["jsonl_dup"]
        + len(unrecorded)
        + told_twice
        + details["mlflow_dup"]
        + len(details["mlflow_unrecorded"])
    )
    return lost, duplicated, details


def _wait_for(proc: subprocess.Popen, trials: Path, lines: int, timeout: float = 300) -> bool:
    """True once ``trials`` holds ``lines`` records while the driver still runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if lines == 0 or (trials.exists() and len(trials.read_text().splitlines()) >= lines):
            return True
        time.sleep(0.05)
    return False


def _alive_after(proc: subprocess.Popen, seconds: float) -> bool:
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return True
    return False


def _kill_and_resume(root: Path, backend: str, *, kills: int, seed: int, window: float) -> None:
    name = f"kill-{backend}"
    run = root / "run"
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = root / "search.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "task": f"{TESTS}/_support/tasks.py:mlp",
                "backend": backend,
                "epochs": 1,
                "trials": 4,
                "scheduler": "none",
                "report_every": 0,
                # a Ray-only key: on backend local it is an error naming it
                **({"max_concurrent": 2} if backend == "ray" else {}),
                "out": str(run),
            }
        )
    )
    rng = random.Random(seed)
    done_kills = 0
    attempts = 0
    while done_kills < kills:
        attempts += 1
        assert attempts <= 3 * kills, "the driver kept finishing before its kill point"
        have = len(RunDir(run).records()) if run.exists() else 0
        resume = ["--resume"] if (run / "config.yaml").exists() else []
        proc = _start(
            ["search", str(cfg), "--tracking-uri", uri, "--trials", str(have + 3), *resume]
        )
        # a random point: after 0-1 more recorded trials (1 the first time), then 0-`window` s
        more, extra = rng.randint(0 if done_kills else 1, 1), rng.uniform(0.0, window)
        if _wait_for(proc, run / "trials.jsonl", have + more) and _alive_after(proc, extra):
            done_kills += 1
        _kill_group(proc)
    have = len(RunDir(run).records())
    assert have >= 1, "no killed driver recorded a trial: the kill points are too early"
    final_total = have + 1
    resume = ["--resume"] if (run / "config.yaml").exists() else []
    proc = _start(
        ["search", str(cfg), "--tracking-uri", uri, "--trials", str(final_total), *resume]
    )
    try:
        _, err = proc.communicate(timeout=600)
    finally:
        _kill_group(proc)
    resumed = proc.returncode == 0
    assert resumed, err[-3000:]
    records = RunDir(run).records()
    lost, duplicated, details = _audit(run, name, uri)
    lost += final_total - len(records)
    faults.kills(backend, count=done_kills, lost=lost, duplicated=duplicated, resumed=resumed)
    assert len(records) == final_total
    assert (lost, duplicated) == (0, 0), details


@pytest.mark.slow
def test_local_driver_killed_at_random_points_resumes_losing_and_duplicating_nothing(tmp_path):
    _kill_and_resume(tmp_path, "local", kills=5, seed=12, window=3.0)


@pytest.mark.slow
def test_ray_driver_killed_at_random_points_resumes_losing_and_duplicating_nothing(
    tmp_path_factory,
):
    pytest.importorskip("ray")
    _kill_and_resume(tmp_path_factory.mktemp("k"), "ray", kills=5, seed=12, window=4.0)


@pytest.mark.slow
def test_a_driver_killed_during_the_polish_resumes_without_redoing_finished_polishes(tmp_path):
    run, cfg = tmp_path / "run", tmp_path / "s.yaml"
    keys = {"name": "kill-polish", "task": f"{TESTS}/_support/tasks.py:mlp", "backend": "local"}
    keys |= {"epochs": 1, "trials": 3, "report_every": 0, "keep_models": "all", "out": str(run)}
    cfg.write_text(yaml.safe_dump({**keys, "polish": {"candidates": 2, "epochs": 40}}))
    polishes = run / "polish.jsonl"
    proc = _start(["search", str(cfg), "--no-tracking"])  # MLflow: tests/integrations
    try:
        assert _wait_for(proc, polishes, 1), proc.communicate()[1][-3000:]
    finally:
        _kill_group(proc)  # killed while the second candidate trains
    first = polishes.read_text()
    assert len(first.splitlines()) == 1, "the driver finished both polishes before its kill"
    number = json.loads(first)["number"]
    artifact = run / "trials" / str(number) / "polish" / "model.pt"
    stamp = artifact.stat().st_mtime_ns
    proc = _start(["search", str(cfg), "--no-tracking", "--resume"])
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        _kill_group(proc)
    resumed = proc.returncode == 0
    lines = polishes.read_text().splitlines()
    numbers = Counter(json.loads(line)["number"] for line in lines)
    duplicated = sum(c - 1 for c in numbers.values())
    faults.kills("local", count=1, lost=2 - len(numbers), duplicated=duplicated, resumed=resumed)
    assert resumed, err[-3000:]
    assert len(numbers) == 2 and duplicated == 0, lines
    assert polishes.read_text().startswith(first)  # the finished polish kept, not redone
    assert artifact.stat().st_mtime_ns == stamp
    assert json.loads((run / "pareto.json").read_text())["polish"]["trials"] == sorted(numbers)


# -- the fail-fast rule itself ---------------------------------------------------------------
def _records(*states: str) -> list[dict]:
    return [
        {"number": i, "state": s, "error": f"RuntimeError: e{i % 2}" if s == "failed" else None}
        for i, s in enumerate(states)
    ]


def test_fail_fast_needs_the_first_k_trials_of_this_driver_all_failed():
    monitor = FailureMonitor(fail_fast_after=3)
    for r in _records("failed", "failed"):
        monitor.observe(r)
    assert monitor.aborted is None
    monitor.observe(_records("failed")[0])
    assert monitor.aborted and "the first 3 trials all failed" in monitor.aborted
    assert "2x RuntimeError: e0" in monitor.aborted and "1x RuntimeError: e1" in monitor.aborted
    with pytest.raises(SearchAborted):
        monitor.raise_if_aborted()

    lucky = FailureMonitor(fail_fast_after=3)
    for r in _records("failed", "complete", "failed", "failed", "failed"):
        lucky.observe(r)
    assert lucky.aborted is None and lucky.failed == 4  # one success: the search goes on

    never = FailureMonitor(fail_fast_after=0)
    for r in _records(*["failed"] * 10):
        never.observe(r)
    assert never.aborted is None


def test_no_feasible_trial_names_the_broken_constraints():
    records = [
        {"state": "infeasible", "error": "constraint size_bytes max_ratio 0.01 broken: x"},
        {"state": "infeasible", "error": "constraint accuracy max_drop 0 broken: y; "
         "constraint size_bytes max_ratio 0.01 broken: z"},
        {"state": "failed", "error": "boom"},
    ]  # fmt: skip
    line = no_feasible_trial(records)
    assert "size_bytes max_ratio 0.01 (broken by 2)" in line
    assert "accuracy max_drop 0 (broken by 1)" in line and "of 3 trials" in line
    assert no_feasible_trial([*records, {"state": "complete"}]) is None
