"""One search trial: compress with a policy, turn the outcome into a ``trials.jsonl`` record.

A trial never raises: an exception becomes a ``failed`` record with its message, a structure
that already breaks a size/latency constraint becomes ``infeasible`` before any training.
"""

from __future__ import annotations

import math
import socket
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from autocompress.measure.timing import threads
from autocompress.pipeline._compress import CompressResult, compress
from autocompress.pipeline.hooks import StopTrial, TrialHooks
from autocompress.pipeline.options import CompressOptions
from autocompress.policy import Policy
from autocompress.study.failures import Deadline, DeadlineGate, failure_kind
from autocompress.study.objectives import ObjectiveSet
from autocompress.study.records import TrialRecord, TrialState, trial_record
from autocompress.task import Task
from autocompress.techniques.distill import TeacherCache


def run_trial(
    task: Task,
    policy: Policy,
    options: CompressOptions,
    hooks: TrialHooks = TrialHooks(),
    *,
    number: int,
    objectives: ObjectiveSet,
    teacher: Mapping[str, Any],
    out_dir: Path,
    teacher_cache: TeacherCache | None = None,
) -> TrialRecord:
    """Run one policy to the end and return its record (never raises for the trial's own errors).

    ``options.timeout_s``: the trial fails with kind ``timeout`` at the first training step,
    stage or epoch boundary past that many seconds. ``hooks.on_stage`` hears each stage,
    ``hooks.on_score`` each epoch's task metric; ``hooks.gate`` coordinates timing."""
    start = time.perf_counter()
    deadline = Deadline(options.timeout_s)
    gate = hooks.gate if options.timeout_s is None else DeadlineGate(hooks.gate, deadline)

    def stage(name: str) -> None:
        deadline.check(f"stage {name!r}")
        hooks.on_stage(name)

    epochs: list[dict[str, float]] = []
    structure: dict[str, Any] = {}

    def check_structure(cost: dict[str, Any]) -> None:
        structure.update(cost)
        broken = objectives.structural_violation(cost, _paired_teacher(teacher, cost))
        if broken:
            raise StopTrial(broken)

    def report_epoch(epoch: int, model: nn.Module) -> None:
        deadline.check(f"the end of epoch {epoch + 1}")
        value = task.evaluate(model)
        epochs.append({"epoch": epoch + 1, "accuracy": value})
        hooks.on_score(epoch + 1, value)

    record = trial_record(
        number, policy, seed=options.seed, host=socket.gethostname(), epochs=epochs
    )
    cache_before = teacher_cache.computed_batches if teacher_cache is not None else 0
    try:
        # one intra-op thread per trial on every backend (DESIGN: two threads in one process are
        # erratic on shared cores; scale out with processes instead)
        with threads(options.settings.threads):
            result: CompressResult = compress(
                task,
                policy,
                options=options,
                hooks=hooks.replace(
                    on_stage=stage,
                    on_structure=check_structure if objectives.has_structural_constraints else None,
                    on_epoch=report_epoch,
                    gate=gate,
                ),
                out_dir=out_dir,
                teacher=teacher,
                teacher_cache=teacher_cache,
            )
    except StopTrial as stop:
        record.update(state=TrialState.INFEASIBLE, metrics=structure, error=str(stop))
    except Exception as exc:  # a failing trial never kills a search
        record.update(
            state=TrialState.FAILED,
            metrics=structure,
            error=f"{type(exc).__name__}: {exc}",
            failure=failure_kind(exc),
            traceback=traceback.format_exc(limit=8),
        )
    else:
        record["metrics"] = result.metrics
        record.update(
            _classify(objectives, result.metrics, _paired_teacher(teacher, result.metrics))
        )
    if teacher_cache is not None:
        record["teacher_batches_computed"] = teacher_cache.computed_batches - cache_before
    record["duration_s"] = round(time.perf_counter() - start, 3)
    return _finite(record)  # type: ignore[no-any-return]


def _paired_teacher(teacher: Mapping[str, Any], measured: Mapping[str, Any]) -> dict[str, Any]:
    """The teacher a measurement is compared with: its timings from the interleaved run when
    the candidate was timed paired with it, else the teacher's."""
    return {**teacher, **(measured.get("teacher_paired") or {})}


def _finite(value: Any) -> Any:
    """The record with NaN/inf floats replaced by None, so it stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _classify(
    objectives: ObjectiveSet, metrics: Mapping[str, Any], teacher: Mapping[str, Any]
) -> dict[str, Any]:
    """``complete``, ``infeasible`` (a constraint broken) or ``failed`` (a value not finite)."""
    try:
        values = objectives.values(metrics)
        constraints = objectives.constraint_values(metrics, teacher)
    except (KeyError, TypeError, ValueError) as exc:
        return {
            "state": TrialState.FAILED,
            "failure": "objectives",
            "error": f"cannot evaluate the objectives: {exc}",
        }
    if not all(math.isfinite(v) for v in values + constraints):
        return {
            "state": TrialState.FAILED,
            "failure": "non-finite",
            "error": f"non-finite objective or constraint values {values + constraints}",
        }
    if max(constraints, default=0.0) > 0:
        return {"state": TrialState.INFEASIBLE, "error": _broken(objectives, metrics, teacher)}
    return {"state": TrialState.COMPLETE}


def _broken(
    objectives: ObjectiveSet, metrics: Mapping[str, Any], teacher: Mapping[str, Any]
) -> str:
    msgs = [
        c.describe_break(metrics, teacher)
        for c in objectives.constraints
        if c.violation(metrics, teacher) > 0
    ]
    return "; ".join(msgs)
