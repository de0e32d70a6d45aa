"""The measured start (``baselines: [identity, auto]``): bit-widths measured before training,
prune ratios by bisection, the plan continued on resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from _support.models import cnn_task

from autocompress.api import run_search
from autocompress.errors import ConfigError
from autocompress.study._start import (
    StartPlan,
    auto_count,
    kept_bits,
    lr_students,
    space_levels,
    uniform_name,
)
from autocompress.study._start_lr import choose_lr
from autocompress.study.config import SearchConfig
from autocompress.study.rundir import RunDir
from autocompress.study.space import load_space, start_spec
from autocompress.targets import get_target

TESTS = Path(__file__).resolve().parents[1]
RATIOS = tuple(round(0.1 * i, 1) for i in range(8))


def _walk(plan: StartPlan, accuracy) -> list[str]:
    """Run the plan to its end, each start finishing at once with ``accuracy(name)``."""
    results: dict[str, float | bool | None] = {}
    while (name := plan.next(results, asked=len(results))) is not None:
        results[name] = accuracy(name)
    return list(results)


def test_bisection_finds_the_largest_ratio_within_the_allowed_drop():
    def accuracy(name: str) -> float | bool:  # holds up to 50 % pruning, then collapses
        ratio = 0.0 if name.startswith("int") else int(name[5:7]) / 100
        return 0.95 - 0.01 * ratio if ratio <= 0.5 else False

    plan = StartPlan(bits=(4,), ratios=RATIOS, k=10, tolerance=0.05)
    assert _walk(plan, accuracy) == ["int4", "prune40-int4", "prune60-int4", "prune50-int4"]


def test_bisection_goes_down_when_the_accuracy_drops_too_far():
    def accuracy(name: str) -> float:
        return 0.90 if name == "int8" else 0.80  # every pruned ratio loses 10 points

    plan = StartPlan(bits=(8,), ratios=RATIOS, k=10, tolerance=0.05)
    assert _walk(plan, accuracy) == ["int8", "prune40-int8", "prune20-int8", "prune10-int8"]


def test_plan_takes_bit_widths_in_turn_and_stops_at_k():
    plan = StartPlan(bits=(4, 8), ratios=RATIOS, k=6, tolerance=0.05)
    names = _walk(plan, lambda name: 0.9)
    assert names == ["int4", "prune40-int4", "prune60-int4", "prune70-int4", "int8", "prune40-int8"]


def test_a_running_start_makes_its_bit_width_wait_and_the_next_one_step():
    plan = StartPlan(bits=(4, 8), ratios=RATIOS, k=6, tolerance=0.05)
    assert plan.next({"int4": None}, asked=1) == "int8"
    assert plan.next({"int4": None, "int8": None}, asked=2) is None  # the sampler proposes
    assert plan.next({"int4": False, "int8": 0.9}, asked=2) == "prune40-int8"  # int4 failed


def _depth_accuracy(name: str) -> float | bool:
    """Two blocks per stage drop too many; one holds up to 50 % pruning, none up to 70 %."""
    spec = start_spec(name)
    if spec.depth >= 2:
        return False
    return 0.95 if spec.prune <= (0.5 if spec.depth else 0.7) + 1e-9 else 0.5


def test_the_start_crosses_depth_with_bits_deepest_holding_depth_first():
    plan = StartPlan(bits=(4, 8), ratios=RATIOS, k=8, tolerance=0.05, depths=(0, 1, 2))
    assert _walk(plan, _depth_accuracy) == [
        "int4",  # the reference: unpruned, undropped
        "drop1-int4",  # holds: one deeper
        "drop2-int4",  # fails: drop1 is the deepest that holds
        "drop1-prune40-int4",
        "drop1-prune60-int4",
        "drop1-prune50-int4",
        "prune60-int4",  # depth 0 starts above 0.5: what holds at depth 1 holds here
        "prune70-int4",
    ]
    assert len(_walk(dataclasses.replace(plan, k=30), _depth_accuracy)) == 16  # then int8
    assert "drop2-prune50-int8" in plan.names() and len(plan.names()) == 2 * 8 * 3


def test_depth_is_judged_against_the_unpruned_undropped_trial():
    plan = StartPlan(bits=(4,), ratios=RATIOS, k=10, tolerance=0.05, depths=(0, 1))
    results = {"int4": 0.95, "drop1-int4": 0.91, "drop1-prune40-int4": 0.89}
    # 0.89 is within 0.05 of drop1-int4 but not of int4: it fails, so the ratio goes down
    assert plan.next(results, asked=3) == "drop1-prune20-int4"
    assert plan.next({"int4": 0.95, "drop1-int4": None}, asked=2) is None  # waits for it
    assert plan.next({"int4": 0.95, "drop1-int4": 0.80}, asked=2) == "prune40-int4"


def test_a_plan_written_before_depth_reads_back_as_depth_zero():
    old = {"bits": [4], "ratios": list(RATIOS), "k": 6, "tolerance": 0.05}
    plan = StartPlan.from_dict(old)
    assert plan.depths == (0,) and StartPlan.from_dict(plan.to_dict()) == plan
    assert _walk(plan, lambda name: 0.9)[0] == "int4"
    assert uniform_name(0.5, 4, 1) == "drop1-prune50-int4" and uniform_name(0.0, 8, 2) == (
        "drop2-int8"
    )
    spec = start_spec("drop1-prune50-int4")
    assert (spec.depth, spec.prune, spec.bits) == (1, 0.5, 4)
    assert start_spec("prune50-int4").depth == 0


def test_kept_bits_drops_what_a_smaller_bit_width_matches():
    points = [
        {"bits": 4, "accuracy": 0.980, "size_bytes": 100, "latency_ratio": 1.00},
        {"bits": 8, "accuracy": 0.982, "size_bytes": 200, "latency_ratio": 1.70},  # slower
        {"bits": 16, "accuracy": 0.990, "size_bytes": 400, "latency_ratio": 1.00},
        {"bits": 32, "accuracy": 0.990, "size_bytes": 800, "latency_ratio": 1.00},
    ]
    assert kept_bits(points) == [4, 16]  # 8 matched by 4 (within half a point); 32 by 16
    points[0]["accuracy"] = 0.90  # 4 bits lose 8 points before training: 8 bits stay
    assert kept_bits(points) == [4, 8, 16]


def test_auto_names_and_levels_of_the_refine_space():
    assert auto_count("auto") == 8 and auto_count("auto3") == 3 and auto_count("int8") is None
    with pytest.raises(ConfigError, match="auto0"):
        SearchConfig.from_dict({"name": "x", "task": "t.py:f", "baselines": ["auto0"]})
    SearchConfig.from_dict({"name": "x", "task": "t.py:f", "baselines": ["identity", "auto4"]})
    task = cnn_task(epochs=0)
    space = load_space("refine").resolve(
        task.model, task.example_inputs, supported_bits=get_target("torch").bits
    )
    ratios, widths = space_levels(space)
    assert ratios == list(RATIOS) and widths == [4, 8, 16, 32]
    assert uniform_name(0.0, 4) == "int4" and uniform_name(0.3, 8) == "prune30-int8"


def test_search_with_a_measured_start_records_and_resumes_it(tmp_path):
    data = {
        "name": "cnn-auto",
        "task": str(TESTS / "_support" / "tasks.py") + ":cnn",
        "search_space": "refine",
        "objectives": "accuracy-size-latency",
        "trials": 4,
        "seed": 0,
        "backend": "local",
        "epochs": 1,
        "tracking": False,
        "report_every": 0,
        "baselines": ["identity", "auto2"],
        "polish": False,
        "out": str(tmp_path / "run"),
    }
    run_search(SearchConfig.from_dict(data))
    start = json.loads((tmp_path / "run" / "start.json").read_text())
    assert [p["bits"] for p in start["bit_widths"]] == [4, 8, 16, 32]
    for point in start["bit_widths"]:
        assert point["size_bytes"] > 0 and 0.0 <= point["accuracy"] <= 1.0
    assert start["kept_bits"] and start["seconds"] >= 0
    # the cnn's two plain-attribute residual blocks, one per stage: depth levels 0 and 1
    assert start["plan"]["depths"] == [0, 1]
    assert start["stages"] == {"<model>": ["layer1"], "<model>#2": ["layer2"]}
    records = RunDir(tmp_path / "run").records()
    first = f"int{start['kept_bits'][0]}"
    assert [r["start"] for r in records[:2]] == ["identity", first]
    quant = records[1]["policy"]["quant"]
    assert set(quant["layers"].values()) <= {start["kept_bits"][0]}, quant  # uniform
    assert quant["layers"] or quant["default"] == start["kept_bits"][0]
    starts = [r["start"] for r in records[1:] if r["start"] is not None]
    assert len(starts) <= 2  # auto2: at most two measured starts
    # the fine-tuning rate: the space's (1e-3) and a tenth, on the first student unpruned
    # (seed 0) and pruned at the bisection's first ratio (seed 1)
    lr = start["lr"]
    pruned = f"prune40-int{start['kept_bits'][0]}"
    assert lr["students"] == [first, pruned] and lr["epochs"] == 1 and lr["space_lr"] == 1e-3
    assert sorted((r["lr"], r["student"], r["seed"]) for r in lr["runs"]) == [
        (1e-4, first, 0), (1e-4, pruned, 1), (1e-3, first, 0), (1e-3, pruned, 1)
    ]  # fmt: skip
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in lr["runs"])
    assert lr["chosen"] == choose_lr(lr["runs"], 1e-3)[0]
    trained = [r["policy"]["finetune"] for r in records if r["start"] != "identity"]
    assert trained and {f["lr"] for f in trained} == {lr["chosen"]}
    # resume: the bit-width pass is read back, not measured again; the plan goes on
    before = (tmp_path / "run" / "start.json").read_text()
    run_search(SearchConfig.from_dict({**data, "trials": 6}), resume=True)
    assert (tmp_path / "run" / "start.json").read_text() == before
    assert [r["number"] for r in RunDir(tmp_path / "run").records()] == list(range(6))


def test_the_learning_rate_pass_measures_an_unpruned_and_a_pruned_student():
    ratios = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert lr_students(ratios, [8, 4, 16]) == ("int4", "prune40-int4")
    assert lr_students([0.0, 0.5], [8]) == ("int8", "prune50-int8")
    assert lr_students([0.0], [8]) == ("int8",)  # nothing to prune: one student


def test_the_learning_rate_is_the_largest_within_the_tie_of_the_best_mean():
    def runs(**accuracy):
        return [
            {"lr": float(k[2:].replace("_", "-")), "seed": i, "accuracy": a}
            for k, pair in accuracy.items()
            for i, a in enumerate(pair)
        ]

    # a tenth of the rate clearly better on average (one seed of the high rate scattered low)
    assert choose_lr(runs(lr1e_3=(0.735, 0.687), lr1e_4=(0.726, 0.739)), 1e-3)[0] == 1e-4
    # within the tie: the larger rate (it recovers pruned students faster)
    assert choose_lr(runs(lr1e_3=(0.990, 0.988), lr1e_4=(0.991, 0.988)), 1e-3)[0] == 1e-3
    # a rate whose fine-tune failed is not chosen; nothing measured: the space's rate
    failed = runs(lr1e_3=(0.9, 0.9)) + [{"lr": 1e-4, "seed": 0, "error": "boom"}]
    assert choose_lr(failed, 1e-3)[0] == 1e-3
    assert choose_lr([{"lr": 1e-4, "seed": 0, "error": "boom"}], 1e-3) == (1e-3, {})
    # a student that failed at every rate does not void the other's measurement
    both = [
        {"lr": 1e-3, "student": "int4", "seed": 0, "accuracy": 0.70},
        {"lr": 1e-4, "student": "int4", "seed": 0, "accuracy": 0.74},
        {"lr": 1e-3, "student": "prune40-int4", "seed": 1, "error": "boom"},
        {"lr": 1e-4, "student": "prune40-int4", "seed": 1, "error": "boom"},
    ]
    assert choose_lr(both, 1e-3) == (1e-4, {1e-3: 0.70, 1e-4: 0.74})
    # a rate that failed for one student is not chosen, however well it did on the other
    both[2] = {**both[2], "accuracy": 0.99}
    both[2].pop("error")
    assert choose_lr(both, 1e-3)[0] == 1e-3 and set(choose_lr(both, 1e-3)[1]) == {1e-3}
