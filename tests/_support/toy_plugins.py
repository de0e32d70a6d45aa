"""A toy importance criterion for the plug-in tests, registered as ``toy`` when imported.

``InverseMagnitude`` scores a weight 1 / (|w| + 0.001): the smallest weights matter most, the
opposite of ``magnitude``. On ``dead_unit_task`` (an MLP whose hidden unit 0 is all zeros) it
keeps unit 0, which ``magnitude`` (and ``taylor``) drop first: the kept rows of the pruned
layer show which criterion ran. Never a criterion to prune with.
"""

from __future__ import annotations

import torch

from _support.models import mlp_task
from autocompress import Importance, Task, register_importance

DEAD = 0  # the hidden unit of net.0 zeroed in dead_unit_task


class InverseMagnitude(Importance):
    needs_grad = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return 1.0 / (weight.detach().abs() + 1e-3)


def dead_unit_task() -> Task:
    """The MLP task with hidden unit ``DEAD`` of ``net.0`` dead (its row, bias and the column
    of ``net.2`` reading it are zero)."""
    task = mlp_task()
    with torch.no_grad():
        task.model.net[0].weight[DEAD] = 0.0
        task.model.net[0].bias[DEAD] = 0.0
        task.model.net[2].weight[:, DEAD] = 0.0
    return task


register_importance("toy", InverseMagnitude)
