"""Knowledge distillation: L = α·L_task + (1−α)·L_KD, teacher outputs computed once and reused.

L_KD = T²·KL(softmax(t/T) ‖ softmax(s/T)) with ``reduction="batchmean"`` for logits, or a
feature loss (MSE / cosine) between teacher and student embeddings; optional feature matching
on named intermediate layers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, SequentialSampler

from .task import Task, run_model


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over the batch."""
    t = temperature
    return (t * t) * F.kl_div(
        F.log_softmax(student / t, dim=-1),
        F.log_softmax(teacher / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "cosine":
        return (1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)).mean()
    return F.mse_loss(student, teacher)


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


def _order_is_fixed(loader: Iterable) -> bool:
    """Lists and sequential DataLoaders repeat their batches; any random sampler does not."""
    if isinstance(loader, DataLoader):
        return loader.batch_sampler is not None and isinstance(loader.sampler, SequentialSampler)
    return isinstance(loader, list | tuple)


class TeacherCache:
    """Teacher outputs (and tapped features) per training batch, computed once.

    The cache is valid while the train loader yields its batches in a fixed order; with a
    shuffling DataLoader the teacher runs on every batch instead. ``computed_batches`` counts
    teacher forward passes, so sharing the cache across trials is observable.
    """

    def __init__(self, task: Task) -> None:
        self.task = task
        self.cacheable = _order_is_fixed(task.train_loader)
        self.outputs: list[torch.Tensor] = []
        self.features: list[dict[str, torch.Tensor]] = []
        self.computed_batches = 0
        self.hits = 0

    def _forward(self, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        teacher = self.task.model
        teacher.eval()
        tap = FeatureTap(teacher, self.task.feature_layers)
        try:
            with torch.no_grad():
                out = self.task.output_fn(run_model(teacher, inputs)).detach()
        finally:
            tap.close()
        self.computed_batches += 1
        return out, {k: v.detach() for k, v in tap.outputs.items()}

    def get(self, index: int, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.cacheable:
            return self._forward(inputs)
        if index < len(self.outputs):
            self.hits += 1
            return self.outputs[index], self.features[index]
        assert index == len(self.outputs), "batches must be requested in order"
        out, feats = self._forward(inputs)
        self.outputs.append(out)
        self.features.append(feats)
        return out, feats


class DistillLoss(nn.Module):
    """α·L_task + (1−α)·(L_KD + w·L_features); holds the training-only feature projections."""

    def __init__(self, task: Task, *, alpha: float, temperature: float) -> None:
        super().__init__()
        self.task = task
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
        if self.task.distill_kind == "logits":
            kd = kd_loss(student_out, teacher_out, self.temperature)
        else:
            kd = feature_loss(student_out, teacher_out, self.task.feature_loss)
        for path, s in student_feats.items():
            s = self._project(path, s)
            kd = kd + self.task.feature_weight * feature_loss(
                s, teacher_feats[path], self.task.feature_loss
            )
        return self.alpha * task_term + (1 - self.alpha) * kd
