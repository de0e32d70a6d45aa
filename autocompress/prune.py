"""Structured pruning with torch-pruning's dependency graph: channels, neurons and heads removed.

A per-layer ratio is the fraction of a layer's output channels (neurons) removed. Coupled layers
(residual adds, concatenations, norms, depthwise/grouped convs) shrink together through the
dependency graph. Output layers keep their outputs. Attention modules that expose an int
``num_heads``, child Linears named q/k/v (or q_proj/k_proj/v_proj, query/key/value) and an
output Linear (proj/out_proj/o_proj/out/dense) lose whole heads at the q layer's ratio; their
``num_heads`` attribute is updated and q/k/v outputs are never pruned channel-wise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice

import torch
import torch_pruning as tp
from torch import nn

from .errors import AutoCompressError
from .task import Task, check_runs, run_model

_QKV_NAMES = (("q", "k", "v"), ("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))
_OUT_NAMES = ("proj", "out_proj", "o_proj", "out", "dense")


def _taylor(model: nn.Module, task: Task, batches: int) -> tp.importance.Importance:
    model.zero_grad()
    model.eval()  # gradients without touching BatchNorm running statistics
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


@dataclass(frozen=True)
class AttentionLayer:
    """An attention module whose heads can be removed: q/k/v rows and out-projection columns."""

    module: nn.Module
    qkv: tuple[nn.Linear, nn.Linear, nn.Linear]
    out: nn.Linear


def check_importance(name: str) -> str:
    if name not in IMPORTANCE:
        raise AutoCompressError(
            f"unknown pruning importance {name!r}; choose from {', '.join(sorted(IMPORTANCE))}"
        )
    return name


def attention_modules(model: nn.Module) -> dict[str, AttentionLayer]:
    """Attention modules recognised for head pruning, by path."""
    found = {}
    for path, mod in model.named_modules():
        if not isinstance(getattr(mod, "num_heads", None), int):
            continue
        out = next(
            (getattr(mod, n) for n in _OUT_NAMES if isinstance(getattr(mod, n, None), nn.Linear)),
            None,
        )
        for names in _QKV_NAMES:
            qkv = tuple(getattr(mod, n, None) for n in names)
            if out is not None and all(isinstance(m, nn.Linear) for m in qkv):
                found[path] = AttentionLayer(mod, qkv, out)  # type: ignore[arg-type]
                break
    return found


def _sliced(param: nn.Parameter, index: torch.Tensor, dim: int) -> nn.Parameter:
    new = nn.Parameter(param.detach().index_select(dim, index).clone())
    if param.grad is not None:
        new.grad = param.grad.index_select(dim, index).clone()
    return new


def _head_scores(layer: AttentionLayer, heads: int, importance: str) -> torch.Tensor:
    score = torch.zeros(heads)
    for lin in layer.qkv:
        w = lin.weight.detach()
        if importance == "taylor" and lin.weight.grad is not None:
            w = w * lin.weight.grad
        score += w.abs().reshape(heads, -1).sum(dim=1)
    return score


def prune_heads_(layer: AttentionLayer, ratio: float, importance: str) -> None:
    """Remove ``round(ratio · heads)`` whole heads (at least one head stays)."""
    heads = layer.module.num_heads
    drop = min(heads - 1, int(round(ratio * heads)))
    if drop <= 0:
        return
    head_dim = layer.qkv[0].out_features // heads
    keep = torch.sort(
        torch.topk(_head_scores(layer, heads, importance), heads - drop).indices
    ).values
    rows = (keep[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)
    for lin in layer.qkv:
        lin.weight = _sliced(lin.weight, rows, 0)
        if lin.bias is not None:
            lin.bias = _sliced(lin.bias, rows, 0)
        lin.out_features = len(rows)
    layer.out.weight = _sliced(layer.out.weight, rows, 1)
    layer.out.in_features = len(rows)
    layer.module.num_heads = heads - drop


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
    check_importance(importance)
    modules = dict(model.named_modules())
    attn = attention_modules(model)
    names = {id(m): p for p, m in modules.items()}
    head_linears = {id(m) for layer in attn.values() for m in layer.qkv}
    imp = IMPORTANCE[importance](model, task, batches)
    for layer in attn.values():
        prune_heads_(layer, ratios.get(names[id(layer.qkv[0])], 0.0), importance)
    ratio_dict = {
        modules[p]: r for p, r in ratios.items() if r > 0 and id(modules[p]) not in head_linears
    }
    if ratio_dict:
        pruner = tp.pruner.MetaPruner(
            model,
            example_inputs=task.example_inputs,
            importance=imp,
            pruning_ratio=0.0,
            pruning_ratio_dict=ratio_dict,
            ignored_layers=[modules[p] for p in protected]
            + [m for a in attn.values() for m in a.qkv],
            forward_fn=lambda m, x: m(*x) if isinstance(x, tuple | list) else m(x),
        )
        pruner.step()
    model.zero_grad(set_to_none=True)
    pruned = ", ".join(sorted(p for p, r in ratios.items() if r > 0))
    check_runs(
        model,
        task.example_inputs,
        what="the pruned model",
        hint=f"; pruning ({pruned}) could not follow the shapes into that module: exclude the "
        "layers feeding it with prune 0 (a space rule or the policy's prune.layers)",
    )
    return model
