"""A deployable artifact measured as its target loads and runs it.

``artifact_meta`` is the header every artifact carries (the policy, the task, what the loader
rebuilds); ``measure_artifact`` gives a candidate's figures on the loaded artifact: every
registered metric with a ``measure`` (``autocompress.measure.metrics``: accuracy, bytes, latency,
params, MACs, speedup, compression, and any metric registered since); ``measure_teacher`` writes the teacher as a float artifact and
measures it the same way; ``structure_cost`` measures a pruned structure before training.
``teacher_reference`` is the teacher's artifact loaded once per process and target, which a
candidate is timed interleaved with (``MeasureSettings.paired``).
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from autocompress.analysis.layers import list_layers
from autocompress.errors import PolicyError
from autocompress.measure.gate import Gate, NoGate
from autocompress.measure.metrics import MeasureContext, measure_all
from autocompress.measure.timing import MeasureSettings
from autocompress.pipeline.options import CompressOptions
from autocompress.policy import Policy, QuantScope
from autocompress.targets import Target, find_artifact, get_target, measure_runtime, target_of
from autocompress.task import Task
from autocompress.techniques.drop import live
from autocompress.techniques.scope import resolve_quant_scopes
from autocompress.techniques.sparsify import resolve_sparsity


def measure_artifact(
    task: Task,
    target: Target,
    student: nn.Module,
    deployed: nn.Module,
    path: Path,
    settings: MeasureSettings,
    gate: Gate = NoGate(),
    reference: nn.Module | None = None,
    baseline: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every registered metric with a ``measure``, on the loaded artifact; ``baseline`` None:
    the artifact is the teacher's (metrics the teacher has no value of are skipped). Metrics
    read bytes of its files and latency on the target's runtime (``measure_runtime``), params
    and MACs (``target.count``), each taken on first use."""
    ctx = MeasureContext(
        task=task,
        target=target,
        student=student,
        deployed=deployed,
        path=path,
        baseline=baseline,
        take_runtime=lambda: measure_runtime(
            task, deployed, target.files(path), settings, gate, reference
        ),
        take_counts=lambda: target.count(student, deployed, task.example_inputs),
    )
    return measure_all(ctx)


def artifact_meta(
    task: Task,
    policy: Policy,
    tgt: Target,
    student: nn.Module,
    *,
    dropped: Mapping[str, Any],
    sparsity: Mapping[str, float],
    scopes: Mapping[str, str],
    explicit: Any,
) -> dict[str, Any]:
    """The artifact header: the policy and task, plus what the loader must rebuild."""
    return {
        "policy": policy.to_dict(),
        "task_spec": task.spec,
        "task_base_dir": os.getcwd(),
        "target": tgt.name,
        # written from the Task's unpacked modules (attention split, Conv1D as Linear): a
        # loader given the user's own packed architecture unpacks it first
        "unpacked": student is not teacher_module(task) and teacher_module(task) is not task.model,
        "dropped": dropped,
        "sparse": live(sparsity, student),
        "quant_scope": live(scopes, student),
        "quant_outputs": sorted(
            p
            for p in live(dict.fromkeys(explicit), student)
            if scopes[p] == QuantScope.WEIGHT_ACTIVATION
        ),
    }


def teacher_module(task: Task) -> nn.Module:
    """The user's own teacher module, as given (before ``Task`` unpacked its attention):
    the teacher's size, latency and accuracy are measured on it."""
    original = getattr(task, "original_model", None)
    unpacked = getattr(task, "_unpacked_model", None)
    return original if original is not None and unpacked is task.model else task.model


def _write_teacher(task: Task, tgt: Target, path: Path) -> None:
    """The teacher as ``tgt``'s float artifact, with the same header as an identity trial's
    artifact, so the teacher's bytes equal its bytes."""
    bits = {i.path: 32 for i in list_layers(teacher_module(task))}
    policy = Policy()
    scopes, explicit = resolve_quant_scopes(policy, bits, tgt)
    meta = artifact_meta(
        task,
        policy,
        tgt,
        teacher_module(task),
        dropped={},
        sparsity=resolve_sparsity(teacher_module(task), policy),
        scopes=scopes,
        explicit=explicit,
    )
    tgt.save(teacher_module(task), path, task=task, bits=bits, structure={}, meta=meta)


def measure_teacher(
    task: Task,
    *,
    options: CompressOptions | None = None,
    target: str | None = None,
    settings: MeasureSettings | None = None,
    target_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The teacher written as a float artifact by the options' target and measured like a
    candidate (with the options' ``settings``), in this process. ``target``, ``settings`` and
    ``target_options`` build or change the options, as in ``compress``."""
    options = CompressOptions.merged(
        options, target=target, settings=settings, target_options=target_options
    )
    tgt, settings = options.target, options.settings
    with tempfile.TemporaryDirectory(prefix="autocompress-baseline-") as tmp:
        path = Path(tmp) / tgt.artifact_name
        _write_teacher(task, tgt, path)
        deployed = tgt.load(path, teacher_module(task), threads=settings.threads)
        return measure_artifact(task, tgt, teacher_module(task), deployed, path, settings)


measure_baseline = measure_teacher  # its name before the teacher/starts naming


# teacher model -> {(target, its options, threads): (loaded teacher artifact, its folder)}
_REFERENCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def teacher_reference(task: Task, tgt: Target, settings: MeasureSettings) -> nn.Module:
    """The teacher's artifact on ``tgt``, written and loaded once per process (and teacher,
    target options, threads): what each candidate is timed interleaved with."""
    per_model = _REFERENCES.setdefault(teacher_module(task), {})
    key = (tgt.name, repr(tgt), settings.threads)
    if key not in per_model:
        folder = tempfile.TemporaryDirectory(prefix="autocompress-teacher-")
        path = Path(folder.name) / tgt.artifact_name
        _write_teacher(task, tgt, path)
        per_model[key] = (tgt.load(path, teacher_module(task), threads=settings.threads), folder)
    return per_model[key][0]


def structure_cost(
    task: Task,
    student: nn.Module,
    bits: Mapping[str, int],
    structure: Mapping,
    *,
    target: Target,
    settings: MeasureSettings,
    meta: Mapping[str, Any],
    gate: Gate = NoGate(),
) -> dict[str, Any]:
    """Size and latency of the converted structure before any training (for early rejection).

    Written with the same header as the final artifact, so its bytes are the final bytes."""
    reference = teacher_reference(task, target, settings) if settings.paired else None
    with tempfile.TemporaryDirectory(prefix="autocompress-structure-") as tmp:
        path = Path(tmp) / target.artifact_name
        target.save(student, path, task=task, bits=bits, structure=structure, meta=meta)
        deployed = target.load(path, task.model, threads=settings.threads)
        runtime = measure_runtime(task, deployed, target.files(path), settings, gate, reference)
        # structure checks read size, latency and params (not the task's metric)
        counts = target.count(student, deployed, task.example_inputs)
        return {**runtime, "params": counts["params"]}


def load_artifact(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Load a deployable model written by ``compress`` without unpickling Python objects.

    ``model`` is the uncompressed architecture (e.g. ``task.model``); when omitted, the task
    recorded in the artifact is loaded to provide it.
    """
    from autocompress.task import load_task

    path = Path(path)
    if path.is_dir():
        path = find_artifact(path)
    tgt = target_of(path)
    meta = tgt.read_meta(path)
    if model is None:
        if not meta.get("task_spec"):
            raise PolicyError(f"artifact {path} records no task; pass model= to load_artifact")
        model = load_task(meta["task_spec"], base_dir=meta.get("task_base_dir")).model
    return get_target(meta.get("target", tgt.name)).load(path, model)
