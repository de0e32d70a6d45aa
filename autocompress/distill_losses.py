"""Built-in distillation terms on (student outputs, teacher outputs, temperature).

``kl`` (softened-softmax KL on logits, the only one that uses the temperature), ``bce``
(multi-label sigmoid outputs: BCE against the teacher's probabilities), ``bce-logits`` (the same
on logits), ``mse`` and ``cosine`` (regression, embeddings). ``Task(distill_loss=...)`` names one
or gives a callable on (student outputs, teacher outputs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F


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


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    return kd_loss(student, teacher, temperature)


def _bce(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multi-label sigmoid outputs (probabilities): BCE against the teacher's."""
    eps = 1e-6
    return F.binary_cross_entropy(student.clamp(eps, 1 - eps), teacher.clamp(0.0, 1.0))


def _bce_logits(student: torch.Tensor, teacher: torch.Tensor, temperature: float):
    """Multi-label logits (the sigmoid applied in the loss): BCE against sigmoid(teacher)."""
    return F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher))


# Built-in distillation terms on (student, teacher, temperature); only KL uses the temperature.
DISTILL_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "kl": _kl,
    "bce": _bce,
    "bce-logits": _bce_logits,
    "mse": lambda s, t, temperature: feature_loss(s, t, "mse"),
    "cosine": lambda s, t, temperature: feature_loss(s, t, "cosine"),
}
TEMPERATURE_LOSSES = frozenset({"kl"})


__all__ = ["DISTILL_LOSSES", "TEMPERATURE_LOSSES", "feature_loss", "kd_loss"]
