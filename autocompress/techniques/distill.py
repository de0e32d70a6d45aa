"""Knowledge distillation: L = α·L_task + (1−α)·L_KD, teacher outputs computed once and reused.

L_KD = T²·KL(softmax(t/T) ‖ softmax(s/T)) with ``reduction="batchmean"`` for logits, or a
feature loss (MSE / cosine) between teacher and student embeddings, or the task's own
``distill_loss`` (a built-in of ``DISTILL_LOSSES``: BCE for multi-label sigmoid outputs, ...,
or a callable); optional feature matching on named intermediate layers. Only KL uses T.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

from autocompress.distill_losses import (
    DISTILL_LOSSES,
    TEMPERATURE_LOSSES,
    feature_loss,
    kd_loss,
)
from autocompress.task import Task, run_model


def distill_loss_of(task: Task) -> str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task's distillation term: its ``distill_loss``, else the default of its kind."""
    if task.distill_loss is not None:
        return task.distill_loss
    return "kl" if task.distill_kind == "logits" else task.feature_loss


def distill_term(task: Task, student, teacher, temperature: float) -> torch.Tensor:
    kind = distill_loss_of(task)
    if isinstance(kind, str):
        return DISTILL_LOSSES[kind](student, teacher, temperature)
    return kind(student, teacher)


def unused_globals(task: Task) -> dict[str, str]:
    """Global dimensions the task's distillation cannot use, each with the reason."""
    kind = distill_loss_of(task)
    if isinstance(kind, str) and kind in TEMPERATURE_LOSSES:
        return {}
    shown = repr(kind) if isinstance(kind, str) else getattr(kind, "__name__", "a callable")
    return {
        "distill.temperature": f"the task's distillation ({shown}) uses no temperature, "
        "only a KL term does"
    }


class FeatureTap:
    """Records the outputs of named modules during a forward pass."""

    def __init__(self, model: nn.Module, paths: Sequence[str]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self._hooks = [
            modules[p].register_forward_hook(lambda m, i, o, p=p: self.outputs.__setitem__(p, o))
            for p in paths
        ]

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


_RANDOM_SAMPLERS = (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)


def _order_is_fixed(loader: Iterable) -> bool:
    """Lists and DataLoaders without a known random sampler may repeat their batches.

    A DataLoader given a ``batch_sampler`` reports a SequentialSampler as its ``sampler``:
    look at the batch sampler's own sampler. What cannot be seen here (a custom batch
    sampler, random augmentation in the dataset) the per-batch fingerprints catch."""
    if isinstance(loader, DataLoader):
        if isinstance(loader.batch_sampler, BatchSampler):
            return not isinstance(loader.batch_sampler.sampler, _RANDOM_SAMPLERS)
        return loader.batch_sampler is not None and not isinstance(loader.sampler, _RANDOM_SAMPLERS)
    return isinstance(loader, list | tuple)


def _checksum(value: Any) -> Any:
    """Shape, dtype and two sums (one position-weighted, so a permutation shows) per tensor."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().reshape(-1).double()
        weights = torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64)
        return (tuple(value.shape), str(value.dtype), float(flat.sum()), float(flat @ weights))
    if isinstance(value, tuple | list):
        return tuple(_checksum(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _checksum(v)) for k, v in sorted(value.items()))
    return repr(value)


def fingerprint(inputs: Any, targets: Any) -> tuple:
    """A cheap fingerprint of one batch: what a cached teacher output must have been made on."""
    return (_checksum(inputs), _checksum(targets))


class TeacherCache:
    """Teacher outputs (and tapped features) per training batch, computed once.

    Each cached batch keeps a fingerprint of its inputs and targets, checked on every hit: a
    loader that does not repeat its batches (shuffling, random augmentation) gets the teacher
    recomputed for the batches that changed and one warning. A DataLoader with a known
    random sampler is not cached at all. ``computed_batches`` counts teacher forward passes,
    so sharing the cache across trials is observable.
    """

    def __init__(self, task: Task, *, feature_layers: Sequence[str] | None = None) -> None:
        self.task = task
        self.feature_layers = tuple(
            task.feature_layers if feature_layers is None else feature_layers
        )
        self.cacheable = _order_is_fixed(task.train_loader)
        self.outputs: list[torch.Tensor] = []
        self.features: list[dict[str, torch.Tensor]] = []
        self.fingerprints: list[tuple] = []
        self.computed_batches = 0
        self.hits = 0
        self.mismatches = 0
        self.device = torch.device("cpu")
        self._teacher: nn.Module | None = None  # the teacher's copy on ``device``

    def to(self, device: torch.device) -> TeacherCache:
        """Keep the cached outputs on ``device`` and run the teacher there (a copy of it);
        fingerprints stay those of the CPU batches that ``get`` is given."""
        from autocompress.device import to_device

        device = torch.device(device)
        if device != self.device:
            self.outputs = [to_device(o, device) for o in self.outputs]
            self.features = [to_device(f, device) for f in self.features]
            self.device = device
            self._teacher = None
        return self

    def _model(self) -> nn.Module:
        if self.device.type == "cpu":
            return self.task.model
        if self._teacher is None:
            import copy

            self._teacher = copy.deepcopy(self.task.model).to(self.device)
        return self._teacher

    def _forward(self, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from autocompress.device import to_device

        teacher = self._model()
        teacher.eval()
        inputs = to_device(inputs, self.device) if self.device.type != "cpu" else inputs
        tap = FeatureTap(teacher, self.feature_layers)
        try:
            with torch.no_grad():
                out = self.task.output_fn(run_model(teacher, inputs)).detach()
        finally:
            tap.close()
        self.computed_batches += 1
        return out, {k: v.detach() for k, v in tap.outputs.items()}

    def get(
        self, index: int, inputs: Any, targets: Any = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.cacheable:
            return self._forward(inputs)
        mark = fingerprint(inputs, targets)
        if index < len(self.outputs):
            if self.fingerprints[index] == mark:
                self.hits += 1
                return self.outputs[index], self.features[index]
            self._mismatch(index)
            self.outputs[index], self.features[index] = self._forward(inputs)
            self.fingerprints[index] = mark
            return self.outputs[index], self.features[index]
        assert index == len(self.outputs), "batches must be requested in order"
        out, feats = self._forward(inputs)
        self.outputs.append(out)
        self.features.append(feats)
        self.fingerprints.append(mark)
        return out, feats

    def _mismatch(self, index: int) -> None:
        self.mismatches += 1
        if self.mismatches == 1:
            warnings.warn(
                f"training batch {index} differs from the one the teacher's output was cached "
                "for: your loader is not deterministic (shuffling or random augmentation); "
                "the teacher is recomputed for changed batches",
                stacklevel=3,
            )

    def state(self) -> tuple[list, list, list]:
        """What to ship to another process (see :meth:`load_state`): CPU tensors."""
        self.to(torch.device("cpu"))
        return self.outputs, self.features, self.fingerprints

    def load_state(self, state: tuple[list, list, list]) -> None:
        if self.cacheable:
            self.outputs, self.features, self.fingerprints = (list(part) for part in state)

    def fill(self) -> TeacherCache:
        """Compute the teacher's outputs for every training batch now."""
        if self.cacheable:
            for index, (inputs, targets) in enumerate(self.task.train_loader):
                self.get(index, inputs, targets)
        return self


class DistillLoss(nn.Module):
    """α·L_task + (1−α)·(L_KD + w·L_features); holds the training-only feature projections.

    The feature term is an addition to the base L = α·L_CE + (1−α)·L_KD: w is the policy's
    ``distill.feature_weight`` (``feature_weight``), else the task's."""

    def __init__(
        self, task: Task, *, alpha: float, temperature: float, feature_weight: float | None = None
    ) -> None:
        super().__init__()
        self.task = task
        self.feature_weight = task.feature_weight if feature_weight is None else feature_weight
        self.alpha = alpha
        self.temperature = temperature
        self.proj = nn.ModuleDict()

    def prepare(self, student_feats: dict[str, torch.Tensor], teacher_feats: dict) -> None:
        """Create 1×1 projections where the pruned student's feature width differs."""
        for path, s in student_feats.items():
            t = teacher_feats[path]
            key = path.replace(".", "__")
            if s.shape != t.shape and key not in self.proj:
                self.proj[key] = nn.Linear(s.shape[1], t.shape[1], bias=False)

    def _project(self, path: str, s: torch.Tensor) -> torch.Tensor:
        key = path.replace(".", "__")
        if key not in self.proj:
            return s
        return self.proj[key](s.movedim(1, -1)).movedim(-1, 1)

    def forward(self, student_out, teacher_out, targets, student_feats, teacher_feats):
        task_term = self.task.task_loss(student_out, targets)
        if self.alpha >= 1.0:
            return task_term
        kd = distill_term(self.task, student_out, teacher_out, self.temperature)
        for path, s in student_feats.items():
            s = self._project(path, s)
            kd = kd + self.feature_weight * feature_loss(
                s, teacher_feats[path], self.task.feature_loss
            )
        return self.alpha * task_term + (1 - self.alpha) * kd


__all__ = [
    "DISTILL_LOSSES",
    "DistillLoss",
    "FeatureTap",
    "TeacherCache",
    "distill_loss_of",
    "distill_term",
    "feature_loss",
    "fingerprint",
    "kd_loss",
    "unused_globals",
]
