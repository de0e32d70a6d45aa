"""Fine-tuning: L = L_task (or the distillation loss) + λ·L2, fake-quant at the policy's bits.

The learning rate follows ``policy.finetune.schedule``: ``constant`` (the search's short
fine-tunes), or a linear warm-up over ``finetune.warmup`` of the steps then a ``cosine`` or
``linear`` decay to zero (the polish stage's long fine-tune), stepped once per batch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Collection, Mapping, Sequence

import torch
from torch import nn

from autocompress.device import CPU, Training, to_device
from autocompress.errors import AutoCompressError
from autocompress.policy import Policy
from autocompress.task import Task, run_model
from autocompress.techniques.distill import DistillLoss, FeatureTap, TeacherCache
from autocompress.techniques.quantize import ActivationQuant, add_fake_quant_, remove_fake_quant_
from autocompress.techniques.scope import Freeze, select_parameters
from autocompress.techniques.sparsify import apply_masks_

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
    train_modules: Collection[str] | None = None,
    feature_layers: Sequence[str] | None = None,
    training: Training = CPU,
) -> nn.Module:
    """Train ``student`` in place for ``policy.finetune.epochs`` epochs with quantization-aware
    fake-quant; seeded, without touching the global RNG. ``on_epoch(k, model)`` runs after
    each epoch with the fake-quant model (for per-epoch metrics and early stopping);
    ``on_step()`` after each batch (see ``gate``). ``masks`` (from ``sparsify_``) stay fixed:
    pruned weights are re-zeroed after every optimizer step. ``act_quant`` (already calibrated)
    fake-quantizes the inputs of the layers that the target runs on integer kernels.
    ``train_modules`` (see ``scope``): only their own parameters train, the rest (and their
    normalization statistics) stay fixed. ``feature_layers`` override the task's.
    ``training``: the student must already be on its device; batches and the teacher's outputs
    are moved there, the forward pass autocasts to its precision, and ``on_epoch`` sees the
    student on the CPU (where the task's metric runs)."""
    epochs = policy.finetune.epochs
    if epochs == 0:
        return student
    limit, done = policy.finetune.steps, 0  # finetune.steps: at most that many optimizer steps
    use_teacher = policy.distill.alpha < 1.0
    paths = tuple(task.feature_layers if feature_layers is None else feature_layers)
    if policy.distill.feature_weight == 0 or not use_teacher:
        paths = ()
    cache = teacher_cache if teacher_cache is not None else TeacherCache(task)
    if not set(paths) <= set(cache.feature_layers):
        cache = TeacherCache(task, feature_layers=paths)  # this trial's own feature taps
    device = training.device
    cache.to(device)
    if not training.on_cpu and isinstance(task.loss, nn.Module):  # e.g. a class-weighted loss
        task = copy.copy(task)
        task.loss = copy.deepcopy(task.loss).to(device)
    scaler = training.scaler()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        add_fake_quant_(student, bits)
        criterion = DistillLoss(
            task,
            alpha=policy.distill.alpha,
            temperature=policy.distill.temperature,
            feature_weight=policy.distill.feature_weight,
        )
        tap = FeatureTap(student, paths)
        trained = (
            list(student.parameters())
            if train_modules is None
            else select_parameters(student, train_modules)
        )
        unfreeze = Freeze(student, trained, train_modules)
        act_hooks = act_quant.attach(student) if act_quant is not None else []
        optimizer = None
        scheduler = None
        try:
            for epoch in range(epochs):
                if limit is not None and done >= limit:
                    break
                student.train()
                unfreeze.fix_norms()
                for index, (inputs, targets) in enumerate(task.train_loader):
                    if limit is not None and done >= limit:
                        break  # a partial epoch: on_epoch still sees it
                    done += 1
                    tap.outputs.clear()
                    batch = (inputs, targets)  # on the CPU: what the teacher cache checks
                    if not training.on_cpu:
                        inputs, targets = to_device(batch, device)
                    with training.autocast():
                        out = task.output_fn(run_model(student, inputs))
                    t_out, t_feats = cache.get(index, *batch) if use_teacher else (None, {})
                    if optimizer is None:
                        criterion.prepare(tap.outputs, {p: t_feats[p] for p in tap.outputs})
                        criterion.to(device)
                        params = trained + list(criterion.parameters())
                        optimizer = torch.optim.Adam(params, lr=policy.finetune.lr)
                        total = _steps(task, epochs)  # decays over finetune.steps when fewer
                        total = total if limit is None else min(total, limit)
                        scheduler = lr_schedule(optimizer, policy, total)
                    feats = {p: t_feats[p] for p in tap.outputs}
                    if not training.on_cpu or training.precision != "fp32":
                        # the loss in fp32 outside autocast (BCE refuses autocast on CUDA)
                        out = _float(out)
                        t_out, feats = _float(t_out), {p: _float(f) for p, f in feats.items()}
                    loss = criterion(out, t_out, targets, _float(dict(tap.outputs)), feats)
                    if policy.finetune.lambda_ > 0:
                        reg = sum((p * p).sum() for p in trained)
                        loss = loss + policy.finetune.lambda_ * reg
                    if not torch.isfinite(loss):
                        raise DivergedError(
                            f"fine-tuning diverged: loss is {loss.item()} at epoch {epoch}, "
                            f"batch {index} (lower finetune.lr or raise finetune.lambda)"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is None:
                        loss.backward()
                        optimizer.step()
                    else:
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                    if scheduler is not None:
                        scheduler.step()
                    if masks:
                        apply_masks_(student, masks)
                    if on_step is not None:
                        on_step()
                if on_epoch is not None:
                    student.eval()
                    if training.on_cpu:
                        on_epoch(epoch, student)
                    else:  # the metric runs where the target measures: on the CPU
                        student.to("cpu")
                        on_epoch(epoch, student)
                        student.to(device)
        finally:
            unfreeze()
            tap.close()
            for hook in act_hooks:
                hook.remove()
            remove_fake_quant_(student)
    student.eval()
    return student


def lr_factor(step: int, total: int, *, schedule: str, warmup: float) -> float:
    """The learning rate's multiplier at ``step`` of ``total``: a linear warm-up over the
    first ``warmup`` of the steps, then a ``cosine`` or ``linear`` decay to zero.

    >>> [round(lr_factor(s, 4, schedule="cosine", warmup=0.25), 3) for s in range(4)]
    [0.5, 1.0, 0.75, 0.25]
    """
    if schedule == "constant":
        return 1.0
    ramp = max(0, math.ceil(warmup * total))
    if step < ramp:
        return (step + 1) / (ramp + 1)
    progress = (step - ramp) / max(1, total - ramp)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_schedule(
    optimizer: torch.optim.Optimizer, policy: Policy, total: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """The policy's schedule over ``total`` optimizer steps (None: a constant rate)."""
    schedule, warmup = policy.finetune.schedule, policy.finetune.warmup
    if schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, schedule=schedule, warmup=warmup)
    )


def _steps(task: Task, epochs: int) -> int:
    """Optimizer steps in ``epochs`` (a loader without a length: 1000 a epoch, a guess)."""
    try:
        return max(1, epochs * len(task.train_loader))
    except TypeError:
        return max(1, epochs * 1000)


def _float(value):
    """Tensors (in tuples, lists, dicts) as fp32, for a loss computed outside autocast."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _float(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_float(v) for v in value)
    return value


__all__ = ["DivergedError", "finetune_", "lr_factor", "lr_schedule"]
