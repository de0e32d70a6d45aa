"""A trained student written and measured on a runtime: the objective target's, then each of the
other targets a search measures (``targets: [onnxruntime, openvino, executorch]``).

:func:`convert_measure` saves the student as one target's artifact, loads it back and measures it
(timed paired with the teacher on that same runtime when the settings say so). :func:`on_targets`
does so for every extra target of the options, from the student the objective target's trial
fine-tuned ONCE: the same fine-tuned weights and the same activation qparams, nothing trained or
calibrated again for it. What an extra target receives:

- the fine-tuned float weights, rounded to the target's own integer codes (``recoded`` lists the
  layers whose code width differs from the one fine-tuning simulated, e.g. 7-bit reduce_range);
- the activation qparams fine-tuning learnt, for the layers both targets run on int8 kernels; a
  layer the extra target would quantize the activations of, but whose activations fine-tuning
  did not fake-quantize (e.g. every layer when the objective target is ``torch``), runs
  weight-only there, listed under ``weight_only_activations``;
- the policy's quantization scopes as that target resolves them (its own default where the
  policy sets none; weight-only where it does not offer the scope asked for);
- a bit-width the target cannot run fails that target's entry, never the trial.

A failure on one extra target becomes its entry ``{"error": ..., "target": name}``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from autocompress.errors import AutoCompressError, PolicyError
from autocompress.measure.gate import Gate
from autocompress.measure.metrics import METRICS, teacher_metrics
from autocompress.measure.timing import MeasureSettings
from autocompress.pipeline._artifact import measure_artifact, measure_teacher, teacher_reference
from autocompress.pipeline.hooks import StopTrial
from autocompress.pipeline.options import CompressOptions
from autocompress.policy import Policy, QuantScope
from autocompress.targets import Target
from autocompress.task import Task
from autocompress.techniques.drop import live
from autocompress.techniques.quantize import ActivationQuant
from autocompress.techniques.scope import resolve_quant_scopes

# what a target's entry in ``metrics["targets"]`` keeps besides the registered metrics
W_A = QuantScope.WEIGHT_ACTIVATION
_ENTRY_KEYS = ("teacher", "teacher_paired", "latency_retakes", "target", "artifact", "modes")


@dataclass(frozen=True)
class Trained:
    """A student pruned and fine-tuned once, and what each target's artifact is written from."""

    task: Task
    student: nn.Module
    policy: Policy
    bits: Mapping[str, int]
    structure: Mapping[str, Any]
    meta: Mapping[str, Any]  # the objective target's artifact header
    act_quant: ActivationQuant | None  # the activation qparams fine-tuning learnt
    code_bits: Mapping[str, int]  # the integer code widths fine-tuning simulated


def convert_measure(
    trained: Trained,
    tgt: Target,
    out: Path,
    *,
    settings: MeasureSettings,
    gate: Gate,
    baseline: Mapping[str, Any],
    stage: Callable[[str], None] = lambda _: None,
    meta: Mapping[str, Any] | None = None,
    activations: Mapping[str, tuple[float, int]] | None = None,
) -> tuple[dict[str, Any], nn.Module, Path]:
    """Write the trained student as ``tgt``'s artifact in ``out`` (with ``meta`` and
    ``activations``: the trained ones when None), load it back and measure it against
    ``baseline`` (the teacher on ``tgt``): (its metrics, the deployed model, the artifact)."""
    task, student, act_quant = trained.task, trained.student, trained.act_quant
    if activations is None and act_quant is not None:
        activations = act_quant.qparams
    out.mkdir(parents=True, exist_ok=True)
    artifact = out / tgt.artifact_name
    records = tgt.save(
        student,
        artifact,
        task=task,
        bits=trained.bits,
        structure=trained.structure,
        meta=trained.meta if meta is None else meta,
        activations=activations,
    )
    deployed = tgt.load(artifact, task.model, threads=settings.threads)
    stage("measure")
    reference = teacher_reference(task, tgt, settings) if settings.paired else None
    metrics = measure_artifact(
        task, tgt, student, deployed, artifact, settings, gate, reference, baseline
    )
    # the teacher this candidate is compared with: timed interleaved with it when paired
    teacher = {**baseline, **metrics.get("teacher_paired", {})}
    metrics["teacher"] = {k: teacher[k] for k in teacher_metrics() if k in teacher}
    metrics["layers"] = dict(records)
    graph = tgt.graph_record(artifact)
    if graph is not None:
        metrics["graph"] = graph
        if "inference_precision" in graph:  # the precision the whole artifact ran in
            metrics["inference_precision"] = graph["inference_precision"]
    return metrics, deployed, artifact


def target_entry(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A target's figures as ``metrics["targets"][name]`` holds them (no per-layer records)."""
    modes = Counter(str(r.get("mode")) for r in (metrics.get("layers") or {}).values())
    full = {**metrics, "modes": dict(sorted(modes.items()))}
    keep = (*METRICS, *_ENTRY_KEYS, "weight_only_activations", "recoded", "trained_for")
    return {k: full[k] for k in keep if k in full}


def on_targets(
    trained: Trained,
    options: CompressOptions,
    out: Path,
    *,
    baseline: Mapping[str, Any],
    stage: Callable[[str], None],
    gate: Gate,
) -> dict[str, dict[str, Any]]:
    """Each extra target's entry: its figures, measured on its own artifact in ``out/<name>/``
    (``policy.json`` and ``metrics.json`` beside it), or the error that stopped it."""
    entries: dict[str, dict[str, Any]] = {}
    for name in options.targets:
        stage(f"convert {name}")
        try:
            metrics = _on_target(
                trained,
                options.for_target(name),
                out / name,
                baseline=(baseline.get("targets") or {}).get(name),
                stage=lambda s, n=name: stage(f"{s} {n}"),
                gate=gate,
            )
        except StopTrial:
            raise
        except Exception as exc:  # one runtime failing never fails the trial
            entries[name] = {"error": f"target {name}: {type(exc).__name__}: {exc}", "target": name}
            continue
        metrics["trained_for"] = options.target_name
        (out / name / "policy.json").write_text(trained.policy.to_json(indent=2))
        (out / name / "metrics.json").write_text(json.dumps(metrics, indent=2))
        entries[name] = target_entry(metrics)
    return entries


def _on_target(
    trained: Trained,
    options: CompressOptions,
    out: Path,
    *,
    baseline: Mapping[str, Any] | None,
    stage: Callable[[str], None],
    gate: Gate,
) -> dict[str, Any]:
    tgt, bits, student = options.target, trained.bits, trained.student
    wrong = sorted({b for b in bits.values() if b not in tgt.bits})
    if wrong:
        layer = next(p for p, b in bits.items() if b == wrong[0])
        raise AutoCompressError(
            f"layer {layer}: {wrong[0]} bits cannot run on target {tgt.name!r} "
            f"(bits: {', '.join(map(str, tgt.bits))})"
        )
    learnt = dict(trained.act_quant.qparams) if trained.act_quant is not None else {}
    # the policy's scopes as this target resolves them (its default where the policy sets none)
    try:
        asked, explicit = resolve_quant_scopes(trained.policy, bits, tgt)
    except PolicyError:  # a scope this target does not offer (``torch``: weight only)
        asked, explicit = dict.fromkeys(bits, QuantScope.WEIGHT), set()
    scopes = dict(live(asked, student))
    untrained = [p for p in tgt.activation_layers(student, bits, scopes) if p not in learnt]
    scopes.update(dict.fromkeys(untrained, QuantScope.WEIGHT))  # nothing calibrated for them
    outputs = sorted(
        p for p in live(dict.fromkeys(explicit), student) if scopes.get(p) == W_A and p in learnt
    )
    codes = tgt.code_bits(student, bits, scopes)
    if baseline is None:
        stage("measure teacher")
        baseline = measure_teacher(trained.task, options=options)
    metrics, _, artifact = convert_measure(
        trained,
        tgt,
        out,
        settings=options.settings,
        gate=gate,
        baseline=baseline,
        stage=stage,
        meta={**trained.meta, "target": tgt.name, "quant_scope": scopes, "quant_outputs": outputs},
        activations={p: q for p, q in learnt.items() if scopes.get(p) != QuantScope.WEIGHT},
    )
    if untrained:
        metrics["weight_only_activations"] = untrained
    recoded = {p: {"trained": trained.code_bits[p], "stored": c} for p, c in codes.items()}
    recoded = {p: r for p, r in recoded.items() if r["trained"] != r["stored"] and bits[p] < 32}
    if recoded:
        metrics["recoded"] = recoded
    metrics.update(target=tgt.name, artifact=f"{out.name}/{artifact.name}")
    metrics["threads"] = options.settings.threads
    return metrics


__all__ = ["Trained", "convert_measure", "on_targets", "target_entry"]
