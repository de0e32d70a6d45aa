"""The polish stage: candidates spread along the front, re-trained with the full budget and a
learning-rate schedule, measured on their own artifact; the front, pareto.json, the report and
export use the polished figures; search and polish costs kept apart; a resume redoes nothing."""

from __future__ import annotations

import json
import time

import pytest
from _support.models import mlp_task
from conftest import local_config

from autocompress.api import run_search
from autocompress.pipeline._artifact import load_artifact
from autocompress.policy import Policy
from autocompress.reporting.export import export_trial
from autocompress.study._polish_plan import (
    PolishSettings,
    pick_candidates,
    polish_reserve,
    with_polish,
)
from autocompress.study.budget import Budget
from autocompress.study.objectives import load_objectives
from autocompress.study.pareto import front
from autocompress.study.rundir import RunDir, read_jsonl
from autocompress.techniques.finetune import lr_factor

POLISH = {"candidates": 2, "epochs": 3, "warmup": 0.1}
KEEP = {"trials": 5, "report_every": 0, "keep_models": "all", "polish": POLISH}


@pytest.fixture(scope="module")
def polished(tmp_path_factory):
    run = tmp_path_factory.mktemp("polish") / "run"
    result = run_search(local_config(run, **KEEP))
    return run, result


def test_polished_figures_come_from_the_polished_artifact(polished):
    run, _ = polished
    rd, task = RunDir(run), mlp_task()
    polishes = rd.polishes()
    assert len(polishes) == 2
    searched = {r["number"]: r for r in rd.records()}
    for number, record in polishes.items():
        assert record["stage"] == "polish" and record["artifact"] == f"trials/{number}/polish"
        policy = Policy.from_dict(record["policy"])
        assert (policy.finetune.epochs, policy.finetune.schedule) == (3, "cosine")
        assert policy.finetune.warmup == 0.1 and len(record["epochs"]) == 3
        assert record["seed"] == searched[number]["seed"]  # re-trained as the trial was
        # the search-time record is kept as it was: 1 epoch, constant rate
        assert searched[number]["policy"]["finetune"]["epochs"] == 1
        assert "schedule" not in searched[number]["policy"]["finetune"]
        if record["state"] == "failed":
            continue
        model = load_artifact(run / record["artifact"], task.model)
        assert task.evaluate(model) == pytest.approx(record["metrics"]["accuracy"], abs=1e-9)
        on_disk = json.loads((run / record["artifact"] / "metrics.json").read_text())
        assert on_disk["size_bytes"] == record["metrics"]["size_bytes"]
        # costs apart: the polish's own seconds, and the search-time trial's
        assert record["duration_s"] > 0
        assert record["search_duration_s"] == searched[number]["duration_s"]


def test_the_front_pareto_json_report_and_export_use_the_polished_points(polished, tmp_path):
    run, result = polished
    rd = RunDir(run)
    doc = rd.read_pareto()
    polishes = rd.polishes()
    objectives = [(o["name"], o["direction"]) for o in doc["objectives"]]
    final = with_polish(rd.records(), polishes)
    expected = sorted(r["number"] for r in front(final, objectives, doc["teacher"]))
    assert sorted(t["number"] for t in doc["trials"]) == expected
    assert [t["number"] for t in result.pareto] == [t["number"] for t in doc["trials"]]
    assert doc["polish"]["trials"] == sorted(polishes)
    search_s = sum(r["duration_s"] for r in rd.records())
    assert doc["polish"]["search_s"] == pytest.approx(search_s, abs=1e-2)
    assert doc["polish"]["polish_s"] == pytest.approx(
        sum(p["duration_s"] for p in polishes.values()), abs=1e-2
    )
    shown = [t for t in doc["trials"] if t["polished"]]
    assert shown, "no polished point on the front"
    for point in shown:
        polish = polishes[point["number"]]
        assert point["metrics"]["accuracy"] == polish["metrics"]["accuracy"]
        search = {r["number"]: r for r in rd.records()}[point["number"]]
        assert point["search"]["metrics"]["accuracy"] == search["metrics"]["accuracy"]
        assert point["polish"]["duration_s"] == polish["duration_s"]
    assert all(not t["polished"] for t in doc["trials"] if t["number"] not in polishes)

    number = shown[0]["number"]
    metrics = export_trial(run, number, tmp_path / "out")
    assert metrics["accuracy"] == polishes[number]["metrics"]["accuracy"]
    assert json.loads((tmp_path / "out" / "policy.json").read_text())["finetune"]["epochs"] == 3
    assert 'id="polish"' in (run / "report.html").read_text()


def test_a_resumed_search_redoes_no_polish(polished):
    run, _ = polished
    before = (run / "polish.jsonl").read_text()
    run_search(local_config(run, **KEEP), resume=True)
    assert (run / "polish.jsonl").read_text() == before
    assert len(read_jsonl(run / "trials.jsonl")) == 5


def _record(number, accuracy, size, latency, *, prune=0.5):
    return {
        "number": number,
        "state": "complete",
        "policy": {"prune": {"default": prune}, "quant": {"default": 8}},
        "metrics": {"accuracy": accuracy, "size_bytes": size, "latency_ms": latency},
        "seed": number,
    }


def test_candidates_spread_over_size_and_latency_within_the_accuracy_margin():
    objectives = load_objectives("accuracy-size-latency")  # max_drop 0.05
    teacher = {"accuracy": 0.90, "size_bytes": 1000.0, "latency_ms": 1.0}
    records = [
        _record(0, 0.90, 1000.0, 1.0, prune=0.0) | {"policy": {}},  # the teacher: not polished
        _record(1, 0.89, 800.0, 0.9),  # the most accurate compressed ones
        _record(2, 0.885, 780.0, 0.88),
        _record(3, 0.80, 300.0, 0.7),  # within 3 x 0.05 of the teacher: the smallest
        _record(4, 0.82, 600.0, 0.3),  # the fastest
        _record(5, 0.70, 100.0, 0.1),  # 0.20 below: outside the margin
        _record(6, 0.86, 500.0, 0.5),
    ]
    pick = pick_candidates(records, objectives, teacher, PolishSettings(candidates=3))
    numbers = [r["number"] for r in pick]
    assert numbers[:2] == [3, 4]  # the extremes of size and latency first
    assert 0 not in numbers and 5 not in numbers
    # the third: the point farthest from those taken, not the next most accurate
    assert numbers[2] == 1
    wider = pick_candidates(records, objectives, teacher, PolishSettings(candidates=2, margin=5))
    # #5 now counts: the smallest and the fastest at once, then the farthest point from it
    assert [r["number"] for r in wider] == [5, 1]


def test_half_the_candidates_come_from_trials_that_meet_every_constraint():
    """Trials below the accuracy bound are a bet on recovery: at most half the slots go to
    them, the others to the front of the trials that already meet the bound."""
    objectives = load_objectives("accuracy-size-latency")  # max_drop 0.05
    teacher = {"accuracy": 0.90, "size_bytes": 1000.0, "latency_ms": 1.0}
    below = {"state": "infeasible"}
    records = [
        _record(1, 0.89, 800.0, 0.9),
        _record(2, 0.885, 780.0, 0.88),
        _record(3, 0.80, 300.0, 0.7) | below,  # 0.10 below: the smallest, infeasible
        _record(4, 0.82, 600.0, 0.3) | below,  # the fastest, infeasible
        _record(6, 0.86, 500.0, 0.5),
    ]
    numbers = [
        r["number"]
        for r in pick_candidates(records, objectives, teacher, PolishSettings(candidates=3))
    ]
    assert numbers[:2] == [6, 1]  # the smallest and fastest that meet the bound, then spread
    assert numbers[2] in (3, 4)  # one bet on a trial below it
    # without such trials the slots go to the others
    met = [r for r in records if r.get("state") == "complete"]
    picked = pick_candidates(met, objectives, teacher, PolishSettings(candidates=3))
    assert sorted(r["number"] for r in picked) == [1, 2, 6]


def test_warmup_then_cosine_and_linear_decay():
    assert [lr_factor(s, 10, schedule="constant", warmup=0.0) for s in range(3)] == [1.0] * 3
    cosine = [lr_factor(s, 10, schedule="cosine", warmup=0.2) for s in range(10)]
    assert cosine[0] < cosine[1] < cosine[2] == 1.0  # warm-up over 2 steps
    assert all(a > b for a, b in zip(cosine[2:], cosine[3:], strict=False)) and cosine[-1] < 0.05
    linear = [lr_factor(s, 4, schedule="linear", warmup=0.0) for s in range(4)]
    assert linear == [1.0, 0.75, 0.5, 0.25]


def test_schedule_fields_are_written_only_when_set():
    plain = Policy.from_dict({"finetune": {"epochs": 2}})
    assert set(plain.to_dict()["finetune"]) == {"lambda", "epochs", "lr"}  # as before
    scheduled = Policy.from_dict({"finetune": {"schedule": "cosine", "warmup": 0.1}})
    assert Policy.from_dict(scheduled.to_dict()) == scheduled
    assert scheduled.to_dict()["finetune"]["schedule"] == "cosine"


def test_a_budget_keeps_a_share_for_the_polish():
    twenty_left = time.monotonic() - 80.0  # a 100 s budget started 80 s ago
    assert not Budget(100.0, started=twenty_left).spent
    kept = Budget(100.0, started=twenty_left, reserve=25.0)
    assert kept.spent and kept.left() > 0  # the search's part is spent, the polish's is not


def test_the_polish_reserve_is_its_estimated_cost_at_most_the_share():
    def trial(n, seconds, epochs=1, state="complete"):
        policy = {"finetune": {"epochs": epochs}}
        return {"number": n, "state": state, "policy": policy, "duration_s": seconds}

    settings = PolishSettings()  # 3 candidates, 8x the trial's epochs
    few = [trial(0, 0.0, epochs=0), trial(1, 0.5), trial(2, 0.4)]
    assert polish_reserve(few, settings, 15.0) == 15.0  # too few trials measured: the share
    # identity (no training) and an infeasible trial do not count; median of 0.4, 0.5, 0.6
    measured = [*few, trial(3, 0.6), trial(4, 90.0, state="infeasible")]
    assert polish_reserve(measured, settings, 20.0) == pytest.approx(1.25 * 3 * 8 * 0.5 + 0.6)
    assert polish_reserve(measured, settings, 10.0) == 10.0  # never more than the share
    # a trial of 2 epochs polished for 8: scaled by 8 / 2
    two = [trial(n, 1.0, epochs=2) for n in range(3)]
    assert polish_reserve(two, PolishSettings(epochs=8), 99.0) == pytest.approx(1.25 * 3 * 4 + 1)


def test_a_polish_that_lost_accuracy_leaves_the_search_time_point():
    trial = _record(7, 0.95, 500.0, 0.5)
    better = {**_record(7, 0.97, 500.0, 0.52), "duration_s": 9.0, "artifact": "trials/7/polish"}
    worse = {**better, "metrics": {**better["metrics"], "accuracy": 0.94}}
    [polished] = with_polish([trial], {7: better})
    assert polished["polished"] and polished["metrics"]["accuracy"] == 0.97
    assert polished["search"]["metrics"]["accuracy"] == 0.95
    [kept] = with_polish([trial], {7: worse})
    assert not kept.get("polished") and kept["metrics"]["accuracy"] == 0.95
    assert kept["polish"]["kept"] == "search" and kept["polish"]["accuracy"] == 0.94
    # a polish that broke a constraint the trial met (here: re-timed too slow) leaves it too
    infeasible = {**better, "state": "infeasible", "error": "constraint latency broken"}
    [kept] = with_polish([trial], {7: infeasible})
    assert not kept.get("polished") and kept["state"] == "complete"
    assert kept["polish"]["kept"] == "search"


def test_a_search_without_fine_tuning_is_not_polished_by_default(tmp_path):
    """A post-training search (epochs 0) stays one: the default polish (8x the trial's
    epochs) has nothing to multiply; an explicit polish.epochs still polishes."""
    run_search(local_config(tmp_path / "ptq", epochs=0, trials=3, polish=True))
    assert not (tmp_path / "ptq" / "polish.jsonl").exists()
    pareto = json.loads((tmp_path / "ptq" / "pareto.json").read_text())
    assert not any(t.get("polished") for t in pareto["trials"])
