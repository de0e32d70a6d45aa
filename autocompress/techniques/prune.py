"""Structured pruning: whole channels, neurons and heads removed, one ratio per coupled group.

The model's coupled channel groups come from its dependency graph (see ``groups``): layers
whose outputs meet in a residual add, a shared norm or a depthwise conv lose the same channels.
A group removes ``ratio · channels`` of its channels, rounded to the nearest count every member
allows (equal per slice of a grouped conv, at least one channel per slice and per group kept);
channels are chosen by importance (a criterion of ``importance``: first-order Taylor ``|w·g|``
by default, magnitude, or a plug-in),
summed over every member of the group. Attention modules (see ``heads``) lose whole heads at
their q/k/v ratio.

Rule for a policy that gives members of one group different ratios: **the group takes the
largest ratio any member asks for** (one group can only take one ratio; taking the largest
keeps every explicit request for pruning). The same holds for the q/k/v layers of one attention
module (``{"layers.0.attn.q": 0.5}`` prunes half its heads). The search spaces never do this:
they give one parameter per group. Layers of a group that cannot be pruned (it holds an output
layer, q/k/v, or ``nn.MultiheadAttention``) keep their channels.

The record of each layer holds ``prune_requested`` (its own ratio in the policy),
``prune_group`` and ``prune_group_ratio`` (the group it belongs to and the ratio the group
took), ``prune`` (achieved: 1 − kept/original output channels, read from the pruned model),
``channels_kept`` and ``channels_original``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

import torch
from torch import nn

from autocompress.analysis.attention import attention_modules, packed_attention
from autocompress.analysis.groups import GraphError, choose_channels, graph_of
from autocompress.analysis.layers import PRUNABLE_TYPES
from autocompress.analysis.probe import probe_groups
from autocompress.task import Task, check_runs, failing_module, run_model
from autocompress.techniques._heads import prune_heads_
from autocompress.techniques.importance import Importance, get_importance


def collect_gradients(model: nn.Module, task: Task, batches: int) -> None:
    """Each parameter's ``.grad``: the task loss's gradient summed over ``batches`` batches."""
    model.zero_grad()
    was_training = model.training
    model.eval()  # gradients without touching BatchNorm running statistics
    with torch.enable_grad():
        for inputs, targets in islice(iter(task.train_loader), batches):
            out = task.output_fn(run_model(model, inputs))
            task.task_loss(out, targets).backward()
    model.train(was_training)


def _prepare(model: nn.Module, task: Task, batches: int, criterion: Importance) -> None:
    """Gradients for a criterion that reads them; none (``.grad`` cleared) for one that does not."""
    if criterion.needs_grad:
        collect_gradients(model, task, batches)
    else:
        model.zero_grad(set_to_none=True)


# -- per-channel importance --------------------------------------------------------------------


def _rows(score: torch.Tensor) -> torch.Tensor:
    return score.reshape(score.shape[0], -1).sum(dim=1)


def _in_scores(mod: nn.Module, score: torch.Tensor) -> torch.Tensor:
    """Importance of each input channel of a Linear/Conv from its weight scores."""
    if isinstance(mod, nn.Linear) or getattr(mod, "groups", 1) == 1:
        return _rows(score.transpose(0, 1))
    groups = mod.groups
    per_out = score.shape[0] // groups
    cols = [_rows(score[g * per_out : (g + 1) * per_out].transpose(0, 1)) for g in range(groups)]
    return torch.cat(cols)


def _score(criterion: Importance, param: torch.Tensor) -> torch.Tensor:
    return criterion(param.detach(), param.grad)


def _item_scores(mod: nn.Module, out_side: bool, criterion: Importance) -> torch.Tensor | None:
    weight = getattr(mod, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None
    score = _score(criterion, weight)
    if isinstance(mod, PRUNABLE_TYPES) and not out_side:
        return _in_scores(mod, score)
    if weight.dim() == 1 or out_side:
        rows = _rows(score) if weight.dim() > 1 else score
        bias = getattr(mod, "bias", None)
        if isinstance(bias, torch.Tensor) and bias.shape == rows.shape:
            rows = rows + _score(criterion, bias)
        return rows
    return None


def channel_scores(tp_group: Any, dg: Any, channels: int, *, criterion: Importance) -> torch.Tensor:
    """Importance of each of the group's channels: members' scores, each normalized by its mean."""
    total = torch.zeros(channels)
    for item in tp_group:
        mod = item.dep.target.module
        if not isinstance(mod, nn.Module):
            continue
        local = _item_scores(mod, dg.is_out_channel_pruning_fn(item.dep.handler), criterion)
        if local is None:
            continue
        idxs = torch.as_tensor(list(item.idxs), dtype=torch.long)
        if idxs.numel() == 0 or int(idxs.max()) >= local.numel():
            continue
        values = local.detach().cpu()[idxs].float()  # scores from any device, summed on the CPU
        mean = values.mean()
        if mean > 0:
            total.index_add_(0, torch.as_tensor(list(item.root_idxs)), values / mean)
    return total


# -- the pruner -----------------------------------------------------------------------------


def group_ratio(paths: Iterable[str], ratios: Mapping[str, float]) -> float:
    """The ratio a coupled group takes: the largest its members ask for."""
    return max(float(ratios.get(p, 0.0)) for p in paths)


def prune_(
    model: nn.Module,
    task: Task,
    ratios: Mapping[str, float],
    *,
    importance: str | Importance = "taylor",
    protected: Iterable[str] = (),
    batches: int = 4,
) -> dict[str, dict[str, Any]]:
    """Remove channels in place: each coupled group loses the largest ratio of its members.

    ``protected`` layers (the output layers) keep their output channels. Returns, per layer
    of a group, ``{"prune_group": name, "prune_group_ratio": ratio taken}``.
    """
    criterion = get_importance(importance)
    protected = tuple(protected)
    attn = attention_modules(model)
    head_ratios = {path: group_ratio(layer.qkv_paths, ratios) for path, layer in attn.items()}
    for p in model.parameters():
        p.requires_grad_(True)  # a frozen teacher's copy: Taylor and tracing need gradients
    asked = any(r > 0 for r in ratios.values())
    try:
        # probed on the teacher, on the CPU (``task`` may be a device view: its inputs moved)
        cpu_inputs = tuple(t.cpu() for t in task.example_inputs)
        unprunable = probe_groups(task.model, cpu_inputs, protected) if asked else {}
        graph = graph_of(model, task.example_inputs, protected, unprunable=unprunable)
    except GraphError:
        if asked:
            raise  # one line: why, and that bits and dropping still apply
        model.zero_grad(set_to_none=True)
        return {}
    group_ratios = [group_ratio(g.layers, ratios) if g.prunable else 0.0 for g in graph.groups]
    taken = {
        layer: {"prune_group": g.name, "prune_group_ratio": r}
        for g, r in zip(graph.groups, group_ratios, strict=True)
        for layer in g.layers
    }
    for g in graph.groups:
        if not g.prunable and g.reason and group_ratio(g.layers, ratios) > 0:
            for layer in g.layers:
                taken[layer]["prune_note"] = g.reason
    for path, layer in attn.items():
        for q in layer.qkv_paths:
            taken[q] = {"prune_group": path, "prune_group_ratio": head_ratios[path]}
    if not any(r > 0 for r in group_ratios) and not any(r > 0 for r in head_ratios.values()):
        model.zero_grad(set_to_none=True)
        return taken
    _prepare(model, task, batches, criterion)
    plans, plans_groups = [], []
    for group, tp_group, ratio in zip(graph.groups, graph.tp_groups, group_ratios, strict=True):
        if ratio > 0:
            scores = channel_scores(tp_group, graph.dg, group.channels, criterion=criterion)
            plans.append((tp_group, choose_channels(group, ratio, scores)))
            plans_groups.append((plans[-1], group))
    for tp_group, remove in plans:
        if remove:
            root = [tp_group[0].idxs[i] for i in remove]
            tp_group.prune(idxs=root)
    for path, layer in attn.items():
        prune_heads_(layer, head_ratios[path], criterion)
    model.zero_grad(set_to_none=True)
    failed = failing_module(model, task.example_inputs)
    if failed is not None:
        culprit = model.get_submodule(failed[0]) if failed[0] else None
        pruned = [(g.name, tp_group) for (tp_group, remove), g in plans_groups if remove]
        touching = [
            name for name, tpg in pruned if any(i.dep.target.module is culprit for i in tpg)
        ]
        names = ", ".join(touching or [name for name, _ in pruned] + [p for p in attn if p])
        check_runs(
            model,
            task.example_inputs,
            what="the pruned model",
            hint=f"; pruning group(s) {names} could not follow the shapes into that module: "
            "set prune 0 for their layers (a space rule or the policy's prune.layers)",
        )
    return taken


def _out_channels(mod: nn.Module) -> int | None:
    if isinstance(mod, nn.Linear):
        return mod.out_features
    if isinstance(mod, nn.Conv1d | nn.Conv2d):
        return mod.out_channels
    return None


def prune_records(
    original: nn.Module,
    pruned: nn.Module,
    requested: Mapping[str, float],
    groups: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per layer: requested and achieved ratio, its group, kept and original output channels."""
    groups = groups or {}
    before = dict(original.named_modules())
    records: dict[str, dict[str, Any]] = {}
    for path, mod in pruned.named_modules():
        kept, orig = _out_channels(mod), _out_channels(before.get(path, nn.Identity()))
        if kept is None or orig is None:
            continue
        records[path] = {
            "prune_requested": float(requested.get(path, 0.0)),
            **groups.get(path, {}),
            "prune": round(1.0 - kept / orig, 6),
            "channels_kept": kept,
            "channels_original": orig,
        }
    for path in packed_attention(pruned):
        if f"{path}.out_proj" in records:
            records[f"{path}.out_proj"]["heads"] = "not pruned: nn.MultiheadAttention packs q/k/v"
    return records
