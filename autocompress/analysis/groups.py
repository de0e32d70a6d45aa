"""Coupled channel groups of a model, read once from torch-pruning's dependency graph.

A group is a set of layers whose output channels must shrink together (residual adds, shared
norms, depthwise convs that follow their input). It is named after its Conv/Linear members
joined by ``+`` in module order (``stem.0+layer1.0.conv2+layer1.1.conv2``); a name longer
than ``MAX_NAME`` characters keeps its first and last member and counts the ones between.

Constraints each group carries, so that any legal ratio gives a model that runs:

- a grouped conv (``1 < groups``, not depthwise) loses the same number of channels in each of
  its ``groups`` slices, on its output side and on its input side, and keeps at least one
  channel per slice;
- a group touching an output layer, attention q/k/v, ``nn.MultiheadAttention`` or a grouped
  conv that reads only part of its input from the group is not pruned (``reason`` says why).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function

from autocompress.analysis.attention import AttentionLayer, attention_modules
from autocompress.analysis.layers import PRUNABLE_TYPES
from autocompress.errors import AutoCompressError

MAX_NAME = 80
_CONV = (nn.Conv1d, nn.Conv2d)


def is_grouped_conv(mod: nn.Module) -> bool:
    """A conv with several groups that torch-pruning does not treat as depthwise."""
    return (
        isinstance(mod, _CONV)
        and mod.groups > 1
        and not (mod.groups == mod.out_channels == mod.in_channels)
    )


class _ConvPruner(function.ConvPruner):
    """torch-pruning's conv pruner, with input channels of grouped convs removed per slice."""

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        if layer.groups == 1 or layer.transposed:
            return super().prune_in_channels(layer, idxs)
        per_in = layer.in_channels // layer.groups
        per_out = layer.out_channels // layer.groups
        drop = set(int(i) for i in idxs)
        weight = layer.weight.detach()
        slices = []
        for g in range(layer.groups):
            keep = [j for j in range(per_in) if g * per_in + j not in drop]
            slices.append(weight[g * per_out : (g + 1) * per_out][:, keep])
        assert len({s.shape[1] for s in slices}) == 1, "uneven removal across conv groups"
        layer.weight = nn.Parameter(torch.cat(slices, dim=0).contiguous())
        layer.in_channels -= len(drop)
        return layer


@dataclass(frozen=True)
class Slicing:
    """One grouped-conv side inside a group: the group's channel indices, per conv slice."""

    layer: str
    side: str  # "out" or "in"
    slices: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ChannelGroup:
    """Layers whose output channels are removed together, by one ratio."""

    name: str
    layers: tuple[str, ...]
    channels: int
    slicings: tuple[Slicing, ...] = ()
    reason: str | None = None  # why the group is not pruned

    @property
    def prunable(self) -> bool:
        return self.reason is None


@dataclass
class Graph:
    """The dependency graph of one model and its groups, aligned with torch-pruning's."""

    dg: tp.DependencyGraph
    groups: list[ChannelGroup] = field(default_factory=list)
    tp_groups: list[Any] = field(default_factory=list)


def group_name(layers: Sequence[str]) -> str:
    name = "+".join(layers)
    if len(name) <= MAX_NAME or len(layers) <= 2:
        return name
    return f"{layers[0]}+{len(layers) - 2}more+{layers[-1]}"


def _forward(model: nn.Module, inputs: Any) -> Any:
    return model(*inputs) if isinstance(inputs, tuple | list) else model(inputs)


class GraphError(AutoCompressError):
    """The dependency graph of a model cannot be traced: channel pruning does not apply."""


def _where_failed(exc: BaseException) -> str:
    """The innermost function of the traceback (the tracer's step that failed)."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].name}()" if frames else "the tracer"


def build_graph(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    *,
    blocked: Iterable[str] = (),
    reasons: dict[str, str] | None = None,
) -> Graph:
    """Trace ``model`` (in place: gradients get enabled on its parameters) into its groups.

    ``blocked`` layers keep their outputs: any group holding one is not prunable; ``reasons``
    says why per blocked layer (default: "output layer").
    """
    for p in model.parameters():
        p.requires_grad_(True)  # tracing follows autograd; a frozen teacher has no graph
    dg = tp.DependencyGraph()
    dg.REGISTERED_PRUNERS[tp.ops.OPTYPE.CONV] = _ConvPruner()
    dg._in_channel_pruning_fn = {p.prune_in_channels for p in dg.REGISTERED_PRUNERS.values() if p}
    dg._out_channel_pruning_fn = {p.prune_out_channels for p in dg.REGISTERED_PRUNERS.values() if p}
    was_training = model.training
    try:
        with torch.enable_grad():
            dg.build_dependency(model, example_inputs, forward_fn=_forward, verbose=False)
    except Exception as exc:  # inside torch-pruning's tracer: one line, and what still applies
        raise GraphError(
            f"pruning cannot trace {type(model).__name__}'s dependency graph "
            f"({type(exc).__name__} in {_where_failed(exc)}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "bits and block dropping still apply: set the prune ratios to 0"
        ) from None
    finally:
        model.train(was_training)
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    blocked = set(blocked)
    reasons = reasons or {}
    graph = Graph(dg=dg)
    for tp_group in dg.get_all_groups(root_module_types=PRUNABLE_TYPES):
        group = _describe(tp_group, dg, names, order, blocked, reasons)
        if group is not None:
            graph.groups.append(group)
            graph.tp_groups.append(tp_group)
    ranked = sorted(range(len(graph.groups)), key=lambda i: order[graph.groups[i].layers[0]])
    graph.groups = [graph.groups[i] for i in ranked]
    graph.tp_groups = [graph.tp_groups[i] for i in ranked]
    return graph


def _describe(tp_group, dg, names, order, blocked, reasons) -> ChannelGroup | None:
    root = tp_group[0].dep.target.module
    channels = len(tp_group[0].idxs)
    members: list[str] = []
    slicings: list[Slicing] = []
    reason = None
    for item in tp_group:
        mod, handler = item.dep.target.module, item.dep.handler
        path = names.get(mod, "?")
        out_side = dg.is_out_channel_pruning_fn(handler)
        if out_side and isinstance(mod, PRUNABLE_TYPES):
            members.append(path)
            if path in blocked:
                reason = reason or f"{path}: {reasons.get(path, 'output layer')}"
        if isinstance(mod, nn.MultiheadAttention):
            reason = reason or f"{path}: nn.MultiheadAttention (packed q/k/v)"
        if isinstance(mod, nn.LSTM | nn.GRU | nn.RNN):
            reason = reason or f"{path}: recurrent layer"
        if is_grouped_conv(mod):
            side = "out" if out_side else "in"
            size = mod.out_channels if side == "out" else mod.in_channels
            if len(item.idxs) != size:
                reason = reason or f"{path}: grouped conv reads channels of several groups"
                continue
            per = size // mod.groups
            slices: list[list[int]] = [[] for _ in range(mod.groups)]
            for local, root_idx in zip(item.idxs, item.root_idxs, strict=True):
                slices[int(local) // per].append(int(root_idx))
            slicings.append(Slicing(path, side, tuple(tuple(s) for s in slices)))
    if not members:
        return None
    members = sorted(set(members), key=lambda n: order[n])
    if names.get(root) not in members:
        return None
    return ChannelGroup(group_name(members), tuple(members), channels, tuple(slicings), reason)


def blocked_layers(
    model: nn.Module, protected: Iterable[str], attn: Mapping[str, AttentionLayer]
) -> dict[str, str]:
    """Layers whose output channels are not pruned channel-wise, and why."""
    blocked = {p: "output layer" for p in protected}
    for path, layer in attn.items():
        for q in layer.qkv_paths:
            blocked.setdefault(q, f"q/k/v of attention {path} (pruned by whole heads)")
    return blocked


def graph_of(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    protected: Iterable[str],
    *,
    unprunable: Mapping[str, str] | None = None,
) -> Graph:
    """The coupled groups of ``model`` (traced on ``model`` itself: pass a copy to keep it).

    ``unprunable``: layer -> why its group cannot be pruned (``probe.probe_groups``); a group
    holding such a layer is not pruned, with the reason."""
    protected = tuple(protected)
    blocked = blocked_layers(model, protected, attention_modules(model))
    graph = build_graph(model, example_inputs, blocked=blocked, reasons=blocked)
    if unprunable:
        failed = unprunable
        for i, group in enumerate(graph.groups):
            culprit = next((layer for layer in group.layers if layer in failed), None)
            if group.prunable and culprit is not None:
                graph.groups[i] = replace(group, reason=failed[culprit])
    return graph


# -- choosing channels under the group's constraints -----------------------------------------


def _cells(group: ChannelGroup) -> tuple[list[list[int]], list[list[list[int]]]]:
    """The common refinement of every grouped conv's slices: cells, and per slicing the cells
    of each slice. A removal takes the same fraction of every cell, so slices stay equal."""
    slice_of = [{i: j for j, sl in enumerate(s.slices) for i in sl} for s in group.slicings]
    by_sig: dict[tuple[int, ...], list[int]] = {}
    for c in range(group.channels):
        by_sig.setdefault(tuple(m.get(c, -1) for m in slice_of), []).append(c)
    sigs = list(by_sig)
    members = [
        [[k for k, sig in enumerate(sigs) if sig[n] == j] for j in range(len(s.slices))]
        for n, s in enumerate(group.slicings)
    ]
    return list(by_sig.values()), members


def _counts(k: int, group: ChannelGroup, cells, members) -> list[int] | None:
    """Channels removed per cell for about ``k`` in all, or None if a constraint breaks."""
    t = k / group.channels
    x = [min(len(c), round(t * len(c))) for c in cells]
    if sum(x) >= group.channels:
        return None
    for s, slices in zip(group.slicings, members, strict=True):
        sums = {sum(x[k] for k in cells_of) for cells_of in slices}
        if len(sums) != 1 or min(len(sl) for sl in s.slices) - sums.pop() < 1:
            return None
    return x


def choose_channels(group: ChannelGroup, ratio: float, scores: torch.Tensor) -> list[int]:
    """Channels to remove: the legal count nearest ``ratio · channels``, least important first
    (within each cell of the grouped convs' slices)."""
    target = ratio * group.channels
    if not group.prunable or target < 0.5:
        return []
    cells, members = _cells(group)
    best: list[int] | None = None
    for k in sorted(range(group.channels), key=lambda k: (abs(k - target), k)):
        x = _counts(k, group, cells, members)
        if x is not None and (best is None or abs(sum(x) - target) < abs(sum(best) - target)):
            best = x
        if best is not None and abs(k - target) > abs(sum(best) - target) + 1:
            break
    if best is None:
        return []
    remove: list[int] = []
    for cell, n in zip(cells, best, strict=True):
        ranked = sorted(cell, key=lambda c: (float(scores[c]), c))
        remove.extend(ranked[:n])
    return sorted(remove)
