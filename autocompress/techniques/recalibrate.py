"""BatchNorm running statistics recomputed on a few training batches (no gradients).

Pruning, block dropping or sparsity change what every later BatchNorm sees, so the teacher's
running statistics are stale in the student: a pruned network evaluated with them looks "at
chance" (EagleEye). And some norms cannot follow fine-tuning at all: ``momentum=0`` (common in
models converted from other frameworks) never updates, ``momentum=None`` averages over the
teacher's whole history. One pass puts the chosen norms in train mode (the rest of the model
in eval mode: no dropout), resets them, sets a cumulative average (``momentum=None``), runs
the batches, then restores each module's mode and momentum.

>>> record = recalibrate_bn_(student, batches, reason="structure changed")  # doctest: +SKIP
>>> record  # doctest: +SKIP
{'layers': 12, 'batches': 8, 'reason': 'structure changed'}
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from autocompress.task import run_model

BATCHES = 8


def tracked_norms(model: nn.Module) -> dict[str, _BatchNorm]:
    """The BatchNorms that keep running statistics (``track_running_stats=False`` uses the
    batch's own statistics in eval mode too: nothing to recalibrate)."""
    return {
        path: m
        for path, m in model.named_modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None
    }


def stuck_norms(model: nn.Module) -> dict[str, str]:
    """Norms whose running statistics cannot follow training, and why."""
    stuck = {}
    for path, m in tracked_norms(model).items():
        if m.momentum is None:
            stuck[path] = "momentum None (cumulative average over the teacher's history)"
        elif m.momentum == 0:
            stuck[path] = "momentum 0"
    return stuck


def recalibrate_bn_(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    reason: str,
    paths: Sequence[str] | None = None,
    limit: int = BATCHES,
) -> dict[str, Any] | None:
    """Recompute the running statistics of ``paths`` (default: every tracked BatchNorm) on at
    most ``limit`` batches of inputs; returns the record, or None when nothing was done (no
    such norm, or no batch)."""
    norms = tracked_norms(model)
    if paths is not None:
        norms = {p: norms[p] for p in paths if p in norms}
    inputs = list(islice(iter(batches), limit))
    if not norms or not inputs:
        return None
    modes = [(m, m.training) for m in model.modules()]
    momenta = {p: m.momentum for p, m in norms.items()}
    model.eval()
    for m in norms.values():
        m.reset_running_stats()
        m.momentum = None  # exact average over the batches
        m.train()
    try:
        with torch.no_grad():
            for x in inputs:
                run_model(model, x)
    finally:
        for p, m in norms.items():
            m.momentum = momenta[p]
        for m, training in modes:
            m.training = training
    return {"layers": len(norms), "batches": len(inputs), "reason": reason}


def merge_records(records: Iterable[dict[str, Any] | None]) -> dict[str, Any] | None:
    """One record for the passes of one compression (largest layer count, batches summed,
    reasons joined in order)."""
    done = [r for r in records if r]
    if not done:
        return None
    return {
        "layers": max(r["layers"] for r in done),
        "batches": sum(r["batches"] for r in done),
        "reason": "; ".join(r["reason"] for r in done),
        "passes": len(done),
    }


# -- when compress recalibrates ------------------------------------------------------------
def _inputs(task: Any) -> Iterator[Any]:
    return (inputs for inputs, _ in task.train_loader)


def after_pruning(
    task: Any,
    student: nn.Module,
    structure: Mapping[str, Any],
    dropped: Mapping[str, str],
    masks: Mapping[str, torch.Tensor] | None,
) -> dict[str, Any] | None:
    """Every BatchNorm sees other inputs once channels, blocks or weights are removed."""
    changes = [
        what
        for what, done in (
            ("channels pruned", bool(structure)),
            ("blocks dropped", bool(dropped)),
            ("weights sparsified", bool(masks)),
        )
        if done
    ]
    if not changes:
        return None
    return recalibrate_bn_(student, _inputs(task), reason="after pruning: " + ", ".join(changes))


def after_finetuning(task: Any, student: nn.Module) -> dict[str, Any] | None:
    """Norms whose running statistics could not follow fine-tuning's weight updates."""
    stuck = stuck_norms(student)
    if not stuck:
        return None
    kinds = sorted(set(stuck.values()))
    return recalibrate_bn_(
        student,
        _inputs(task),
        reason=f"after fine-tuning: {len(stuck)} norm(s) with {' / '.join(kinds)}",
        paths=list(stuck),
    )


__all__ = [
    "BATCHES",
    "after_finetuning",
    "after_pruning",
    "merge_records",
    "recalibrate_bn_",
    "stuck_norms",
    "tracked_norms",
]
