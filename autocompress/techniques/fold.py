"""Fold BatchNorm into the convolution before it: one op instead of two in the artifact.

Per-channel symmetric quantization commutes with the per-channel scaling that folding applies
(round(w·a / (|a|·s)) = sign(a)·round(w/s)), so folding after quantization-aware training
keeps the quantized weights the student trained against. Pairs are found by tracing the
model with torch.fx; a model that does not trace is left unfolded.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

_CONVS = (nn.Conv1d, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _traced_norms(model: nn.Module) -> tuple[list[tuple[str, Any]], dict[str, nn.Module], Counter]:
    """Each BatchNorm call of the model's fx graph with the node it normalizes, the model's
    modules by path, and how often each module is called; nothing for a model that does not trace."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:
        return [], {}, Counter()
    modules = dict(model.named_modules())
    calls: Counter = Counter()
    norms: list[tuple[str, Any]] = []
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        calls[node.target] += 1
        if isinstance(modules.get(node.target), _NORMS):
            norms.append((node.target, node.args[0] if node.args else None))
    return norms, modules, calls


def _sole_conv(node: Any, modules: dict[str, nn.Module]) -> bool:
    """A conv module call whose output feeds one node only."""
    return (
        isinstance(node, fx.Node)
        and node.op == "call_module"
        and isinstance(modules.get(node.target), _CONVS)
        and len(node.users) == 1
    )


def foldable_pairs(model: nn.Module) -> dict[str, str]:
    """``{batchnorm path: conv path}`` where the conv's output feeds only that BatchNorm."""
    norms, modules, calls = _traced_norms(model)
    pairs = {
        bn: src.target
        for bn, src in norms
        if _sole_conv(src, modules) and modules[bn].track_running_stats
    }
    # a module called more than once (shared) cannot be folded safely
    return {bn: conv for bn, conv in pairs.items() if calls[bn] == 1 and calls[conv] == 1}


def fold_batchnorm(model: nn.Module, pairs: dict[str, str]) -> nn.Module:
    """A copy of ``model`` with each BatchNorm in ``pairs`` folded into its conv (eval mode)."""
    model = copy.deepcopy(model).eval()
    for bn_path, conv_path in pairs.items():
        conv, bn = model.get_submodule(conv_path), model.get_submodule(bn_path)
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        conv.weight = nn.Parameter(weight.detach(), requires_grad=False)
        conv.bias = nn.Parameter(bias.detach(), requires_grad=False)
        replace_module(model, bn_path, nn.Identity())
    return model


def unfolded_skeleton(model: nn.Module, pairs: dict[str, str]) -> nn.Module:
    """Shape the loader's skeleton like a folded model: convs get biases, norms become Identity."""
    for bn_path, conv_path in pairs.items():
        conv = model.get_submodule(conv_path)
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels), requires_grad=False)
        replace_module(model, bn_path, nn.Identity())
    return model


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, new)


def concat_folds(model: nn.Module) -> dict[str, list[str]]:
    """``{batchnorm path: [conv paths]}`` for a BatchNorm fed only by ``torch.cat`` over the
    channels of conv outputs, each feeding only that cat: the norm splits over the convs."""
    norms, modules, calls = _traced_norms(model)
    folds: dict[str, list[str]] = {}
    for bn, cat in norms:
        if not (isinstance(cat, fx.Node) and cat.op == "call_function" and cat.target is torch.cat):
            continue
        dim = cat.kwargs.get("dim", cat.args[1] if len(cat.args) > 1 else 0)
        parts = cat.args[0]
        convs = [p.target for p in parts if _sole_conv(p, modules) and calls[p.target] == 1]
        if dim == 1 and len(cat.users) == 1 and len(convs) == len(parts) and calls[bn] == 1:
            folds[bn] = convs
    return folds


def fold_concat_batchnorm_(model: nn.Module, folds: dict[str, list[str]]) -> nn.Module:
    """Fold each BatchNorm of ``concat_folds`` into its convs' channel slices, in place."""
    for bn_path, conv_paths in folds.items():
        bn = model.get_submodule(bn_path)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        start = 0
        for conv_path in conv_paths:
            conv = model.get_submodule(conv_path)
            s = scale[start : start + conv.out_channels].detach()
            t = shift[start : start + conv.out_channels].detach()
            bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
            shape = (-1,) + (1,) * (conv.weight.dim() - 1)
            conv.weight = nn.Parameter(conv.weight.detach() * s.reshape(shape), requires_grad=False)
            conv.bias = nn.Parameter(bias.detach() * s + t, requires_grad=False)
            start += conv.out_channels
        replace_module(model, bn_path, nn.Identity())
    return model
