"""Structured pruning with torch-pruning's dependency graph: channels, neurons and heads removed.

A per-layer ratio is the fraction of a layer's output channels (neurons) removed. Coupled layers
(residual adds, concatenations, norms, depthwise/grouped convs) shrink together through the
dependency graph. Output layers keep their outputs. Attention modules that expose an int
``num_heads`` and child Linears named q/k/v (or q_proj/k_proj/v_proj, query/key/value) lose
whole heads at their q/k/v ratio; their ``num_heads`` attribute is updated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import islice

import torch_pruning as tp
from torch import nn

from .task import Task, run_model

_QKV_NAMES = (("q", "k", "v"), ("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))


def _taylor(model: nn.Module, task: Task, batches: int) -> tp.importance.Importance:
    model.zero_grad()
    model.train()
    for inputs, targets in islice(iter(task.train_loader), batches):
        out = task.output_fn(run_model(model, inputs))
        task.task_loss(out, targets).backward()
    return tp.importance.GroupTaylorImportance()


def _magnitude(model: nn.Module, task: Task, batches: int) -> tp.importance.Importance:
    return tp.importance.GroupMagnitudeImportance(p=2)


IMPORTANCE: dict[str, Callable[[nn.Module, Task, int], tp.importance.Importance]] = {
    "taylor": _taylor,
    "magnitude": _magnitude,
}


def attention_modules(model: nn.Module) -> dict[str, tuple[nn.Linear, nn.Linear, nn.Linear]]:
    """Attention modules recognised for head pruning: path -> (q, k, v) Linears."""
    found = {}
    for path, mod in model.named_modules():
        if not isinstance(getattr(mod, "num_heads", None), int):
            continue
        for names in _QKV_NAMES:
            qkv = [getattr(mod, n, None) for n in names]
            if all(isinstance(m, nn.Linear) for m in qkv):
                found[path] = tuple(qkv)
                break
    return found


def prune_(
    model: nn.Module,
    task: Task,
    ratios: Mapping[str, float],
    *,
    importance: str = "taylor",
    protected: Iterable[str] = (),
    batches: int = 4,
) -> nn.Module:
    """Remove channels in place so that each layer in ``ratios`` loses that fraction.

    ``protected`` layers (the output layers) keep their output channels.
    """
    if not any(r > 0 for r in ratios.values()):
        return model
    if importance not in IMPORTANCE:
        raise ValueError(f"unknown importance {importance!r}; choose from {sorted(IMPORTANCE)}")
    modules = dict(model.named_modules())
    attn = attention_modules(model)
    head_linears = {id(m) for qkv in attn.values() for m in qkv}
    ratio_dict = {
        modules[p]: r for p, r in ratios.items() if r > 0 and id(modules[p]) not in head_linears
    }
    num_heads: dict[nn.Module, int] = {}
    head_ratios: dict[nn.Module, float] = {}
    for path, qkv in attn.items():
        for lin in qkv:
            num_heads[lin] = modules[path].num_heads
        q_path = next(p for p, m in modules.items() if m is qkv[0])
        if ratios.get(q_path, 0.0) > 0:
            for lin in qkv:
                head_ratios[lin] = ratios[q_path]
    ignored = [modules[p] for p in protected]
    imp = IMPORTANCE[importance](model, task, batches)
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs=task.example_inputs,
        importance=imp,
        pruning_ratio=0.0,
        pruning_ratio_dict=ratio_dict,
        ignored_layers=ignored,
        num_heads=num_heads,
        prune_num_heads=bool(head_ratios),
        prune_head_dims=False,
        head_pruning_ratio_dict=head_ratios or None,
        forward_fn=lambda m, x: m(*x) if isinstance(x, tuple | list) else m(x),
    )
    pruner.step()
    for path, qkv in attn.items():
        modules[path].num_heads = pruner.num_heads[qkv[0]]
    model.zero_grad(set_to_none=True)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
