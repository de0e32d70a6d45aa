"""Property-based: random per-group and per-layer ratios always give a model that runs,
reloads, and whose records say what was done."""

from __future__ import annotations

import copy
import math
from functools import cache

import pytest
import torch
from _support.models import FAMILIES
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from autocompress import Policy
from autocompress.analysis.layers import _tensors
from autocompress.pipeline._compress import resolve_policy
from autocompress.study.space import load_space
from autocompress.targets import get_target
from autocompress.targets._torch import structure_diff
from autocompress.techniques.prune import prune_, prune_records

PROPERTY_FAMILIES = [
    "grouped-concat",
    "resnext",
    "mobilenet-v2-se",
    "bert",
    "time-major",
    "hard-coded-width",
]
SETTINGS = settings(
    max_examples=6,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking re-prunes for minutes
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
ratio = st.floats(min_value=0.0, max_value=0.95, allow_nan=False)


@cache
def prepared(family: str):
    task = FAMILIES[family](epochs=0)
    space = load_space("default").resolve(task.model, task.example_inputs)
    return task, space


def pruned(task, policy: Policy, tmp_path):
    """Prune, save, reload; the reloaded model must give the pruned model's outputs."""
    tgt = get_target("torch")
    resolved = resolve_policy(task, policy, tgt)
    student = copy.deepcopy(task.model)
    groups = prune_(student, task, resolved.prune, protected=resolved.protected, batches=1)
    student.eval()
    path = tmp_path / "model.pt"
    bits = {p: 32 for p in resolved.bits}
    tgt.save(student, path, bits=bits, structure=structure_diff(task.model, student), meta={})
    loaded = tgt.load(path, task.model)
    with torch.no_grad():
        for a, b in zip(
            _tensors(loaded(*task.example_inputs)),
            _tensors(student(*task.example_inputs)),
            strict=True,
        ):
            assert torch.allclose(a, b, atol=1e-4)
    return prune_records(task.model, student, resolved.prune, groups), resolved


def expected_removed(r: float, channels: int) -> int:
    """Nearest whole count to ``r · channels`` (ties down), at least one channel kept."""
    return min(channels - 1, max(0, math.ceil(r * channels - 0.5)))


@pytest.mark.parametrize("family", PROPERTY_FAMILIES)
@SETTINGS
@given(data=st.data())
def test_random_group_ratios_run_and_are_recorded(family, data, tmp_path):
    task, space = prepared(family)
    params = {
        name: data.draw(ratio, label=name)
        for name in space.param_names
        if name.startswith("prune.")
    }
    records, _ = pruned(task, space.policy_from_params(params), tmp_path)
    by_param = {layer.path: layer.prune_param for layer in space.layers}
    for unit in space.units:
        recs = [records[p] for p in unit.layers if p in records]
        param = by_param.get(unit.layers[0])
        if unit.reason is not None or param is None:
            assert all(r["prune"] == 0.0 for r in recs if unit.kind == "channels"), unit.name
            continue
        assert {r["prune_group_ratio"] for r in recs} == {params[param]}
        assert all(r["channels_kept"] >= 1 for r in recs)
        if unit.kind == "heads":
            heads = unit.size
            drop = max(0, min(heads - 1, round(params[param] * heads)))
            assert [r["prune"] for r in recs] == pytest.approx([drop / heads] * len(recs))
        elif not unit.grouped:
            widths = {records[p]["channels_original"] for p in unit.layers}
            if widths == {unit.size}:
                removed = expected_removed(params[param], unit.size)
                assert {records[p]["channels_kept"] for p in unit.layers} == {unit.size - removed}


@pytest.mark.parametrize("family", ["grouped-concat", "bert"])
@SETTINGS
@given(data=st.data())
def test_random_layer_ratios_take_each_groups_largest(family, data, tmp_path):
    task, space = prepared(family)
    outputs = {layer.path for layer in space.layers if layer.is_output}
    layer_ratios = {
        layer.path: data.draw(ratio, label=layer.path)
        for layer in space.layers
        if layer.path not in outputs and layer.type != "Embedding"  # tables take bits only
    }
    records, resolved = pruned(task, Policy(prune_layers=layer_ratios), tmp_path)
    for unit in space.units:
        members = [p for p in unit.layers if p in layer_ratios]
        if unit.reason is not None or not members:
            continue
        largest = max(layer_ratios[p] for p in members)
        for p in members:
            assert records[p]["prune_requested"] == layer_ratios[p]
            assert records[p]["prune_group_ratio"] == largest
