"""Read-only views of the model: layers, dependency groups, attention heads, probes.

Nothing here changes a model; :mod:`autocompress.techniques` does.
"""

from __future__ import annotations

from autocompress.analysis.attention import AttentionLayer, attention_modules, packed_attention
from autocompress.analysis.groups import GraphError, choose_channels, graph_of
from autocompress.analysis.layers import (
    PRUNABLE_TYPES,
    LayerInfo,
    list_layers,
    output_layers,
    per_layer,
    prunable_type,
    resolve_keys,
)
from autocompress.analysis.probe import probe_groups

__all__ = [
    "AttentionLayer",
    "GraphError",
    "LayerInfo",
    "PRUNABLE_TYPES",
    "attention_modules",
    "choose_channels",
    "graph_of",
    "list_layers",
    "output_layers",
    "packed_attention",
    "per_layer",
    "probe_groups",
    "prunable_type",
    "resolve_keys",
]
