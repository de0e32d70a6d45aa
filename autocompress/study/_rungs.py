"""One rung of successive halving in the process that runs it: the policy at the rung's epochs,
its trial, and the accuracy that ranks it (at rung 0, :func:`rung0_estimate`).

Every rung is a whole trial (:func:`autocompress.study._trial.run_trial`): prune, fine-tune for
the rung's epochs, convert, measure the artifact. So size and latency are the artifact's at
every rung, and a promoted trial re-runs from the teacher with more epochs (it does not resume
from the lower rung's weights).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autocompress.pipeline.hooks import TrialHooks
from autocompress.pipeline.options import CompressOptions
from autocompress.pipeline.proxy import default_estimator, estimate_recovery
from autocompress.policy import Policy
from autocompress.study._trial import run_trial
from autocompress.study.objectives import ObjectiveSet
from autocompress.study.records import TrialRecord, TrialState
from autocompress.task import Task
from autocompress.techniques.distill import TeacherCache

FINE_TUNED = "fine-tuned"  # ranked by the fine-tuned artifact's own accuracy
NOT_TRAINED = "not fine-tuned"  # a trial whose full budget is 0 epochs: its artifact's accuracy


def at_epochs(policy: Policy, epochs: int) -> Policy:
    """``policy`` with ``epochs`` fine-tuning epochs."""
    return dataclasses.replace(policy, finetune=dataclasses.replace(policy.finetune, epochs=epochs))


RUNG0_DISTILL_STEPS = (
    10  # benchmarks/proxy.py: distill-10 ranked the encoder's 1-epoch accuracy at 0.96
)


def rung0_estimate(
    task: Task,
    policy: Policy,
    options: CompressOptions,
    teacher: Mapping[str, Any],
    *,
    measured: Mapping[str, Any] | None = None,
    teacher_cache: TeacherCache | None = None,
) -> tuple[float | None, str]:
    """The accuracy that ranks ``policy`` at rung 0, and the estimator's name.

    ``measured`` holds the figures of the policy's artifact built with no fine-tuning (the
    pipeline recalibrated its BatchNorm statistics after pruning). Where the model has
    BatchNorms that track statistics, the estimate is that artifact's own accuracy (zero-shot,
    BatchNorm recalibrated). Without them (transformers) zero-shot has nothing to repair and
    ranked the encoder's 1-epoch accuracy at only 0.75 in ``benchmarks/proxy.py``, so the
    estimate is a ``RUNG0_DISTILL_STEPS``-step distillation of the fake-quant student (0.96
    there); should it fail, the artifact's accuracy. Size and latency stay the artifact's; the
    search trusts whichever estimate only as far as it measures it (``_ladder_run``).
    """
    metrics = measured or {}
    accuracy = metrics.get("accuracy")
    name = "zero-shot, BatchNorm recalibrated" if metrics.get("bn_recalibrated") else "zero-shot"
    if accuracy is not None and default_estimator(task) == "distill":
        try:
            est = estimate_recovery(
                task,
                policy,
                estimator="distill",
                steps=RUNG0_DISTILL_STEPS,
                options=options,
                teacher_cache=teacher_cache,
            )
            return float(est.accuracy), f"distill-{RUNG0_DISTILL_STEPS}"
        except Exception as exc:  # the artifact's own accuracy still ranks it
            name = f"{name} (distill-{RUNG0_DISTILL_STEPS} failed: {type(exc).__name__})"
    return (None if accuracy is None else float(accuracy)), name


def run_rung(
    task: Task,
    policy: Policy,
    options: CompressOptions,
    hooks: TrialHooks = TrialHooks(),
    *,
    rung: int,
    final: bool,
    number: int,
    objectives: ObjectiveSet,
    teacher: Mapping[str, Any],
    out_dir: Path,
    teacher_cache: TeacherCache | None = None,
) -> TrialRecord:
    """The trial of ``policy`` (already at the rung's epochs) with its ``rung`` entry:
    ``{"rung", "epochs", "accuracy", "estimator", "seconds", "state"}``, where ``accuracy`` is
    what ranks it (the artifact's, or at rung 0 below the top the estimator's)."""
    record = run_trial(
        task,
        policy,
        options,
        hooks,
        number=number,
        objectives=objectives,
        teacher=teacher,
        out_dir=out_dir,
        teacher_cache=teacher_cache,
    )
    metrics = record.get("metrics") or {}
    accuracy, estimator = metrics.get("accuracy"), FINE_TUNED
    measured = record["state"] in (TrialState.COMPLETE, TrialState.INFEASIBLE)
    if not policy.finetune.epochs:
        estimator = NOT_TRAINED
        if rung == 0 and not final and measured and accuracy is not None:
            began = time.perf_counter()
            accuracy, estimator = rung0_estimate(
                task, policy, options, teacher, measured=metrics, teacher_cache=teacher_cache
            )
            spent = time.perf_counter() - began  # the estimate is part of the rung's cost
            record["duration_s"] = round(float(record.get("duration_s") or 0.0) + spent, 3)
    record["rung"] = {
        "rung": rung,
        "epochs": policy.finetune.epochs,
        "accuracy": accuracy,
        "estimator": estimator,
        "seconds": record.get("duration_s"),
        "state": str(record["state"]),
    }
    return record


__all__ = [
    "FINE_TUNED",
    "NOT_TRAINED",
    "RUNG0_DISTILL_STEPS",
    "at_epochs",
    "rung0_estimate",
    "run_rung",
]
