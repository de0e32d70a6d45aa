"""Every registered importance criterion, at every granularity it serves, and the registry.

The contract runs over ``IMPORTANCES`` as it stands when the tests are collected: a plug-in
registered by an imported module is checked like a built-in.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _support.models import encoder_task, mlp_task

from autocompress import Importance, register_importance
from autocompress.errors import ConfigError
from autocompress.study.config import SearchConfig
from autocompress.techniques import importance as registry
from autocompress.techniques.prune import prune_
from autocompress.techniques.sparsify import sparsify_

NAMES = sorted({*registry.IMPORTANCES, "toy"})  # the built-ins and a plug-in from a test


@pytest.fixture(scope="module", autouse=True)
def _toy_registered():
    """The toy criterion of ``_support.toy_plugins``, registered for this module (imported here,
    not at collection: other tests check the registry without it)."""
    from _support import toy_plugins

    register_importance("toy", toy_plugins.InverseMagnitude)
    yield toy_plugins
    registry.unregister_importance("toy")


def test_the_toy_criterion_is_covered(_toy_registered):
    assert "toy" in NAMES
    assert isinstance(registry.get_importance("toy"), _toy_registered.InverseMagnitude)


DEAD_UNIT = 5  # the hidden unit of net.0 zeroed in the MLP
DEAD_HEAD = 2  # the head of layers.0.attn zeroed in the encoder


def _grads(criterion: Importance) -> list[torch.Tensor | None]:
    """The gradients a criterion is called with: none, and a real one where it reads them."""
    grad = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    return [None, grad] if criterion.needs_grad else [None]


@pytest.mark.parametrize("name", NAMES)
def test_scores_have_the_weights_shape_are_finite_non_negative_and_deterministic(name):
    criterion = registry.IMPORTANCES[name]
    weight = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    for grad in _grads(criterion):
        scores = criterion(weight, grad)
        assert scores.shape == weight.shape
        assert torch.isfinite(scores).all() and (scores >= 0).all()
        assert not scores.requires_grad  # scores never carry a graph into the pruner
        assert torch.equal(scores, criterion(weight, grad))


@pytest.mark.parametrize("name", NAMES)
def test_a_zeroed_weight_scores_lowest(name):
    criterion = registry.IMPORTANCES[name]
    weight = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    weight[2, 3] = 0.0
    for grad in _grads(criterion):
        scores = criterion(weight, grad)
        assert scores[2, 3] == scores.min()


@pytest.fixture(scope="module")
def dead_unit_mlp():
    task = mlp_task(epochs=2)
    with torch.no_grad():
        task.model.net[0].weight[DEAD_UNIT] = 0.0
        task.model.net[0].bias[DEAD_UNIT] = 0.0
        task.model.net[2].weight[:, DEAD_UNIT] = 0.0
    return task


@pytest.fixture(scope="module")
def dead_head_encoder():
    task = encoder_task(n=64, epochs=1)
    attn = task.model.layers[0].attn
    rows = slice(DEAD_HEAD * attn.head_dim, (DEAD_HEAD + 1) * attn.head_dim)
    with torch.no_grad():
        for lin in (attn.q, attn.k, attn.v):
            lin.weight[rows] = 0.0
            lin.bias[rows] = 0.0
        attn.proj.weight[:, rows] = 0.0
    return task


@pytest.mark.parametrize("name", NAMES)
def test_unit_pruning_removes_the_zeroed_unit_first(name, dead_unit_mlp):
    student = copy.deepcopy(dead_unit_mlp.model)
    prune_(student, dead_unit_mlp, {"net.0": 1 / 64}, importance=name, protected=("net.4",))
    weight = student.net[0].weight
    assert weight.shape[0] == 63  # one unit went: the dead one, so no zero row is left
    assert (weight.abs().sum(dim=1) > 0).all()
    assert all(p.grad is None for p in student.parameters())  # gradients cleared after


@pytest.mark.parametrize("name", NAMES)
def test_head_pruning_removes_the_zeroed_head_first(name, dead_head_encoder):
    student = copy.deepcopy(dead_head_encoder.model)
    prune_(student, dead_head_encoder, {"layers.0.attn.q": 0.25}, importance=name)
    attn = student.layers[0].attn
    assert attn.num_heads == 3 and attn.q.out_features == 3 * attn.head_dim
    per_head = attn.q.weight.abs().reshape(3, attn.head_dim, -1).sum(dim=(1, 2))
    assert (per_head > 0).all()  # the zeroed head is the one that went
    out = student(dead_head_encoder.example_inputs[0])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_weight_pruning_removes_the_zeroed_weights_first(name, dead_unit_mlp):
    student = copy.deepcopy(dead_unit_mlp.model)
    zeros = student.net[4].weight.detach().reshape(-1) == 0  # none in the trained head
    flat = torch.randperm(zeros.numel(), generator=torch.Generator().manual_seed(2))[:12]
    with torch.no_grad():
        student.net[4].weight.view(-1)[flat] = 0.0
    ratio = 12 / zeros.numel()
    masks = sparsify_(student, dead_unit_mlp, {"net.4": ratio}, importance=name)
    kept = masks["net.4"].reshape(-1)
    assert not zeros.any() and not kept[flat].any() and int(kept.sum()) == zeros.numel() - 12


# -- the registry ----------------------------------------------------------------------------


def test_the_built_ins_are_registered_under_their_names():
    assert {"taylor", "magnitude"} <= set(registry.IMPORTANCES)
    assert (
        registry.IMPORTANCES["taylor"].needs_grad
        and not registry.IMPORTANCES["magnitude"].needs_grad
    )


def test_an_unknown_name_is_one_line_naming_it_and_the_known_names():
    with pytest.raises(ConfigError) as err:
        registry.get_importance("taylr")
    message = str(err.value)
    assert "'taylr'" in message and ", ".join(NAMES) in message and "\n" not in message
    with pytest.raises(ConfigError, match="'taylr'"):
        registry.check_importance("taylr")
    assert registry.check_importance("magnitude") == "magnitude"


def test_built_in_names_cannot_be_replaced_or_removed():
    with pytest.raises(ConfigError, match="'taylor' is built in"):
        register_importance("taylor", lambda w, g: w.abs())
    with pytest.raises(ConfigError, match="'magnitude' is built in"):
        registry.unregister_importance("magnitude")
    assert type(registry.IMPORTANCES["taylor"]).__name__ == "Taylor"


def test_functions_and_foreign_objects_are_criteria():
    class TorchPruningStyle:  # not an Importance: a callable with its own needs_grad
        needs_grad = True

        def __call__(self, weight, grad):
            return (weight * grad).abs()

    obj = registry.get_importance(TorchPruningStyle())
    assert obj.needs_grad and obj.name == "TorchPruningStyle"
    w, g = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 1.0])
    assert torch.equal(obj(w, g), torch.tensor([3.0, 2.0]))
    assert registry.check_importance(abs) is abs
    with pytest.raises(ConfigError, match="must be a registered name"):
        registry.get_importance(3)


def test_a_registered_plug_in_is_a_valid_config_value():
    with pytest.raises(ConfigError, match="importance: 'squared' is not a registered importance"):
        SearchConfig.from_dict({"name": "x", "task": "t.py:f", "importance": "squared"})

    @register_importance("squared")
    def squared(weight, grad):
        return weight.detach() ** 2

    try:
        assert registry.get_importance("squared").name == "squared"
        config = SearchConfig.from_dict({"name": "x", "task": "t.py:f", "importance": "squared"})
        assert config.importance == "squared"
    finally:
        registry.unregister_importance("squared")
    assert "squared" not in registry.IMPORTANCES
