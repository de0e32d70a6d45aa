from __future__ import annotations

import itertools

import pytest
from _support.models import cnn_task, encoder_task, mlp_task
from _support.study_inputs import ask_enqueued

from autocompress.api import search
from autocompress.errors import ConfigError
from autocompress.study.space import (
    GLOBAL_BITS,
    GLOBAL_PRUNE,
    HierarchicalSpace,
    SearchSpace,
    load_space,
    start_spec,
)


@pytest.fixture(scope="module")
def cnn():
    return cnn_task(epochs=0)


@pytest.fixture(scope="module")
def tasks(cnn):
    return [cnn, encoder_task(epochs=0), mlp_task(epochs=0)]


def _resolve(name, task):
    return load_space(name).resolve(task.model, task.example_inputs)


@pytest.mark.parametrize("name", ["refine", "uniform"])
def test_presets_round_trip(name):
    space = load_space(name)
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_refine_searches_a_global_level_and_offsets(cnn):
    space = _resolve("refine", cnn)
    assert isinstance(space, HierarchicalSpace)
    names = set(space.param_names)
    assert {GLOBAL_PRUNE, GLOBAL_BITS, "offset.prune.layer1", "offset.bits.fc"} <= names
    assert not any(n.startswith(("prune.", "bits.")) for n in names)
    uniform = {GLOBAL_PRUNE: 0.5, GLOBAL_BITS: 8}
    policy = space.policy_from_params(uniform)
    assert set(policy.prune_layers.values()) == {0.5}
    assert set(policy.quant_layers.values()) == {8}
    moved = space.policy_from_params(
        {**uniform, "offset.prune.layer1": 0.2, "offset.bits.fc": -1, "offset.bits.stem": 1}
    )
    layers = {layer.path: layer for layer in space.layers}
    # a layer takes the ratio of its coupled group's parameter (layer1.conv2 is tied to the
    # stem by the residual adds, so it follows prune.stem, not prune.layer1)
    raised = [p for p in moved.prune_layers if layers[p].prune_param == "prune.layer1"]
    assert raised
    for path, ratio in moved.prune_layers.items():
        assert ratio == pytest.approx(0.7 if path in raised else 0.5)
    assert moved.quant_layers["fc"] == 4 and moved.quant_layers["stem"] == 16
    # clipped to the rule's range (0..0.7) and bit-width choices
    top = space.policy_from_params(
        {GLOBAL_PRUNE: 0.7, GLOBAL_BITS: 4, "offset.prune.stem": 0.2, "offset.bits.stem": -1}
    )
    assert max(top.prune_layers.values()) == pytest.approx(0.7)
    assert min(top.quant_layers.values()) == 4
    assert space.param("prune.layer1").step == pytest.approx(0.1)  # the base parameter


@pytest.mark.parametrize("name", ["refine", "uniform"])
def test_uniform_baselines_enqueue_as_uniform_policies(name, tasks):
    for task, kind in itertools.product(tasks, ["identity", "prune30-int8", "prune70-int4"]):
        space = _resolve(name, task)
        params = space.params_for_policy(kind)
        assert set(params) == set(space.param_names)
        _, policy = ask_enqueued(space, params, seed=0)
        base = start_spec(kind)
        assert set(policy.quant_layers.values()) == {base.bits}
        pruned = {layer.path for layer in space.layers if layer.rule is not None}
        ratios = {r for p, r in policy.prune_layers.items() if p in pruned and r > 0}
        assert all(r == pytest.approx(base.prune) for r in ratios)


def test_baseline_names_and_errors():
    assert start_spec("prune70-int4").prune == pytest.approx(0.7)
    assert start_spec("int16").bits == 16 and start_spec("int16").prune == 0.0
    with pytest.raises(ConfigError, match="unknown start policy .prune50-int5'.*prune<NN>-int<B>"):
        start_spec("prune50-int5")
    with pytest.raises(ConfigError, match="hierarchy.bits_offsets: must contain 0"):
        SearchSpace.from_dict({"hierarchy": {"bits_offsets": [-1, 1]}}, source="s.yaml")
    with pytest.raises(ConfigError, match="hierarchy.step: unknown key"):
        SearchSpace.from_dict({"hierarchy": {"step": 1}}, source="s.yaml")


def test_search_starts_from_the_enqueued_uniform_policies(tmp_path):
    task = mlp_task(epochs=1)
    result = search(
        task,
        space="refine",
        objectives="accuracy-size",
        n_trials=3,
        starts=("prune50-int4", "int8"),
        backend="local",
        out=tmp_path / "run",
        epochs=0,
        report_every=0,
        polish=False,
    )
    by_number = {r["number"]: r for r in result.trials}
    assert by_number[0]["start"] == "prune50-int4"
    assert set(by_number[0]["policy"]["quant"]["layers"].values()) == {4}
    assert set(by_number[1]["policy"]["quant"]["layers"].values()) == {8}
    assert by_number[2]["start"] is None and GLOBAL_BITS in by_number[2]["params"]
    assert all(r["state"] == "complete" for r in result.trials)


def test_refine_quantizes_embedding_tables_with_the_global_bit_width():
    """A transformer's embedding tables (most of a small one's bytes) follow global.bits: 8 when
    the level is 4, 8 or 16 (their choices are 8 and 32), float at 32; never pruned."""
    from _support.models import bert_task

    space = _resolve("refine", bert_task(epochs=0))
    assert "offset.bits.bert.embeddings" in space.param_names
    tables = ("bert.embeddings.word_embeddings", "bert.embeddings.position_embeddings")
    for level, want in ((4, 8), (8, 8), (16, 8), (32, 32)):
        policy = space.policy_from_params({GLOBAL_PRUNE: 0.3, GLOBAL_BITS: level})
        assert {policy.quant_layers[t] for t in tables} == {want}, level
        assert {policy.prune_layers.get(t, 0.0) for t in tables} == {0.0}
