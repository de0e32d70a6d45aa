"""Prune units: the sets of layers one ratio prunes together, traced from the model.

A unit is a coupled channel group of the dependency graph (``groups.graph_of``) or the q/k/v
Linears of one attention module (pruned by whole heads); a rule's prune values apply per unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PruneUnit:
    """Layers pruned by one ratio: a coupled channel group, or the q/k/v of one attention
    module (whole heads). ``reason`` says why it cannot be pruned, if so."""

    name: str
    layers: tuple[str, ...]
    size: int  # channels, or heads for attention
    kind: str  # "channels" or "heads"
    reason: str | None = None
    grouped: tuple[str, ...] = ()  # grouped convs whose slices must stay equal, "conv (in, 4)"


def prune_units(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], outputs: Iterable[str]
) -> dict[str, PruneUnit]:
    """Layer path -> its prune unit, from the dependency graph traced once on a copy."""
    import copy

    from autocompress.analysis.attention import attention_modules
    from autocompress.analysis.groups import GraphError, graph_of
    from autocompress.analysis.layers import PRUNABLE_TYPES
    from autocompress.analysis.probe import probe_groups

    outputs = tuple(outputs)
    try:
        unprunable = probe_groups(model, example_inputs, outputs)
        graph = graph_of(copy.deepcopy(model), example_inputs, outputs, unprunable=unprunable)
    except GraphError as exc:  # no channel or head pruning for this model: every layer says why
        why = str(exc).split("; bits and")[0]
        return {
            p: PruneUnit(p, (p,), 0, "channels", why)
            for p, m in model.named_modules()
            if isinstance(m, PRUNABLE_TYPES)
        }
    units: dict[str, PruneUnit] = {}
    for g in graph.groups:
        grouped = tuple(f"{s.layer} ({s.side}, {len(s.slices)})" for s in g.slicings)
        unit = PruneUnit(g.name, g.layers, g.channels, "channels", g.reason, grouped)
        units.update({layer: unit for layer in g.layers})
    for path, attn in attention_modules(model).items():
        unit = PruneUnit(path or "<model>", attn.qkv_paths, attn.heads, "heads")
        units.update({q: unit for q in attn.qkv_paths})
    return units


def _attention_of(units: Mapping[str, PruneUnit]) -> dict[str, str]:
    """Layer path -> attention module path, for the q/k/v Linears of recognised attention."""
    return {p: u.name for p, u in units.items() if u.kind == "heads"}
