"""A plug-in importance criterion used end to end from Python: by registered name and as an
object (Torch-Pruning style), through unit, head and weight pruning.

``toy`` (``_support.toy_plugins``, inverse magnitude) keeps the weak hidden unit that the
built-in criteria drop first: the pruned layer's rows show which criterion ran.
"""

from __future__ import annotations

import pytest
import torch
from _support.models import encoder_task

from autocompress import Policy, compress, register_importance
from autocompress.pipeline._compress import MeasureSettings
from autocompress.techniques.importance import IMPORTANCES, unregister_importance

QUICK = MeasureSettings(warmup=1, repeats=20)
POLICY = Policy.from_dict({"prune": {"layers": {"net.0": 0.25}}})  # 16 of 64 units go


@pytest.fixture(scope="module")
def toy_plugins():
    # imported here, not at collection: the contract tests see the registry without ``toy``
    from _support import toy_plugins

    unregister_importance("toy")  # its import registered it; the test registers it below
    return toy_plugins


@pytest.fixture(scope="module")
def weak(toy_plugins):
    return toy_plugins.weak_unit_task()


@pytest.fixture
def toy(toy_plugins):
    assert "toy" not in IMPORTANCES
    register_importance("toy", toy_plugins.InverseMagnitude)  # registered from inside the test
    yield IMPORTANCES["toy"]
    unregister_importance("toy")


def _keeps_the_weak_unit(model: torch.nn.Module, toy_plugins) -> bool:
    rows = model.net[0].weight.detach()
    assert rows.shape[0] == 48
    return toy_plugins.keeps_the_weak_unit(rows)


def test_the_toy_criterion_by_name_keeps_the_unit_magnitude_drops(weak, toy, toy_plugins):
    assert isinstance(toy, toy_plugins.InverseMagnitude)
    by_toy = compress(weak, POLICY, importance="toy", settings=QUICK)
    by_magnitude = compress(weak, POLICY, importance="magnitude", settings=QUICK)
    assert _keeps_the_weak_unit(by_toy.model, toy_plugins)
    assert not _keeps_the_weak_unit(by_magnitude.model, toy_plugins)
    assert by_toy.metrics["layers"]["net.0"]["channels_kept"] == 48
    # kept units in their order: the weak unit is the first row of the pruned layer
    kept = by_toy.model.net[0].weight[toy_plugins.WEAK].detach()
    assert torch.equal(kept, weak.model.net[0].weight[toy_plugins.WEAK].detach())


def test_a_criterion_object_is_used_where_a_name_is_accepted(weak, toy_plugins):
    class TorchPruningStyle:  # no base class, not registered: passed as the object itself
        needs_grad = True

        def __init__(self) -> None:
            self.grads: list[bool] = []

        def __call__(self, weight, grad):
            self.grads.append(grad is not None)
            return 1.0 / (weight.detach().abs() + 1e-3)

    obj = TorchPruningStyle()
    result = compress(weak, POLICY, importance=obj, settings=QUICK)
    assert _keeps_the_weak_unit(result.model, toy_plugins)
    assert any(obj.grads)  # it declared needs_grad: it got the gradients


def test_a_criterion_object_ranks_heads_and_single_weights():
    task = encoder_task(n=64, epochs=1)
    calls: list[tuple[int, ...]] = []

    def biggest_first(weight, grad):  # a plain function: the largest weights go first
        calls.append(tuple(weight.shape))
        return 1.0 / (weight.detach().abs() + 1e-3)

    policy = Policy.from_dict(
        {"prune": {"layers": {"layers.0.attn.q": 0.5}, "sparsity": {"layers": {"head": 0.5}}}}
    )
    result = compress(task, policy, importance=biggest_first, settings=QUICK)
    assert result.model.layers[0].attn.num_heads == 2
    assert (32, 32) in calls and (4, 32) in calls  # q/k/v rows scored, and the head's weights
    kept = result.model.head.weight.detach()
    teacher = task.model.head.weight.detach()
    dropped = teacher[kept == 0].abs()
    assert dropped.min() >= teacher[kept != 0].abs().max()  # the largest half went
