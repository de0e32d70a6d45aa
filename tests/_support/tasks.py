"""Task entry points for CLI tests (``tests/_support/tasks.py:cnn``); PYTHONPATH must hold tests/."""

from __future__ import annotations

import math

from _support.faulty_tasks import metric_failing_when_pruned
from _support.models import cnn_task, mlp_task
from autocompress import Task


def cnn() -> Task:
    return cnn_task(epochs=2)


def mlp() -> Task:
    return mlp_task()


def mlp_nan_when_pruned() -> Task:
    """An MLP task whose metric is NaN for any pruned student: those trials must fail."""
    return metric_failing_when_pruned(lambda: math.nan)


def mlp_padded() -> Task:
    """An MLP teacher carrying a 50 MB buffer that is not saved with its weights (a stand-in
    for a big teacher): what Ray checkpoints must not grow with it."""
    import torch

    task = mlp_task()
    task.model.register_buffer("padding", torch.ones(50 * 2**20 // 4), persistent=False)
    return task


def mlp_with_toy_importance() -> Task:
    """``toy_plugins.weak_unit_task``; loading it registers the ``toy`` importance criterion
    (the task file imports the plug-in module), so ``apply --importance toy`` can name it."""
    from _support import toy_plugins

    return toy_plugins.weak_unit_task()
