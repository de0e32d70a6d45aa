"""One policy applied to one model: prune -> fine-tune (distill, QAT) -> convert -> measure.

>>> result = compress(task, Policy.from_dict({"prune": {"default": 0.5}, "quant": {"default": 8}}))
>>> result.metrics["speedup"], result.metrics["compression"]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.analysis.layers import list_layers, per_layer
from autocompress.analysis.probe import probe_groups
from autocompress.device import Training, moved, on_device
from autocompress.errors import PolicyError
from autocompress.measure.gate import Gate
from autocompress.measure.timing import MeasureSettings
from autocompress.pipeline._artifact import artifact_meta, measure_teacher, structure_cost
from autocompress.pipeline._artifact import load_artifact as load_artifact  # re-exported
from autocompress.pipeline._runtimes import Trained, convert_measure, on_targets, target_entry
from autocompress.pipeline.hooks import StageCallback, StructureCallback, TrialHooks
from autocompress.pipeline.options import CompressOptions
from autocompress.policy import Policy, QuantScope
from autocompress.targets import (
    LayerMode,
    Target,
    structure_diff,
)
from autocompress.task import Task, check_task
from autocompress.techniques.distill import TeacherCache
from autocompress.techniques.drop import live
from autocompress.techniques.finetune import EpochCallback, finetune_
from autocompress.techniques.importance import Importance, check_importance
from autocompress.techniques.quantize import ActivationQuant
from autocompress.techniques.recalibrate import after_finetuning, after_pruning, merge_records
from autocompress.techniques.scope import (
    auto_feature_layers,
    changed_layers,
    resolve_quant_scopes,
    select_parameters,
    trainable_modules,
    trained_count,
)
from autocompress.techniques.strategies import (
    STRATEGIES,
    StrategyRun,
    apply_strategies,
    record_strategies,
)
from autocompress.unpack import untie_linear_weights_


@dataclass(frozen=True)
class ResolvedPolicy:
    """A policy resolved against a model: one prune ratio and one bit-width per layer."""

    prune: dict[str, float]
    bits: dict[str, int]
    protected: tuple[str, ...]


def resolve_policy(task: Task, policy: Policy, target: Target) -> ResolvedPolicy:
    """Per-layer ratios and bits; errors name the policy key or layer at fault."""
    infos = list_layers(task.model, task.example_inputs)
    protected = (
        tuple(task.output_layers)
        if task.output_layers is not None
        else tuple(i.path for i in infos if i.is_output)
    )
    prunable = [i.path for i in infos if i.prunable and i.path not in protected]
    tables = {i.path for i in infos if not i.prunable}
    asked = any(r > 0 for r in policy.prune_layers.values())
    unprunable = probe_groups(task.model, task.example_inputs, protected) if asked else {}
    for key, ratio in policy.prune_layers.items():
        if key in unprunable and ratio > 0:
            raise PolicyError(
                f"policy key prune.layers[{key!r}]: {unprunable[key]}; remove the key or set "
                "it to 0"
            )
        if key in protected and ratio > 0:
            raise PolicyError(
                f"policy key prune.layers[{key!r}]: {key} is an output layer and keeps its "
                "outputs; remove the key or set it to 0"
            )
        if key in tables and ratio > 0:
            raise PolicyError(
                f"policy key prune.layers[{key!r}]: {key} is an embedding table, which takes "
                "bits but no prune ratio; remove the key or set it to 0"
            )
    prune_keys = {
        k: v for k, v in policy.prune_layers.items() if k not in protected and k not in tables
    }
    prune = per_layer(policy.prune_default, prune_keys, prunable, section="prune")
    bits = per_layer(
        policy.quant_default, policy.quant_layers, [i.path for i in infos], section="quant"
    )
    for path, b in bits.items():
        if b not in target.bits:
            raise PolicyError(
                f"layer {path}: {b} bits cannot be honoured by target {target.name!r} "
                f"(supported: {list(target.bits)})"
            )
    return ResolvedPolicy(
        prune=dict(prune), bits={p: int(b) for p, b in bits.items()}, protected=protected
    )


@dataclass
class CompressResult:
    """The deployable model and its measured figures (the content of ``metrics.json``)."""

    model: nn.Module
    policy: Policy
    metrics: dict[str, Any]
    artifact: Path

    def __getattr__(self, name: str) -> Any:
        metrics = self.__dict__.get("metrics", {})
        if name in metrics:
            return metrics[name]
        raise AttributeError(name)


def compress(
    task: Task,
    policy: Policy,
    *,
    options: CompressOptions | None = None,
    hooks: TrialHooks | None = None,
    out_dir: str | Path | None = None,
    teacher: Mapping[str, Any] | None = None,
    teacher_cache: TeacherCache | None = None,
    target: str | None = None,
    importance: str | Importance | None = None,
    seed: int | None = None,
    settings: MeasureSettings | None = None,
    target_options: Mapping[str, Any] | None = None,
    training: Training | str | None = None,
    on_stage: StageCallback | None = None,
    on_structure: StructureCallback | None = None,
    on_epoch: EpochCallback | None = None,
    gate: Gate | None = None,
    baseline: Mapping[str, Any] | None = None,
) -> CompressResult:
    """Apply ``policy`` to ``task.model`` and measure the deployable artifact.

    Writes ``model.*``, ``policy.json`` and ``metrics.json`` into ``out_dir`` (a temporary
    directory when not given). Accuracy, size and latency are those of the artifact as
    loaded back by the target's loader. ``options`` (:class:`CompressOptions`) say how; the
    keyword arguments ``target``, ``target_options`` (e.g. ``{"max_layer_drop": 0.01}`` on
    ``onnxruntime``), ``importance`` (a registered criterion's name or a criterion object, see
    ``techniques.importance``), ``seed``, ``settings`` and ``training`` build or change them
    (defaults: :meth:`CompressOptions.of`). ``training``: the device (and fine-tuning
    precision) of pruning importance, calibration and fine-tuning; conversion and measurement
    run on the CPU runtime of the target whatever it is (see ``autocompress.device``); a name
    (``"auto"``, ``"cpu"``, ``"cuda:0"``) trains in fp32 on that device. ``hooks``
    (:class:`TrialHooks`), or ``on_stage``, ``on_structure``, ``on_epoch`` and ``gate``, are
    called as the candidate is built. ``teacher``: the teacher's measured figures on this
    target (measured here when not given; ``baseline`` is its older name).
    """
    options = CompressOptions.merged(
        options,
        target=target,
        target_options=target_options,
        importance=importance,
        seed=seed,
        settings=settings,
        training=training,
    )
    callbacks = dict(on_stage=on_stage, on_structure=on_structure, on_epoch=on_epoch, gate=gate)
    hooks = (hooks or TrialHooks()).replace(**{k: v for k, v in callbacks.items() if v is not None})
    teacher = teacher if teacher is not None else baseline
    return _apply(task, policy, options, hooks, out_dir, teacher, teacher_cache)


@dataclass
class PrunedCopy:
    """The teacher's copy with a policy's pruning applied (:func:`prune_copy`)."""

    student: nn.Module
    untied: Any  # the Linear weights untied from their embeddings
    work: Task  # the task on the training device
    run: StrategyRun
    done: dict[str, Any]  # each strategy's outcome; ``done["weight"]``: the sparsity masks


def prune_copy(
    task: Task, options: CompressOptions, resolved: ResolvedPolicy, requests: Mapping[str, Any]
) -> PrunedCopy:
    """A copy of the teacher with the structure, unit and weight pruning ``requests`` applied,
    seeded (the caller's generators stay as they were), on the training device: what
    ``compress`` and the recovery proxy (``pipeline.proxy``) both start from."""
    training = options.training
    student = copy.deepcopy(task.model)
    untied = untie_linear_weights_(student)
    work = on_device(task, training.device)  # the task itself on the CPU
    cuda = [training.device] if training.device.type == "cuda" else []
    run = StrategyRun(work, student, options.importance, resolved.protected)
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(options.seed)
        with moved(student, training.device):  # structure, then unit, then weight pruning
            done = apply_strategies(run, requests)
    return PrunedCopy(student, untied, work, run, done)


def _apply(
    task: Task,
    policy: Policy,
    options: CompressOptions,
    hooks: TrialHooks,
    out_dir: str | Path | None,
    teacher_figures: Mapping[str, Any] | None,
    teacher_cache: TeacherCache | None,
) -> CompressResult:
    stage, gate, settings, seed = hooks.on_stage, hooks.gate, options.settings, options.seed
    training = options.training
    check_importance(options.importance)
    check_task(task, epochs=policy.finetune.epochs)
    tgt = options.target
    resolved = resolve_policy(task, policy, tgt)
    scopes, explicit = resolve_quant_scopes(policy, resolved.bits, tgt)
    requests = {name: s.resolve(task, policy, resolved) for name, s in STRATEGIES.items()}
    dropped, sparsity = requests["structure"], requests["weight"]
    if teacher_figures is None:
        stage("measure teacher")
        teacher_figures = measure_teacher(task, options=options)

    stage("prune")
    pruned = prune_copy(task, options, resolved, requests)
    student, untied, work, run, done = (
        pruned.student, pruned.untied, pruned.work, pruned.run, pruned.done
    )  # fmt: skip
    masks = done["weight"]
    protected = tuple(live(dict.fromkeys(resolved.protected), student))
    structure = _structure(task.model, student)
    recalibrated = [after_pruning(task, student, structure, dropped, masks)]
    bits = live(resolved.bits, student)
    meta = artifact_meta(
        task,
        policy,
        tgt,
        student,
        dropped=dropped,
        sparsity=sparsity,
        scopes=scopes,
        explicit=explicit,
    )

    if hooks.on_structure is not None:
        stage("measure structure")
        hooks.on_structure(
            structure_cost(
                task,
                student,
                bits,
                structure,
                target=tgt,
                settings=settings,
                meta=meta,
                gate=gate,
            )
        )

    train_modules = trainable_modules(
        student,
        policy.finetune.scope,
        changed=changed_layers(structure, bits, meta["sparse"]),
        head=protected,
    )
    trained_params = trained_count(select_parameters(student, train_modules))
    feature_layers = None
    if policy.distill.feature_weight and not task.feature_layers:
        feature_layers = auto_feature_layers(task.model, task.example_inputs, protected)
    code_bits = tgt.code_bits(student, bits, meta["quant_scope"])  # the codes it will hold
    with moved(student, training.device):
        act_quant = _activation_quant(work, tgt, student, bits, meta["quant_scope"])
        if policy.finetune.epochs:
            stage("fine-tune")
        finetune_(
            student,
            task,
            policy,
            code_bits,
            teacher_cache=teacher_cache,
            seed=seed,
            on_epoch=_staged_epochs(hooks.on_epoch, stage, policy.finetune.epochs),
            on_step=gate.step,
            masks=masks,
            act_quant=act_quant,
            train_modules=train_modules,
            feature_layers=feature_layers,
            training=training,
        )
    if policy.finetune.epochs:
        recalibrated.append(after_finetuning(task, student))
    bn_record = merge_records(recalibrated)

    stage("convert")
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="autocompress-"))
    trained = Trained(task, student, policy, bits, structure, meta, act_quant, code_bits)
    metrics, deployed, artifact = convert_measure(
        trained, tgt, out, settings=settings, gate=gate, baseline=teacher_figures, stage=stage
    )
    record_strategies(metrics, run, requests, done)
    _scope_records(metrics, scopes, act_quant)
    metrics["finetune_scope"] = policy.finetune.scope
    metrics["trained_params"] = trained_params if policy.finetune.epochs else 0
    metrics["trained_on"] = training.record(trained=bool(policy.finetune.epochs))
    if feature_layers is not None:
        metrics["feature_layers"] = list(feature_layers)
    if untied:
        metrics["untied_weights"] = untied
    if bn_record is not None:
        metrics["bn_recalibrated"] = bn_record
    metrics["artifact"] = artifact.name
    metrics["target"] = tgt.name
    metrics["threads"] = settings.threads
    if options.targets:  # the same student on each other runtime (``targets: [...]``)
        extra = on_targets(trained, options, out, baseline=teacher_figures, stage=stage, gate=gate)
        metrics["targets"] = {tgt.name: target_entry(metrics), **extra}
    (out / "policy.json").write_text(policy.to_json(indent=2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return CompressResult(model=deployed, policy=policy, metrics=metrics, artifact=artifact)


def _structure(original: nn.Module, pruned: nn.Module) -> dict[str, dict[str, Any]]:
    return structure_diff(original, pruned)


CALIBRATION_BATCHES = 8


def _scope_records(
    metrics: dict[str, Any], scopes: Mapping[str, str], act_quant: ActivationQuant | None
) -> None:
    """Per layer the scope asked for and the one achieved (activations really quantized:
    static qparams and integer compute in the artifact)."""
    static = set(act_quant.qparams) if act_quant is not None else set()
    for path, rec in metrics["layers"].items():
        rec["scope"] = scopes.get(path, QuantScope.WEIGHT)
        quantized = path in static or rec.get("activations") == "dynamic"
        done = quantized and rec.get("mode") == LayerMode.INT_COMPUTE and "fallback" not in rec
        rec["scope_achieved"] = QuantScope.WEIGHT_ACTIVATION if done else QuantScope.WEIGHT


def _activation_quant(
    task: Task,
    target: Target,
    student: nn.Module,
    bits: Mapping[str, int],
    scopes: Mapping[str, str] | None = None,
) -> ActivationQuant | None:
    """Fixed activation qparams for the layers the target runs on integer kernels, calibrated
    (MinMax) on the first training batches of the pruned student before fine-tuning."""
    from itertools import islice

    layers = target.activation_layers(student, bits, scopes)
    if not layers:
        return None
    act_quant = ActivationQuant(layers)
    batches = [inputs for inputs, _ in islice(iter(task.train_loader), CALIBRATION_BATCHES)]
    act_quant.calibrate_(student, batches)
    return act_quant


def _staged_epochs(on_epoch, stage, epochs):
    def callback(epoch: int, model: nn.Module) -> None:
        stage(f"fine-tune epoch {epoch + 1}/{epochs}")
        on_epoch(epoch, model)

    return callback
