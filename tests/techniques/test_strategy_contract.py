"""Every registered pruning strategy, on real models: a working model and its records.

The contract runs over ``STRATEGIES`` as it stands when the tests are collected.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _support.models import cnn_task, encoder_task

from autocompress import Policy, compress
from autocompress.errors import ConfigError
from autocompress.pipeline._compress import MeasureSettings, resolve_policy
from autocompress.study.space import load_space
from autocompress.targets import get_target
from autocompress.techniques.strategies import (
    STRATEGIES,
    StrategyRun,
    get_strategy,
    strategy_of_param,
)

NAMES = list(STRATEGIES)
QUICK = MeasureSettings(warmup=1, repeats=20)
TASKS = {"encoder": lambda: encoder_task(n=64, epochs=1), "cnn": lambda: cnn_task(n=64, epochs=1)}


@pytest.fixture(scope="module", params=sorted(TASKS))
def task(request):
    return TASKS[request.param]()


@pytest.mark.parametrize("name", NAMES)
def test_a_strategy_alone_changes_the_student_and_it_still_runs(name, task):
    strategy = STRATEGIES[name]
    policy = Policy.from_dict(strategy.example(task))
    request = strategy.resolve(task, policy, resolve_policy(task, policy, get_target("torch")))
    assert request, f"{name}: its example policy asks nothing of {task.name}"
    student = copy.deepcopy(task.model)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    torch.manual_seed(0)
    result = strategy.apply(student, request, StrategyRun(task, student, "taylor", ("fc", "head")))
    after = student.state_dict()
    changed = set(before) != set(after) or any(
        before[k].shape != after[k].shape or not torch.equal(before[k], after[k]) for k in before
    )
    assert changed, f"{name} left {task.name} as it was"
    x = task.example_inputs[0]
    out, ref = student(x), task.model(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    metrics = {"layers": {path: {} for path, _ in student.named_modules() if path}}
    strategy.record(metrics, StrategyRun(task, student), request, result)
    for key in strategy.metric_keys:
        assert key in metrics, f"{name}: no {key} in the records"
    for key in strategy.layer_keys:
        assert any(key in rec for rec in metrics["layers"].values()), f"{name}: no layer {key}"


@pytest.mark.parametrize("name", NAMES)
def test_compress_with_a_strategy_writes_a_working_artifact_and_its_records(name, task, tmp_path):
    strategy = STRATEGIES[name]
    result = compress(task, Policy.from_dict(strategy.example(task)), settings=QUICK)
    m = result.metrics
    assert 0.0 <= m["accuracy"] <= 1.0 and m["size_bytes"] > 0
    for key in strategy.metric_keys:
        assert key in m
    for key in strategy.layer_keys:
        assert any(key in rec for rec in m["layers"].values())
    out = result.model(task.example_inputs[0])
    assert torch.isfinite(out).all()


def test_the_strategies_apply_in_order_structure_unit_weight():
    assert NAMES[:3] == ["structure", "unit", "weight"]
    assert get_strategy("unit").space_prefix == "prune."
    with pytest.raises(ConfigError, match="unknown pruning strategy 'units'; choose from"):
        get_strategy("units")


def test_every_searched_pruning_parameter_belongs_to_a_strategy():
    task = encoder_task(n=64, epochs=1)
    for space, prefix in (
        ("default", "prune."),
        ("unstructured", "sparsity."),
        ("layerdrop", "drop."),
    ):
        resolved = load_space(space).resolve(task.model, task.example_inputs)
        names = [p.name for p in resolved.params if p.name.startswith(prefix)]
        assert names, space
        assert {strategy_of_param(n).space_prefix for n in names} == {prefix}
        baseline = resolved.params_for_policy("prune30-int8")
        for n in names:
            strategy = strategy_of_param(n)
            expected = 0.3 if strategy.name == "unit" else strategy.neutral
            assert baseline[n] == resolved.param(n).nearest(expected)
    assert strategy_of_param("bits.fc1") is None
