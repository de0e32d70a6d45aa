from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _support.models import mlp_task
from _support.study_inputs import QUICK_API, write_objectives, write_yaml
from conftest import ENV, local_config, task_spec, write_search

from autocompress.api import run_search, search
from autocompress.study.config import SearchConfig
from autocompress.study.pareto import dominates
from autocompress.study.rundir import RunDir


@pytest.fixture(scope="module")
def task():
    return mlp_task()


def _config(tmp_path: Path, **overrides) -> SearchConfig:
    """The conftest's local MLP search (default space and objectives), 6 trials, in ``run``."""
    return local_config(tmp_path / "run", **{"trials": 6, **overrides})


def test_local_search_writes_records_and_front(task, tmp_path):
    result = search(
        task, n_trials=6, seed=0, epochs=1, out=tmp_path / "run", name="mlp", **QUICK_API
    )
    rd = RunDir(tmp_path / "run")
    records = rd.records()
    assert [r["number"] for r in records] == list(range(6))
    assert [r["start"] for r in records[:3]] == ["identity", "int8", "prune30-int8"]
    for r in records:
        assert r["state"] in ("complete", "infeasible", "failed", "pruned")
        assert set(r) >= {"number", "state", "policy", "metrics", "error", "params"}
    identity = records[0]
    assert identity["state"] == "complete"
    assert identity["metrics"]["accuracy"] == identity["metrics"]["teacher"]["accuracy"]
    for r in (r for r in records if r["state"] == "complete"):
        # timed interleaved with the teacher: the record compares with that teacher timing
        paired = r["metrics"]["teacher_paired"]["latency_ms"]
        assert r["teacher"]["latency_ms"] == r["metrics"]["teacher"]["latency_ms"] == paired
        assert r["metrics"]["speedup"] == pytest.approx(paired / r["metrics"]["latency_ms"])
    doc = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert doc["objectives"][0] == {"name": "accuracy", "direction": "maximize"}
    front = {t["number"] for t in doc["trials"]}
    assert front == {r["number"] for r in result.pareto}
    metrics = ["accuracy", "size_bytes", "latency_ms"]
    directions = ["maximize", "minimize", "minimize"]
    complete = [r for r in records if r["state"] == "complete"]
    for r in complete:
        v = [r["metrics"][m] for m in metrics]
        dominated = any(
            dominates([o["metrics"][m] for m in metrics], v, directions) for o in complete
        )
        assert (r["number"] in front) == (not dominated)
    # models of the front are kept, the others removed
    for n in front:
        assert (tmp_path / "run" / "trials" / str(n) / "model.pt").exists()
    assert (tmp_path / "run" / "report.html").exists()


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_same_seed_same_policies(tmp_path, sampler):
    a = run_search(_config(tmp_path / "a", sampler=sampler, trials=5))
    b = run_search(_config(tmp_path / "b", sampler=sampler, trials=5))
    assert [r["policy"] for r in a.trials] == [r["policy"] for r in b.trials]
    c = run_search(_config(tmp_path / "c", sampler=sampler, trials=5, seed=1))
    assert [r["policy"] for r in c.trials][3:] != [r["policy"] for r in a.trials][3:]


def test_structure_breaking_a_hard_bound_is_infeasible_without_training(tmp_path):
    objectives = write_objectives(
        tmp_path, "tight.yaml", "accuracy maximize, size_bytes minimize", "size_bytes max_ratio 0.5"
    )
    result = run_search(_config(tmp_path, objectives=objectives, trials=4, epochs=2))
    by_name = {r["start"]: r for r in result.trials if r["start"]}
    identity = by_name["identity"]
    assert identity["state"] == "infeasible"
    assert "size_bytes" in identity["error"]
    assert "accuracy" not in identity["metrics"]  # stopped before training and measuring
    assert by_name["int8"]["state"] == "complete"
    assert by_name["int8"]["epochs"]  # trained
    assert identity["number"] not in {r["number"] for r in result.pareto}


def test_resume_reaches_the_total_without_rerunning(tmp_path):
    run_search(_config(tmp_path, trials=3))
    first = RunDir(tmp_path / "run").records()
    result = run_search(_config(tmp_path, trials=5))
    assert [r["number"] for r in result.trials] == [0, 1, 2, 3, 4]
    assert result.trials[:3] == first


def test_resume_refuses_a_different_search(tmp_path):
    from autocompress.errors import ConfigError

    run_search(_config(tmp_path, trials=3))
    with pytest.raises(ConfigError, match="different 'search_space'"):
        run_search(_config(tmp_path, trials=4, search_space="int8"))


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autocompress.cli", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_sigkill_mid_search_loses_and_duplicates_nothing(tmp_path):
    cfg = write_search(
        tmp_path,
        "killme",
        trials=8,
        epochs=2,
        backend="local",
        tracking=False,
        out=str(tmp_path / "run"),
    )
    trials = tmp_path / "run" / "trials.jsonl"
    proc = _cli("search", cfg)
    deadline = time.time() + 120
    while time.time() < deadline:
        if trials.exists() and len(trials.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = RunDir(tmp_path / "run").records()
    assert 3 <= len(before) < 8
    proc = _cli("search", cfg, "--resume")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in trials.read_text().splitlines()]
    numbers = [r["number"] for r in lines]
    assert len(numbers) == len(set(numbers)), "a trial was recorded twice"
    after = RunDir(tmp_path / "run").records()
    assert len(after) == 8
    assert after[: len(before)] == before


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    cfg = write_yaml(tmp_path, "bad.yaml", {"name": "x", "task": "tasks.py:mlp", "trails": 3})
    proc = _cli("search", cfg)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().count("\n") == 0
    assert "unknown key 'trails'" in err and "bad.yaml" in err
    assert "Traceback" not in err


def test_nan_metric_with_a_constraint_fails_the_trial_not_the_search(tmp_path):
    objectives = write_objectives(
        tmp_path, "o.yaml", "size_bytes minimize, latency_ms minimize", "accuracy max_drop 0.5"
    )
    cfg = _config(tmp_path, task=task_spec("mlp_nan_when_pruned"), objectives=objectives, trials=4)
    result = run_search(cfg)
    by_name = {r["start"]: r for r in result.trials if r["start"]}
    assert by_name["prune30-int8"]["state"] == "failed"
    assert "non-finite" in by_name["prune30-int8"]["error"]
    assert by_name["identity"]["state"] == "complete"
    again = run_search(_config(tmp_path, task=cfg.task, objectives=objectives, trials=5))
    assert len(again.trials) == 5


def test_config_rejects_unknown_importance():
    from autocompress.errors import ConfigError

    with pytest.raises(ConfigError, match="importance: 'magnitud'"):
        SearchConfig.from_dict({"name": "x", "task": "t.py:f", "importance": "magnitud"})
