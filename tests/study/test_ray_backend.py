"""The ``ray`` backend on a real local Ray cluster started by the search itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _support.faulty_tasks import dies_when_pruned
from _support.study_inputs import QUICK_SEARCH
from conftest import ENV, write_search

from autocompress.api import prepare, run_search
from autocompress.pipeline import load_artifact
from autocompress.study._polish_plan import with_polish
from autocompress.study.config import SearchConfig
from autocompress.study.rundir import RunDir
from autocompress.task import load_task

ray = pytest.importorskip("ray")

TESTS = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("autocompress")
TARGETS = ("torch", "onnxruntime")


@pytest.fixture(autouse=True)
def ray_env(monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind 127.0.0.1
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield
    assert not ray.is_initialized(), "the search must disconnect from Ray"


@pytest.fixture
def short_tmp(tmp_path_factory):
    """A short run directory, so Ray's temp folder (and its sockets) can live inside it."""
    return tmp_path_factory.mktemp("r")


def config(out: Path, task: str = "tests/_support/tasks.py:mlp", **kw) -> SearchConfig:
    kw = {**QUICK_SEARCH, "trials": 5, "epochs": 1, "scheduler": "none", **kw}
    return SearchConfig(
        name="ray-test",
        task=task,
        backend="ray",
        tracking=False,
        report_every=0,
        out=str(out),
        base_dir=str(TESTS.parent),
        **kw,
    )


def test_search_runs_all_trials_on_ray_with_shared_teacher_outputs(short_tmp, capfd):
    """Measured on two runtimes (``targets``): the objective target's figures as in a
    one-target search, and per target a front from the workers' own artifacts."""
    result = run_search(
        config(short_tmp / "run", targets=TARGETS, polish={"candidates": 2, "epochs": 2})
    )
    out, err = capfd.readouterr()
    # Ray Tune's own console output stays hidden without verbose
    assert "Configuration for experiment" not in out + err
    assert "TensorBoard" not in out + err
    _check_one_teacher_per_comparison(short_tmp / "run")

    records = [json.loads(line) for line in (short_tmp / "run" / "trials.jsonl").open()]
    assert sorted(r["number"] for r in records) == [0, 1, 2, 3, 4]
    assert len(result.trials) == 5
    for r in records:
        assert r["node"] and r["host"], r
        assert r["state"] in ("complete", "infeasible"), r
        # the teacher ran once on the driver; no trial computes a teacher batch
        assert r["teacher_batches_computed"] == 0, r
    assert any(r["state"] == "complete" for r in records)
    assert (short_tmp / "run" / "pareto.json").exists()
    # then the polish stage: each candidate a Ray task on a worker, with the shared outputs
    polishes = [json.loads(line) for line in (short_tmp / "run" / "polish.jsonl").open()]
    assert len(polishes) == 2 and len({p["number"] for p in polishes}) == 2
    for p in polishes:
        assert p["node"] and p["state"] in ("complete", "infeasible"), p
        assert p["teacher_batches_computed"] == 0 and p["policy"]["finetune"]["epochs"] == 2
        assert (short_tmp / "run" / p["artifact"] / "model.pt").exists() or p["number"] not in {
            t["number"] for t in result.pareto
        }
    _check_each_target_from_its_own_artifact(short_tmp / "run", records)
    # Ray's temp folder was inside the run directory (short path, explicit, nothing in ~) and
    # is removed when the search ends: sockets, logs and Tune's driver artifacts go with it
    assert not (short_tmp / "run" / "ray" / "tmp").exists()


def _check_each_target_from_its_own_artifact(run: Path, records: list[dict]) -> None:
    """Each target has its front; a kept trial's ONNX Runtime figures are its own model.onnx's
    (its bytes, the task metric computed with it), not the torch artifact's."""
    doc = json.loads((run / "pareto.json").read_text())
    assert set(doc["fronts"]) == set(TARGETS) and all(doc["fronts"].values())
    task = load_task(str(TESTS / "_support" / "tasks.py") + ":mlp")
    checked = 0
    for r in records:
        if r["state"] != "complete":
            continue
        entries = r["metrics"]["targets"]
        assert list(entries) == list(TARGETS) and entries["torch"]["size_bytes"] == r["metrics"]["size_bytes"]  # fmt: skip
        onnx = run / "trials" / str(r["number"]) / "onnxruntime" / "model.onnx"
        if onnx.is_file():  # kept: a Pareto trial
            assert entries["onnxruntime"]["size_bytes"] == onnx.stat().st_size
            assert entries["onnxruntime"]["size_bytes"] != entries["torch"]["size_bytes"]
            deployed = load_artifact(onnx, task.model)
            assert task.evaluate(deployed) == pytest.approx(entries["onnxruntime"]["accuracy"])
            checked += 1
    assert checked


def _check_one_teacher_per_comparison(run: Path) -> None:
    """Every record carries the teacher its worker timed; speedups, pareto.json and the run
    teacher agree: timings are compared as ratios to their own teacher."""
    run_teacher = json.loads((run / "teacher.json").read_text())
    pareto = json.loads((run / "pareto.json").read_text())
    assert pareto["teacher"] == run_teacher
    trials = list(map(json.loads, (run / "trials.jsonl").open()))
    # a polished point on the front: its polished figures and teacher (study._polish_plan)
    records = {r["number"]: r for r in with_polish(trials, RunDir(run).polishes())}
    for r in records.values():
        teacher = r["teacher"]
        assert teacher["accuracy"] == run_teacher["accuracy"]
        assert teacher["size_bytes"] == run_teacher["size_bytes"]
        assert teacher["latency_ms"] > 0
        if r["state"] == "complete":
            m = r["metrics"]
            assert m["speedup"] == pytest.approx(teacher["latency_ms"] / m["latency_ms"])
            assert m["teacher"]["latency_ms"] == teacher["latency_ms"]
    for t in pareto["trials"]:
        r = records[t["number"]]
        expected = (
            r["metrics"]["latency_ms"] / r["teacher"]["latency_ms"] * run_teacher["latency_ms"]
        )
        assert t["compared"]["latency_ms"] == pytest.approx(expected)
        assert t["teacher"]["latency_ms"] == r["teacher"]["latency_ms"]


def test_nan_trials_fail_and_the_search_goes_on(short_tmp):
    result = run_search(
        config(short_tmp / "run", task="tests/_support/tasks.py:mlp_nan_when_pruned")
    )

    by_state: dict[str, list[dict]] = {}
    for r in result.trials:
        by_state.setdefault(r["state"], []).append(r)
    assert len(result.trials) == 5
    assert by_state.get("failed"), "pruned students have a NaN metric: those trials fail"
    assert by_state.get("complete"), "unpruned baselines complete"
    for r in by_state["failed"]:
        assert "non-finite" in r["error"]
        assert any(v > 0 for v in r["policy"]["prune"]["layers"].values())
    pareto = json.loads((short_tmp / "run" / "pareto.json").read_text())
    assert {t["number"] for t in pareto["trials"]} <= {r["number"] for r in by_state["complete"]}


def test_asha_prunes_weak_trials_and_keeps_them_off_the_front(short_tmp):
    cfg = config(short_tmp / "run", trials=7, epochs=3, scheduler="auto", max_concurrent=2)
    session = prepare(cfg)
    from autocompress.study.backends.ray import make_scheduler

    scheduler = make_scheduler(session)
    assert type(scheduler).__name__ == "AsyncHyperBandScheduler"
    assert scheduler._max_t == 3 and scheduler._time_attr == "epoch"

    result = run_search(cfg)
    states = [r["state"] for r in result.trials]
    assert len(states) == 7
    pruned = [r for r in result.trials if r["state"] == "pruned"]
    assert pruned, f"ASHA stopped no trial: {states}"
    for r in pruned:
        assert 1 <= len(r["epochs"]) < 3, r
        assert "ASHA" in r["error"]
        assert r["node"]
    on_front = {
        t["number"] for t in json.loads((short_tmp / "run" / "pareto.json").read_text())["trials"]
    }
    assert on_front.isdisjoint(r["number"] for r in pruned)
    assert on_front


def test_a_dead_worker_becomes_a_failed_record(short_tmp):
    cfg = config(short_tmp / "run", task="<python>", trials=4, max_concurrent=2)
    result = run_search(cfg, dies_when_pruned())

    states = {r["number"]: r["state"] for r in result.trials}
    assert len(states) == 4
    failed = [r for r in result.trials if r["state"] == "failed"]
    assert failed, states
    for r in failed:
        assert r["error"], r
    assert states[0] == "complete"  # the identity baseline trains nothing and lives


def test_a_killed_driver_resumes(short_tmp):
    run = short_tmp / "run"
    cfg_file = write_search(
        short_tmp,
        "ray-resume",
        trials=6,
        epochs=1,
        scheduler="none",
        backend="ray",
        report_every=0,
        max_concurrent=1,
    )
    env = ENV
    cmd = [str(CLI), "search", cfg_file, "--out", str(run), "--no-tracking"]
    first = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240  # a loaded 2-core machine: Ray and workers start slowly
        while time.monotonic() < deadline:
            trials = run / "trials.jsonl"
            if trials.exists() and len(trials.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the first driver recorded no trials")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        # the Ray processes the killed driver started are in its session: end them
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    before = len((run / "trials.jsonl").read_text().splitlines())
    assert before < 6

    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (run / "trials.jsonl").open()]
    numbers = [r["number"] for r in records]
    assert len(numbers) == len(set(numbers)), "a trial was recorded twice"
    assert len(numbers) == 6
    assert all(r["node"] for r in records)


def test_ray_state_stays_small_whatever_the_teacher_size(short_tmp):
    """A teacher carrying 50 MB: Tune's checkpoints hold no task, session or teacher, and Ray's
    temporary folder is gone when the search ends."""
    run = short_tmp / "run"
    result = run_search(
        config(
            run,
            task="tests/_support/tasks.py:mlp_padded",
            trials=3,
            starts=("identity",),
            device="cpu",
            resources_per_trial={"cpu": 1},
        )
    )
    assert len(result.trials) == 3
    for r in result.trials:  # the record names the node, the GPUs Ray gave (none) and the device
        assert r["node"] and r["gpu_ids"] == [], r
        if r["state"] == "complete":
            precision = "fp32" if r["policy"]["finetune"]["epochs"] else None
            assert r["metrics"]["trained_on"] == {"device": "cpu", "precision": precision}
    ray_files = [p for p in (run / "ray").rglob("*") if p.is_file()]
    names = {p.name.split("-")[0] for p in ray_files}
    assert {"experiment_state", "search_gen_state", "tuner.pkl"} <= names, names
    big = {str(p.relative_to(run)): p.stat().st_size for p in ray_files if p.stat().st_size > 2**20}
    assert not big, f"Ray state files over 1 MB: {big}"
    total = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    assert total < 15 * 2**20, f"the run directory holds {total / 2**20:.1f} MB"
    assert not (run / "ray" / "tmp").exists()


def test_resources_no_node_has_are_one_line_not_a_hang(short_tmp):
    from autocompress.errors import ConfigError

    cfg = config(short_tmp / "run", trials=2, resources_per_trial={"cpu": 1, "gpu": 0.5})
    with pytest.raises(ConfigError, match=r"resources_per_trial: gpu: 0.5 but no node .* has more"):
        run_search(cfg)


def test_halving_climbs_rungs_on_ray_and_keeps_stopped_trials_off_the_front(short_tmp):
    cfg = config(
        short_tmp / "run",
        trials=5,
        epochs=2,
        starts=("identity",),
        max_concurrent=2,
        scheduler={"name": "halving", "rungs": [0, 1, "full"], "eta": 3},
    )
    result = run_search(cfg)
    records = {r["number"]: r for r in result.trials}
    assert sorted(records) == [0, 1, 2, 3, 4]  # one record per proposal
    sampled = [r for r in records.values() if r["start"] is None]
    assert all(r["rungs"][0]["epochs"] == 0 and r["node"] for r in sampled)
    stopped = [r for r in sampled if r["state"] == "pruned"]
    climbed = [r for r in sampled if [e["epochs"] for e in r["rungs"]] == [0, 1, 2]]
    assert stopped and climbed, [(r["state"], r["rungs"]) for r in sampled]
    for r in stopped:
        assert "successive halving" in r["error"] and r["stopped_at_rung"] < 2
    on_front = {
        t["number"] for t in json.loads((short_tmp / "run" / "pareto.json").read_text())["trials"]
    }
    assert on_front and on_front.isdisjoint(r["number"] for r in stopped)
    tune_dirs = {p.name for p in (short_tmp / "run" / "ray").glob("search-*/trial_*")}
    assert {f"trial_{r['number']}_rung2" for r in climbed} <= tune_dirs
