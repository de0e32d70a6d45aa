"""A toy importance criterion for the plug-in tests, registered as ``toy`` when imported (the
CLI's task module imports it, so ``apply --importance toy`` finds it); picked up by the
importance contract test and used end to end (``docs/extending.md``). The toy metric and
sampler are in ``_support.toy_registries``.

``InverseMagnitude`` scores a non-zero weight 1 / (|w| + 0.001) and a zero weight 0: the
smallest live weights matter most, the opposite of ``magnitude``, while a removed (zero)
weight still scores lowest, as the importance contract asks of every criterion. On
``weak_unit_task`` (an MLP whose hidden unit 0 is scaled down to almost nothing) it keeps unit 0,
which ``magnitude`` (and ``taylor``) drop first: the kept rows of the pruned layer show which
criterion ran. Never a criterion to prune with.
"""

from __future__ import annotations

import torch

from _support.models import mlp_task
from autocompress import Importance, Task, register_importance

WEAK = 0  # the hidden unit of net.0 scaled down in weak_unit_task


class InverseMagnitude(Importance):
    needs_grad = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        w = weight.detach().abs()
        return torch.where(w == 0, torch.zeros_like(w), 1.0 / (w + 1e-3))  # a zero: nothing


WEAK_SCALE = 1e-3  # the weak unit's weights, relative to what training gave it
WEAK_ROW_SUM = 0.1  # a row of net.0 whose |weights| sum below this is the weak unit


def weak_unit_task() -> Task:
    """The MLP task with hidden unit ``WEAK`` of ``net.0`` scaled down to almost nothing (its
    row, bias and the column of ``net.2`` reading it times ``WEAK_SCALE``): the smallest unit
    by magnitude (and by Taylor), the largest by the toy's inverse magnitude."""
    task = mlp_task()
    with torch.no_grad():
        task.model.net[0].weight[WEAK] *= WEAK_SCALE
        task.model.net[0].bias[WEAK] *= WEAK_SCALE
        task.model.net[2].weight[:, WEAK] *= WEAK_SCALE
    return task


def keeps_the_weak_unit(rows: torch.Tensor) -> bool:
    """Whether the pruned ``net.0`` weight ``rows`` still hold the weak unit."""
    return bool((rows.detach().abs().sum(dim=1) < WEAK_ROW_SUM).any())


register_importance("toy", InverseMagnitude)
