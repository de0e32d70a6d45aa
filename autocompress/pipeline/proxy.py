"""A policy's recovered accuracy, estimated cheaply: the proxy that ranks policies before the
fine-tuning budget is spent on them (rung 0 of a screening).

Two estimators, both on the policy's own structure change (channels pruned, blocks dropped,
weights sparsified, at the policy's bits):

- ``zero-shot``: no training. Every tracked BatchNorm is recalibrated on a few training
  batches first (``techniques.recalibrate``): with the teacher's stale statistics a pruned
  network looks at chance and the estimate ranks nothing (EagleEye).
- ``distill``: a short distillation, ``steps`` optimizer steps of the policy's learning rate
  toward the teacher's outputs only (``distill.alpha`` 0 in this code's convention, where
  alpha weighs the task loss; no feature term), every parameter trained. For models without
  BatchNorm (transformers), where zero-shot has no statistics to repair.

``estimator="auto"`` picks ``zero-shot`` where the model has tracked BatchNorms, ``distill``
otherwise. The accuracy is the task's metric on the **fake-quant student** (weights rounded to
the target's integer codes, activations fake-quantized with the MinMax-calibrated qparams
where the target runs integer kernels): what fine-tuning and per-epoch metrics see. Nothing is
converted, written or timed; size and latency are exact elsewhere (the artifact).

>>> est = estimate_recovery(task, policy)  # doctest: +SKIP
>>> est.estimator, est.accuracy  # doctest: +SKIP
('zero-shot', 0.93)

:func:`proxy_trust` is the guard a search would put in front of a proxy: given (estimate, full
accuracy) pairs from finished trials, the Spearman rank correlation and whether the proxy may
rank policies (rho >= 0.8). ``benchmarks/proxy.py`` measured no proxy that far against the
polished accuracy on the digits CNN or the encoder, so the start trains; against the 1-epoch
accuracy zero-shot reached 0.88 on digits and 0.75 on the encoder, distill-10 0.95 and 0.96.
Successive halving's rung 0 (``study._rungs.rung0_estimate``: zero-shot with BatchNorm,
distill-10 without) ranks only while this guard, fed during the search with each trial's
rung-0 estimate and rung-1 accuracy, trusts it (``study._ladder_run``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from autocompress.device import moved
from autocompress.errors import ConfigError
from autocompress.pipeline._compress import _activation_quant, prune_copy, resolve_policy
from autocompress.pipeline.options import CompressOptions
from autocompress.policy import Distill, Policy
from autocompress.targets import structure_diff
from autocompress.task import Task, check_task
from autocompress.techniques.distill import TeacherCache
from autocompress.techniques.drop import live
from autocompress.techniques.finetune import finetune_
from autocompress.techniques.quantize import add_fake_quant_, remove_fake_quant_
from autocompress.techniques.recalibrate import (
    after_finetuning,
    after_pruning,
    merge_records,
    tracked_norms,
)
from autocompress.techniques.scope import resolve_quant_scopes
from autocompress.techniques.strategies import STRATEGIES

ESTIMATORS = ("zero-shot", "distill")
DISTILL_STEPS = 20
TRUST_RHO = 0.8  # the least rank correlation with full accuracy at which the proxy ranks
TRUST_PAIRS = 6  # the fewest finished trials the correlation is computed on


@dataclass(frozen=True)
class RecoveryEstimate:
    """A policy's estimated recovered accuracy and how it was estimated."""

    accuracy: float
    estimator: str  # "zero-shot" or "distill"
    steps: int  # optimizer steps run (0 for zero-shot)
    bn_recalibrated: dict[str, Any] | None  # the recalibration record, None when none was done
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_estimator(task: Task) -> str:
    """``zero-shot`` where the model has BatchNorms with running statistics, else ``distill``."""
    return "zero-shot" if tracked_norms(task.model) else "distill"


def estimate_recovery(
    task: Task,
    policy: Policy,
    *,
    estimator: str = "auto",
    steps: int = DISTILL_STEPS,
    options: CompressOptions | None = None,
    teacher_cache: TeacherCache | None = None,
    recalibrate: bool = True,
) -> RecoveryEstimate:
    """The accuracy ``policy`` is estimated to recover on ``task``, cheaply (see the module).

    ``estimator``: ``auto``, ``zero-shot`` or ``distill``; ``steps``: the distillation's
    optimizer steps; ``options``: the target (its integer codes and activation scopes), the
    importance, the seed and the training device, as for ``compress``; ``teacher_cache``:
    the teacher's outputs, shared between calls; ``recalibrate=False`` keeps the teacher's
    BatchNorm statistics (to show what recalibration buys).
    """
    if estimator == "auto":
        estimator = default_estimator(task)
    if estimator not in ESTIMATORS:
        raise ConfigError(
            f"unknown recovery estimator {estimator!r}; choose from auto, {', '.join(ESTIMATORS)}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"distillation proxy steps = {steps!r} must be an integer >= 1")
    options = options if options is not None else CompressOptions.of()
    start = time.perf_counter()
    trained = _distill_policy(task, policy, steps) if estimator == "distill" else None
    check_task(task, epochs=trained.finetune.epochs if trained is not None else 0)
    tgt, training, seed = options.target, options.training, options.seed
    resolved = resolve_policy(task, policy, tgt)
    scopes, _ = resolve_quant_scopes(policy, resolved.bits, tgt)
    requests = {name: s.resolve(task, policy, resolved) for name, s in STRATEGIES.items()}

    pruned = prune_copy(task, options, resolved, requests)
    student, work, masks = pruned.student, pruned.work, pruned.done["weight"]
    records = []
    if recalibrate:
        structure = structure_diff(task.model, student)
        records.append(after_pruning(task, student, structure, requests["structure"], masks))
    bits = live(resolved.bits, student)
    live_scopes = live(scopes, student)
    code_bits = tgt.code_bits(student, bits, live_scopes)
    ran = 0
    with moved(student, training.device):
        act_quant = _activation_quant(work, tgt, student, bits, live_scopes)
        if trained is not None:
            counter = _Counter()
            finetune_(
                student,
                task,
                trained,
                code_bits,
                teacher_cache=teacher_cache,
                seed=seed,
                on_step=counter,
                masks=masks,
                act_quant=act_quant,
                training=training,
            )
            ran = counter.count
    if trained is not None and recalibrate:
        records.append(after_finetuning(task, student))
    accuracy = _fake_quant_metric(task, student, code_bits, act_quant)
    return RecoveryEstimate(
        accuracy=accuracy,
        estimator=estimator,
        steps=ran,
        bn_recalibrated=merge_records(records),
        seconds=time.perf_counter() - start,
    )


def _distill_policy(task: Task, policy: Policy, steps: int) -> Policy:
    """``policy`` trained ``steps`` steps toward the teacher's outputs only, every parameter."""
    per_epoch = len(task.train_loader) if hasattr(task.train_loader, "__len__") else steps
    finetune = dataclasses.replace(
        policy.finetune,
        epochs=max(1, math.ceil(steps / max(1, per_epoch))),
        steps=steps,
        lambda_=0.0,
        scope="full",
    )
    distill = Distill(alpha=0.0, temperature=policy.distill.temperature, feature_weight=0.0)
    return dataclasses.replace(policy, distill=distill, finetune=finetune)


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def _fake_quant_metric(task: Task, student: torch.nn.Module, code_bits, act_quant) -> float:
    """The task's metric on ``student`` with its weights and activations fake-quantized."""
    add_fake_quant_(student, code_bits)
    hooks = act_quant.attach(student) if act_quant is not None else []
    student.eval()
    try:
        with torch.no_grad():
            return float(task.evaluate(student))
    finally:
        for hook in hooks:
            hook.remove()
        remove_fake_quant_(student)


# -- the online guard ----------------------------------------------------------------------
def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's on tie-averaged ranks); None where undefined
    (fewer than two pairs, or one side constant)."""
    if len(xs) != len(ys):
        raise ValueError(f"spearman: {len(xs)} estimates but {len(ys)} accuracies")
    if len(xs) < 2:
        return None
    rx, ry = _ranks(list(xs)), _ranks(list(ys))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


@dataclass(frozen=True)
class ProxyTrust:
    """The proxy's rank correlation with full accuracy so far, and whether it may rank."""

    rho: float | None
    pairs: int
    trusted: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def proxy_trust(
    pairs: Iterable[tuple[float, float]],
    *,
    threshold: float = TRUST_RHO,
    min_pairs: int = TRUST_PAIRS,
) -> ProxyTrust:
    """From (proxy estimate, full accuracy) pairs of finished trials: Spearman's rho and
    whether the proxy is trusted (rho >= ``threshold`` on at least ``min_pairs`` pairs).
    Pairs with a missing or non-finite value (a failed trial) are left out.

    >>> proxy_trust([(0.1, 0.5), (0.2, 0.6), (0.3, 0.7), (0.4, 0.8), (0.5, 0.9), (0.6, 0.95)])
    ProxyTrust(rho=1.0, pairs=6, trusted=True)
    """
    kept = [
        (float(e), float(a))
        for e, a in pairs
        if e is not None and a is not None and math.isfinite(e) and math.isfinite(a)
    ]
    rho = spearman([e for e, _ in kept], [a for _, a in kept])
    trusted = rho is not None and len(kept) >= min_pairs and rho >= threshold
    return ProxyTrust(rho=rho, pairs=len(kept), trusted=trusted)


__all__ = [
    "DISTILL_STEPS",
    "ESTIMATORS",
    "TRUST_PAIRS",
    "TRUST_RHO",
    "ProxyTrust",
    "RecoveryEstimate",
    "default_estimator",
    "estimate_recovery",
    "proxy_trust",
    "spearman",
]
