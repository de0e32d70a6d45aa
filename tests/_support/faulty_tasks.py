"""Task entry points that are wrong on purpose (``tests/_support/faulty_tasks.py:<name>``), for the
bad-input catalogue and the fault-injection suite; PYTHONPATH must hold tests/."""

from __future__ import annotations

import os
import time

import torch
from torch import nn
from torch.nn import functional as F

from _support.models import MLP, mlp_task
from autocompress import Task
from autocompress.measure.timing import count_params
from autocompress.task import top1_accuracy


def not_a_task():
    return {"model": "not a Task"}


def raises():
    raise RuntimeError("the data folder is missing")


class _WrongWidth(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(16, 10)  # expects 16 features, gets 32

    def forward(self, x):
        return self.head(self.body(x))


def _on_mlp_data(make) -> Task:
    """``make()``'s model (built after the MLP task) on the MLP task's data."""
    base = mlp_task(epochs=0)
    return Task(
        model=make(),
        train_loader=base.train_loader,
        val_loader=base.val_loader,
        example_inputs=base.example_inputs,
    )


def fails_on_example_inputs() -> Task:
    return _on_mlp_data(_WrongWidth)


class _Untraceable(nn.Module):
    """``w2`` is a bare parameter used through F.linear: pruning ``fc1`` cannot shrink it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.w2 = nn.Parameter(torch.randn(32, 32) * 0.1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(F.relu(F.linear(F.relu(self.fc1(x)), self.w2)))


def untraceable() -> Task:
    return _on_mlp_data(_Untraceable)


def empty_loader() -> Task:
    base = mlp_task(epochs=0)
    return Task(
        model=MLP(), train_loader=[], val_loader=base.val_loader, example_inputs=base.example_inputs
    )


def nan_loss() -> Task:
    """Fine-tuning a student diverges at once: every trained trial fails with 'diverged'."""
    task = mlp_task()
    task.loss = lambda out, y: F.cross_entropy(out, y) * float("nan")
    return task


def metric_failing_when_pruned(fail) -> Task:
    """The MLP task whose metric, for any pruned student (fewer parameters than the teacher),
    returns ``fail()`` (which may raise or end the process), and is top-1 accuracy otherwise."""
    task = mlp_task()
    full = count_params(task.model)

    def metric(model, val_loader) -> float:
        if count_params(model) < full:
            return fail()
        return top1_accuracy(model, val_loader)

    task.metric = metric
    return task


def _explode() -> None:
    raise RuntimeError("metric exploded on a pruned student")


def crash_in_metric() -> Task:
    """The metric raises for any pruned student (an exception inside a trial)."""
    return metric_failing_when_pruned(_explode)


def always_crash() -> Task:
    """The metric works once (the driver's teacher baseline), then raises: every trial fails."""
    task = mlp_task()
    calls = []

    def metric(model, val_loader) -> float:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("metric broken for every student")
        return 1.0

    task.metric = metric
    return task


def slow() -> Task:
    """Each training step sleeps: a trial with epochs >= 1 exceeds a small trial_timeout_s."""
    task = mlp_task()

    def loss(out, y):
        time.sleep(float(os.environ.get("AC_TEST_STEP_SLEEP", "0.05")))
        return F.cross_entropy(out, y)

    task.loss = loss
    return task


def dies_when_pruned() -> Task:
    """The metric kills its process for any pruned student (a worker killed under a trial)."""
    return metric_failing_when_pruned(lambda: os._exit(3))


def model_replaced() -> Task:
    """A good task whose model is swapped afterwards for one failing on example_inputs."""
    task = mlp_task(epochs=0)
    task.model = _WrongWidth()
    return task


def train_loader_emptied() -> Task:
    """A good task whose training loader is replaced afterwards by an empty one."""
    task = mlp_task(epochs=0)
    task.train_loader = []
    return task


def _multi_label(task: Task) -> Task:
    """The same inputs with multi-label float targets (several classes on at once)."""
    for loader in (task.train_loader, task.val_loader):
        for i, (x, _) in enumerate(loader):
            loader[i] = (x, (x[:, :10] > 0).float())
    return task


def float_targets() -> Task:
    """Multi-label float targets with the default loss and metric."""
    return _multi_label(mlp_task(epochs=0))


def float_targets_own_loss() -> Task:
    """Multi-label float targets with a fitting loss but the default metric."""
    task = _multi_label(mlp_task(epochs=0))
    task.loss = F.binary_cross_entropy_with_logits
    return task


def loss_fails_on_data() -> Task:
    """A loss for float targets given class indices."""
    task = mlp_task(epochs=0)
    task.loss = F.binary_cross_entropy_with_logits
    return task


def hard_coded_width() -> Task:
    """The classifier reads a reshape to a hard-coded width: its conv cannot be pruned."""
    from _support.models import hard_coded_width_task

    return hard_coded_width_task(epochs=0)
