"""Fine-tuning: L = L_task (or the distillation loss) + λ·L2, fake-quant at the policy's bits."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from .distill import DistillLoss, FeatureTap, TeacherCache
from .errors import AutoCompressError
from .policy import Policy
from .quantize import ActivationQuant, add_fake_quant_, remove_fake_quant_
from .sparsify import apply_masks_
from .task import Task, run_model

EpochCallback = Callable[[int, nn.Module], None]


class DivergedError(AutoCompressError):
    """Fine-tuning produced a non-finite loss."""


def finetune_(
    student: nn.Module,
    task: Task,
    policy: Policy,
    bits: Mapping[str, int],
    *,
    teacher_cache: TeacherCache | None = None,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
    on_step: Callable[[], None] | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    act_quant: ActivationQuant | None = None,
) -> nn.Module:
    """Train ``student`` in place for ``policy.finetune.epochs`` epochs with quantization-aware
    fake-quant; seeded, without touching the global RNG. ``on_epoch(k, model)`` runs after
    each epoch with the fake-quant model (for per-epoch metrics and early stopping);
    ``on_step()`` after each batch (see ``gate``). ``masks`` (from ``sparsify_``) stay fixed:
    pruned weights are re-zeroed after every optimizer step. ``act_quant`` (already calibrated)
    fake-quantizes the inputs of the layers that the target runs on integer kernels."""
    epochs = policy.finetune.epochs
    if epochs == 0:
        return student
    cache = teacher_cache if teacher_cache is not None else TeacherCache(task)
    use_teacher = policy.distill.alpha < 1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        add_fake_quant_(student, bits)
        criterion = DistillLoss(
            task, alpha=policy.distill.alpha, temperature=policy.distill.temperature
        )
        feature_paths = task.feature_layers if use_teacher else ()
        tap = FeatureTap(student, feature_paths)
        act_hooks = act_quant.attach(student) if act_quant is not None else []
        optimizer = None
        try:
            for epoch in range(epochs):
                student.train()
                for index, (inputs, targets) in enumerate(task.train_loader):
                    tap.outputs.clear()
                    out = task.output_fn(run_model(student, inputs))
                    t_out, t_feats = (
                        cache.get(index, inputs, targets) if use_teacher else (None, {})
                    )
                    if optimizer is None:
                        criterion.prepare(tap.outputs, t_feats)
                        params = list(student.parameters()) + list(criterion.parameters())
                        optimizer = torch.optim.Adam(params, lr=policy.finetune.lr)
                    loss = criterion(out, t_out, targets, dict(tap.outputs), t_feats)
                    if policy.finetune.lambda_ > 0:
                        reg = sum((p * p).sum() for p in student.parameters())
                        loss = loss + policy.finetune.lambda_ * reg
                    if not torch.isfinite(loss):
                        raise DivergedError(
                            f"fine-tuning diverged: loss is {loss.item()} at epoch {epoch}, "
                            f"batch {index} (lower finetune.lr or raise finetune.lambda)"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if masks:
                        apply_masks_(student, masks)
                    if on_step is not None:
                        on_step()
                if on_epoch is not None:
                    student.eval()
                    on_epoch(epoch, student)
        finally:
            tap.close()
            for hook in act_hooks:
                hook.remove()
            remove_fake_quant_(student)
    student.eval()
    return student


__all__ = ["DivergedError", "finetune_"]
