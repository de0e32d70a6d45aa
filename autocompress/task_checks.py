"""The task's inputs checked when the task is used, not only when a ``Task`` is built (a task
whose model or loader was replaced afterwards skips ``Task.__post_init__``).

Each check costs one batch: the model runs on ``example_inputs``; the loaders yield a batch
(the training loader when fine-tuning asks for it); the first training batch fits the task's
loss; the default metric (top-1 accuracy) gets integer class indices. Failures are one
:class:`TaskError` line naming the field at fault and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .errors import TaskError
from .task import Task, check_runs, run_model


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {tuple(value.shape)}"
    return type(value).__name__


def _first_batch(loader: Iterable, name: str, *, required: bool, why: str) -> Any:
    try:
        batch = next(iter(loader), None)
    except Exception as exc:
        raise TaskError(
            f"Task.{name} fails to yield a batch: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    if batch is None and required:
        raise TaskError(f"Task.{name} yielded no batch, but {why}: give it (inputs, targets)")
    if batch is not None and not (isinstance(batch, tuple | list) and len(batch) == 2):
        raise TaskError(f"Task.{name} must yield (inputs, targets) pairs, got {_describe(batch)}")
    return batch


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def is_class_index(targets: Any) -> bool:
    return isinstance(targets, torch.Tensor) and not (
        targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool
    )


def _outputs(task: Task, inputs: Any) -> Any:
    model = task.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return task.output_fn(run_model(model, inputs))
    finally:
        model.train(was_training)


def check_loss(task: Task, batch: Any) -> None:
    """The task's loss runs on the model's outputs for ``batch``; the default cross-entropy
    takes class indices (or class probabilities: float rows summing to 1)."""
    inputs, targets = batch
    out = _outputs(task, inputs)
    seen = f"outputs {_describe(out)}, targets {_describe(targets)}"
    if task.loss is None:
        name = "the task's loss (default: cross-entropy)"
        probabilities = (
            isinstance(targets, torch.Tensor)
            and isinstance(out, torch.Tensor)
            and targets.dtype.is_floating_point
            and targets.shape == out.shape
            and torch.allclose(targets.sum(dim=-1), torch.ones(()), atol=1e-3)
        )
        if not (is_class_index(targets) or probabilities):
            raise TaskError(
                f"{name} takes class indices, but the first training batch has {seen}: "
                "give Task(loss=...) that fits these targets (e.g. BCE with logits for "
                "multi-label targets)"
            )
    else:
        name = f"the task's loss ({getattr(task.loss, '__name__', type(task.loss).__name__)})"
    try:
        with torch.no_grad():
            task.task_loss(out, targets)
    except Exception as exc:
        raise TaskError(
            f"{name} fails on the first training batch ({seen}): {type(exc).__name__}: "
            f"{_first_line(exc)}; give Task(loss=...) that takes these outputs and targets"
        ) from exc


def check_default_metric(task: Task, batch: Any) -> None:
    """Top-1 accuracy needs one class index per output row, not float scores or labels."""
    if task.metric is not None:
        return
    inputs, targets = batch
    out = _outputs(task, inputs)
    if not is_class_index(targets) or (
        isinstance(out, torch.Tensor) and tuple(out.shape[:-1]) != tuple(targets.shape)
    ):
        raise TaskError(
            "the task's metric (default: top-1 accuracy) needs integer class indices, one per "
            f"output row, but the val_loader's first batch has outputs {_describe(out)}, "
            f"targets {_describe(targets)}: give Task(metric=...) for these targets"
        )


def check_task(task: Task, *, epochs: int = 0) -> None:
    """Every input of ``task`` checked on one batch; ``epochs`` > 0 needs training batches."""
    check_runs(task.model, task.example_inputs, what="the task's model")
    train = _first_batch(
        task.train_loader,
        "train_loader",
        required=epochs > 0,
        why=f"fine-tuning asks for {epochs} epoch(s)",
    )
    val = _first_batch(
        task.val_loader, "val_loader", required=True, why="the metric is computed on it"
    )
    if train is not None:
        check_loss(task, train)
    check_default_metric(task, val)


__all__ = ["check_default_metric", "check_loss", "check_task", "is_class_index"]
