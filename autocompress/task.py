"""The user's job: a trained teacher, its data, its metric, and how to read its outputs."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from autocompress.distill_losses import DISTILL_LOSSES
from autocompress.errors import TaskError

Batch = tuple[Any, torch.Tensor]


def _identity(outputs: Any) -> torch.Tensor:
    return outputs


def run_model(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` on one batch's inputs: a tensor, or a tuple/list of tensors."""
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def failing_module(model: nn.Module, inputs: Any) -> tuple[str, Exception] | None:
    """Run ``model`` once (eval mode, no grad); when it raises, the innermost module that was
    running and the exception, else None."""
    names = {id(m): p for p, m in model.named_modules()}
    running: list[str] = []
    hooks = []

    def enter(module: nn.Module, args: Any) -> None:
        running.append(names[id(module)])

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        running.pop()

    for m in model.modules():
        hooks += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            run_model(model, inputs)
    except Exception as exc:
        return (running[-1] if running else ""), exc
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return None


def check_runs(model: nn.Module, inputs: Any, *, what: str, hint: str = "") -> None:
    """Raise TaskError naming the module that fails on ``inputs`` (found by forward hooks)."""
    failed = failing_module(model, inputs)
    if failed is None:
        return
    path, exc = failed
    where = f"module {path!r} ({type(model.get_submodule(path)).__name__})" if path else "forward()"
    shapes = [tuple(t.shape) for t in inputs] if isinstance(inputs, tuple | list) else None
    message = str(exc).splitlines()[0] if str(exc) else ""
    raise TaskError(
        f"{what} fails on example_inputs {shapes} in {where}: {type(exc).__name__}: "
        f"{message}{hint or '; check example_inputs against what the model takes'}"
    )


def top1_accuracy(model: nn.Module, val_loader: Iterable[Batch], *, output_fn=_identity) -> float:
    """Fraction of batches' samples whose arg-max logit is the target."""
    correct = total = 0
    model.eval()
    with torch.inference_mode():
        for inputs, targets in val_loader:
            logits = output_fn(run_model(model, inputs))
            if targets.dtype.is_floating_point or logits.shape[:-1] != targets.shape:
                raise TaskError(
                    "the task's metric (default: top-1 accuracy) needs integer class indices, "
                    f"one per output row, got targets {targets.dtype} {tuple(targets.shape)} "
                    f"for outputs {tuple(logits.shape)}: give Task(metric=...)"
                )
            correct += int((logits.argmax(dim=-1) == targets).sum())
            total += int(targets.numel())
    if total == 0:
        raise TaskError("the task's val_loader yielded no samples")
    return correct / total


@dataclass
class Task:
    """A compression job.

    Args:
        model: the trained teacher.
        train_loader, val_loader: re-iterable ``(inputs, targets)`` batches. A list of batches
            or a sequential DataLoader (no shuffling, no random augmentation) lets teacher
            outputs be computed once and reused; other loaders run the teacher every batch.
        example_inputs: a tuple of tensors the model takes, used for latency and export.
        metric: ``(model, val_loader) -> float``, higher is better. Default: top-1 accuracy
            of ``output_fn(model(inputs))``.
        loss: ``(outputs, targets) -> scalar`` on ``output_fn`` outputs. Default cross-entropy.
        output_fn: maps raw model outputs to what loss, metric and distillation use
            (e.g. the pooled embedding of an encoder). Default: the outputs themselves.
        distill_kind: ``"logits"`` (softened-softmax KL) or ``"embedding"`` (the KD term is
            a feature loss between teacher and student ``output_fn`` outputs).
        feature_layers: module paths whose outputs the student matches to the teacher's.
        feature_loss: ``"mse"`` or ``"cosine"`` for feature matching.
        feature_weight: weight of the feature loss.
        output_layers: module paths never pruned; default: the last Linear/Conv executed.
        name: shown in reports.
        distill_loss: the distillation term on ``(student_out, teacher_out)``: a callable,
            or a built-in name: ``"kl"`` (softened-softmax KL on logits, with temperature),
            ``"bce"`` (multi-label sigmoid outputs: BCE against the teacher's
            probabilities), ``"bce-logits"`` (the same on logits), ``"mse"``, ``"cosine"``
            (regression, embeddings). Default:
            ``"kl"`` for ``distill_kind="logits"``, ``feature_loss`` for ``"embedding"``.

    Every ``nn.MultiheadAttention`` of ``model`` is replaced, in a copy, by an equivalent
    :class:`~autocompress.unpack.SplitMultiheadAttention` (separate q/k/v Linears, the same
    outputs on ``example_inputs``), and every Hugging Face ``Conv1D`` by the equivalent
    ``nn.Linear``, so heads can be pruned and projections quantized (``autocompress.unpack``);
    ``packed_attention`` holds the attention modules kept packed and why.
    """

    model: nn.Module
    train_loader: Iterable[Batch]
    val_loader: Iterable[Batch]
    example_inputs: tuple[torch.Tensor, ...]
    metric: Callable[[nn.Module, Iterable[Batch]], float] | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    output_fn: Callable[[Any], torch.Tensor] = _identity
    distill_kind: str = "logits"
    feature_layers: Sequence[str] = field(default_factory=tuple)
    feature_loss: str = "mse"
    feature_weight: float = 1.0
    output_layers: Sequence[str] | None = None
    name: str = "task"
    spec: str | None = None
    distill_loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    packed_attention: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise TaskError(f"Task.model must be a torch.nn.Module, got {type(self.model)!r}")
        if isinstance(self.example_inputs, torch.Tensor):
            self.example_inputs = (self.example_inputs,)
        if not all(isinstance(t, torch.Tensor) for t in self.example_inputs):
            raise TaskError("Task.example_inputs must be a tuple of tensors")
        if self.distill_kind not in ("logits", "embedding"):
            raise TaskError(
                f"Task.distill_kind must be 'logits' or 'embedding', got {self.distill_kind!r}"
            )
        if self.feature_loss not in ("mse", "cosine"):
            raise TaskError(
                f"Task.feature_loss must be 'mse' or 'cosine', got {self.feature_loss!r}"
            )
        if isinstance(self.distill_loss, str) and self.distill_loss not in DISTILL_LOSSES:
            raise TaskError(
                f"Task.distill_loss {self.distill_loss!r} is not a built-in; choose from "
                f"{', '.join(DISTILL_LOSSES)} or give a callable (student_out, teacher_out)"
            )
        if not (self.distill_loss is None or isinstance(self.distill_loss, str)) and not callable(
            self.distill_loss
        ):
            raise TaskError(
                "Task.distill_loss must be a built-in name or a callable (student_out, "
                f"teacher_out) -> loss, got {type(self.distill_loss).__name__}"
            )
        names = dict(self.model.named_modules())
        for field_name in ("feature_layers", "output_layers"):
            for path in getattr(self, field_name) or ():
                if path not in names:
                    raise TaskError(f"Task.{field_name} names {path!r}, not a module of the model")
        for loader_name in ("train_loader", "val_loader"):
            loader = getattr(self, loader_name)
            if hasattr(loader, "__len__") and len(loader) == 0:
                raise TaskError(f"Task.{loader_name} is empty: it must yield (inputs, targets)")
        check_runs(self.model, self.example_inputs, what="the task's model")
        self._unpack()

    def _unpack(self) -> None:
        from autocompress.unpack import unpack_checked

        # the teacher's figures are the user's own modules' (fused fast paths and all)
        self.original_model = self.model
        self.model, kept = unpack_checked(self.model, self.example_inputs)
        self._unpacked_model = self.model  # a model set on the task later has no original
        self.packed_attention = {**self.packed_attention, **kept}

    def evaluate(self, model: nn.Module) -> float:
        if self.metric is not None:
            return float(self.metric(model, self.val_loader))
        return top1_accuracy(model, self.val_loader, output_fn=self.output_fn)

    def task_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss is not None:
            return self.loss(outputs, targets)
        return F.cross_entropy(outputs, targets)


def _import_file(path: Path) -> Any:
    mod_name = "_autocompress_task_" + str(abs(hash(str(path.resolve()))))
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise TaskError(f"cannot import task file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        raise TaskError(f"task file {path} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def load_task(spec: str, *, base_dir: str | Path | None = None) -> Task:
    """Build a Task from ``path/to/file.py:function`` or ``package.module:function``.

    Relative file paths resolve against ``base_dir`` (default: the working directory).
    """
    if ":" not in spec:
        raise TaskError(
            f"task spec {spec!r} must look like 'file.py:function' or 'pkg.mod:function'"
        )
    target, func_name = spec.rsplit(":", 1)
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_absolute() and base_dir is not None and not path.exists():
            path = Path(base_dir) / path
        if not path.exists():
            raise TaskError(f"task file {target} does not exist (task spec {spec!r})")
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise TaskError(
                f"cannot import task module {target!r}: {type(exc).__name__}: {exc}"
            ) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise TaskError(f"task spec {spec!r}: {target} has no function {func_name!r}")
    try:
        task = func()
    except TaskError as exc:
        raise TaskError(f"task spec {spec!r}: {exc}") from None
    except Exception as exc:
        raise TaskError(
            f"task spec {spec!r}: {func_name}() raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(task, Task):
        raise TaskError(
            f"task spec {spec!r}: {func_name}() returned {type(task).__name__}, not a Task"
        )
    if task.spec is None:
        task.spec = spec
    try:
        check_task(task)  # the function may have replaced the model or a loader after building
    except TaskError as exc:
        raise TaskError(f"task spec {spec!r}: {exc}") from None
    return task


# -- the task's inputs, checked when the task is used ------------------------------------------
# Not only when a ``Task`` is built: a task whose model or loader was replaced afterwards skips
# ``Task.__post_init__``. Each check costs one batch: the model runs on ``example_inputs``; the
# loaders yield a batch (the training loader when fine-tuning asks for it); the first training
# batch fits the task's loss; the default metric (top-1 accuracy) gets class indices.


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
    if task.distill_loss == "bce" and isinstance(out, torch.Tensor):
        low, high = float(out.min()), float(out.max())
        if low < 0 or high > 1:
            raise TaskError(
                "Task.distill_loss 'bce' takes sigmoid outputs (probabilities), but the model's "
                f"outputs on the first training batch range over [{low:.3g}, {high:.3g}]: use "
                "'bce-logits' for logits"
            )


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
    """Every input of ``task`` checked on one batch; ``epochs`` > 0 needs training batches.
    The global RNG is left as it was (a shuffling loader draws from it)."""
    check_runs(task.model, task.example_inputs, what="the task's model")
    with torch.random.fork_rng(devices=[]):
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
