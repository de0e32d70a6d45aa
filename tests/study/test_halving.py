"""Multi-objective successive halving: the ladder's promotion rule on synthetic points, the
config's ``scheduler: halving``, and a real tiny local search climbing the rungs."""

from __future__ import annotations

import json

import pytest
from _support.models import cnn_task, mlp_task
from conftest import local_config

from autocompress.api import run_search
from autocompress.errors import ConfigError
from autocompress.pipeline.options import CompressOptions
from autocompress.policy import Policy
from autocompress.study._rungs import RUNG0_DISTILL_STEPS, rung0_estimate
from autocompress.study.config import SearchConfig
from autocompress.study.halving import HalvingLadder, HalvingSpec, crowding, ranked
from autocompress.study.samplers import SCHEDULERS, halving_spec


def _climb(spec: HalvingSpec, points: dict[int, tuple[float, ...]], *, top: int = 2):
    """Every point entered and reported at rung 0: (promoted numbers, stopped numbers)."""
    ladder = HalvingLadder(spec)
    for n, p in points.items():
        ladder.enter(n, top=top)
        ladder.add(n, 0, p)
    ladder.close()
    promoted = []
    while (job := ladder.next_job()) is not None:
        promoted.append(job)
    return promoted, [s.number for s in ladder.take_stopped()]


def test_non_dominated_rank_promotes_not_accuracy_alone():
    # (-accuracy, size, latency): 0 and 1 are big, slow and accurate; 3 is small, fast, less
    # accurate; accuracy alone would send 0 and 1 up
    points = {
        0: (-0.90, 100.0, 10.0),
        1: (-0.89, 100.0, 10.0),  # dominated by 0
        2: (-0.88, 100.0, 10.0),
        3: (-0.80, 20.0, 2.0),
        4: (-0.70, 50.0, 5.0),  # dominated by 3
        5: (-0.60, 100.0, 10.0),
    }
    promoted, stopped = _climb(HalvingSpec(rungs=(0, 1, "full"), eta=3), points)
    assert sorted(promoted) == [(0, 1), (3, 1)]  # ceil(6 / 3) = 2: the rung's front
    assert sorted(stopped) == [1, 2, 4, 5]


def test_crowding_distance_breaks_ties_within_a_front():
    line = {0: (-0.90, 100.0), 1: (-0.85, 60.0), 2: (-0.84, 58.0), 3: (-0.70, 20.0)}
    spread = crowding(line, [0, 1, 2, 3])
    assert spread[0] == spread[3] == float("inf") and spread[2] > spread[1]
    assert [k for k, _ in ranked(line)] == [3, 0, 2, 1]  # the ends by exclusive hypervolume
    promoted, stopped = _climb(HalvingSpec(rungs=(0, 1, "full"), eta=2), line)  # bracket of 4
    assert sorted(promoted) == [(0, 1), (3, 1)] and sorted(stopped) == [1, 2]
    # three objectives, three points, each an end of the front (crowding infinite for all):
    # the largest exclusive hypervolume goes first, not the earliest trial
    ends = {0: (0.0, 1.0, 1.0), 1: (1.0, 0.0, 1.0), 2: (0.2, 0.2, 0.0)}
    assert set(crowding(ends, [0, 1, 2]).values()) == {float("inf")}
    assert ranked(ends)[0] == (2, 0)


def test_brackets_decide_once_every_member_reported_and_climb_to_the_top():
    ladder = HalvingLadder(HalvingSpec(rungs=(0, 1, "full"), eta=2))  # brackets of 4
    for n in range(4):
        ladder.enter(n, top=2)
    for n in range(3):
        ladder.add(n, 0, (-0.5 - n / 10, 10.0))
    assert ladder.next_job() is None and ladder.busy  # #3 has not reported
    ladder.add(3, 0, None)  # failed: reached the rung, never goes up
    jobs = [ladder.next_job(), ladder.next_job(), ladder.next_job()]
    assert jobs == [(1, 1), (2, 1), None]
    assert [s.number for s in ladder.take_stopped()] == [0]
    ladder.add(2, 1, (-0.9, 10.0))
    ladder.add(1, 1, (-0.8, 10.0))
    assert ladder.next_job() == (2, 2)
    assert [s.number for s in ladder.take_stopped()] == [1]
    ladder.enter(4, top=2)  # a new bracket: undecided until it fills or closes
    ladder.add(4, 0, (-0.1, 1.0))
    assert ladder.next_job() is None
    ladder.close()
    assert ladder.next_job() == (4, 1)  # a bracket of one: its trial climbs


def test_an_untrusted_proxy_rung_promotes_every_trial_and_later_rungs_still_cut():
    ladder = HalvingLadder(HalvingSpec(rungs=(0, 1, "full"), eta=2), rung0_ranks=False)
    for n, point in enumerate([(-0.9, 9.0), (-0.8, 1.0), (-0.1, 9.0), (-0.2, 9.5)]):
        ladder.enter(n, top=2)
        ladder.add(n, 0, point)
    assert sorted(ladder.next_job() for _ in range(4)) == [(0, 1), (1, 1), (2, 1), (3, 1)]
    assert not ladder.take_stopped() and not ladder.ranked(0, 0)
    for n, point in enumerate([(-0.9, 9.0), (-0.85, 1.0), (-0.5, 9.0), (-0.6, 9.5)]):
        ladder.add(n, 1, point)
    assert sorted(ladder.next_job() for _ in range(2)) == [(0, 2), (1, 2)]
    assert ladder.ranked(0, 1) and sorted(s.number for s in ladder.take_stopped()) == [2, 3]
    # trusted again (the search measured it), the next bracket's rung 0 cuts
    ladder.rung0_ranks = True
    for n, point in enumerate([(-0.9, 9.0), (-0.8, 1.0), (-0.1, 9.0), (-0.2, 9.5)], start=4):
        ladder.enter(n, top=2)
        ladder.add(n, 0, point)
    assert sorted(ladder.next_job() for _ in range(2)) == [(4, 1), (5, 1)]
    assert ladder.ranked(4, 0) and sorted(s.number for s in ladder.take_stopped()) == [6, 7]


def test_rung0_ranks_by_zero_shot_with_batchnorm_and_by_distillation_without():
    policy = Policy.from_dict({"prune": {"default": 0.5}, "finetune": {"epochs": 0}})
    options = CompressOptions.of()
    measured = {"accuracy": 0.25, "bn_recalibrated": {"layers": 2}}
    cnn = cnn_task(n=128, epochs=1)
    assert rung0_estimate(cnn, policy, options, {}, measured=measured) == (
        0.25,
        "zero-shot, BatchNorm recalibrated",
    )
    accuracy, name = rung0_estimate(mlp_task(), policy, options, {}, measured={"accuracy": 0.25})
    assert name == f"distill-{RUNG0_DISTILL_STEPS}" and 0.0 <= accuracy <= 1.0


def test_a_trial_whose_full_budget_is_a_lower_rung_stops_climbing_there():
    spec = HalvingSpec(rungs=(0, 1, "full"), eta=3)
    assert [spec.epochs(r, 4) for r in range(3)] == [0, 1, 4]
    assert spec.top(4) == 2 and spec.top(1) == 1 and spec.top(0) == 0
    assert spec.bracket == 9


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        ({"name": "halving", "eta": 1}, "scheduler.eta"),
        ({"name": "halving", "rungs": [0, 1]}, "scheduler.rungs"),
        ({"name": "halving", "rungs": [1, 0, "full"]}, "must increase"),
        ({"name": "halving", "rungs": ["one", "full"]}, "integer >= 0"),
        ({"name": "halving", "rung": [0, "full"]}, "scheduler.rung; halving takes rungs, eta"),
        ({"rungs": [0, "full"]}, "scheduler.name"),
    ],
)
def test_bad_rungs_or_eta_are_one_line_naming_the_key(scheduler, expected):
    with pytest.raises(ConfigError, match="scheduler") as err:
        SearchConfig.from_dict({"name": "x", "task": "t.py:f", "scheduler": scheduler})
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_halving_is_a_registered_scheduler_with_options():
    assert "halving" in SCHEDULERS
    assert halving_spec("halving") == HalvingSpec()
    assert halving_spec({"name": "halving", "rungs": [0, 2, "full"], "eta": 2}) == HalvingSpec(
        rungs=(0, 2, "full"), eta=2
    )
    assert halving_spec("asha") is None


def test_local_halving_search_front_holds_only_fully_trained_trials(tmp_path):
    cfg = local_config(
        tmp_path / "run",
        trials=6,
        epochs=2,
        starts=["identity"],
        report_every=0,
        scheduler={"name": "halving", "rungs": [0, 1, "full"], "eta": 3},
    )
    result = run_search(cfg)
    records = {r["number"]: r for r in result.trials}
    assert sorted(records) == list(range(6))  # trials: counts proposals, one record each
    sampled = [r for r in records.values() if r["start"] is None]
    assert all(r["rungs"] and r["rungs"][0]["epochs"] == 0 for r in sampled)
    # the MLP has no BatchNorm: rung 0 ranks by a short distillation, not the zero-shot artifact
    assert all(r["rungs"][0]["estimator"] == f"distill-{RUNG0_DISTILL_STEPS}" for r in sampled)
    assert all(0.0 <= r["rungs"][0]["accuracy"] <= 1.0 for r in sampled)
    # rung 0 is a proxy not yet validated (fewer than 6 pairs): it ranked nobody, every
    # sampled trial went to rung 1, and the pairs measured on the way are kept
    assert all(r["rungs"][0]["ranked"] is False and len(r["rungs"]) >= 2 for r in sampled)
    trust = json.loads((tmp_path / "run" / "halving.json").read_text())
    assert trust["rung0_trust"]["pairs"] == len(sampled) and not trust["rung0_trust"]["trusted"]
    assert sorted(a for a, _ in trust["pairs"]) == sorted(
        r["rungs"][0]["accuracy"] for r in sampled
    )
    stopped = [r for r in sampled if r["state"] == "pruned"]
    full = [r for r in sampled if r["state"] != "pruned"]
    assert stopped and full
    for r in stopped:
        last = r["rungs"][-1]
        assert r["stopped_at_rung"] == last["rung"] < 2 and r["ranked_by"] == last
        assert "successive halving" in r["error"] and "non-dominated rank" in r["error"]
        assert r["policy"]["finetune"]["epochs"] == last["epochs"]  # what ran, not what was asked
    climbed = [r for r in full if r["state"] == "complete"]
    for r in climbed:
        assert [e["epochs"] for e in r["rungs"]] == [0, 1, 2]
        assert r["ranked_by"]["rung"] == 1 and r["policy"]["finetune"]["epochs"] == 2
        assert r["metrics"]["accuracy"] == r["rungs"][-1]["accuracy"]
    pareto = json.loads((tmp_path / "run" / "pareto.json").read_text())
    front = {t["number"] for t in pareto["trials"]}
    assert front and front <= {r["number"] for r in climbed} | {0}
    assert front.isdisjoint(r["number"] for r in stopped)
    report = (tmp_path / "run" / "report.html").read_text()
    assert '<table id="halving">' in report and "stopped there" in report


def test_a_withdrawn_promotion_lets_its_rung_decide_without_it():
    ladder = HalvingLadder(HalvingSpec(rungs=(0, 1, "full"), eta=2))
    for n, point in enumerate([(-0.9, 9.0), (-0.8, 1.0), (-0.1, 9.0), (-0.2, 9.5)]):
        ladder.enter(n, top=2)
        ladder.add(n, 0, point)
    assert sorted([ladder.next_job(), ladder.next_job()]) == [(0, 1), (1, 1)]
    ladder.take_stopped()
    ladder.withdraw(1)  # e.g. the budget is spent: #1 will not run at rung 1
    ladder.add(0, 1, (-0.95, 9.0))
    assert ladder.next_job() == (0, 2) and not ladder.take_stopped()
    ladder.add(0, 2, (-0.97, 9.0))
    assert not ladder.busy
