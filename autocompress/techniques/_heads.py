"""Removing attention heads: scores per head, how many go, and the removal itself.

Which modules are attention and how their heads are laid out is
:mod:`autocompress.analysis.attention`.
"""

from __future__ import annotations

import torch
from torch import nn

from autocompress.analysis.attention import AttentionLayer
from autocompress.techniques.importance import Importance, get_importance


def _sliced(param: nn.Parameter, index: torch.Tensor, dim: int) -> nn.Parameter:
    new = nn.Parameter(param.detach().index_select(dim, index).clone())
    if param.grad is not None:
        new.grad = param.grad.index_select(dim, index).clone()
    return new


def _head_scores(layer: AttentionLayer, heads: int, criterion: Importance) -> torch.Tensor:
    score = torch.zeros(heads, device=layer.out.weight.device)
    for lin in layer.qkv:
        w = criterion(lin.weight.detach(), lin.weight.grad)
        blocks = 3 if layer.packed else 1  # packed rows: q, k, v blocks of ``heads`` heads each
        score += w.reshape(blocks, heads, -1).sum(dim=(0, 2))
    return score


def heads_to_remove(heads: int, ratio: float) -> int:
    """``round(ratio · heads)`` whole heads, at least one head kept."""
    return max(0, min(heads - 1, int(round(ratio * heads))))


def prune_heads_(layer: AttentionLayer, ratio: float, importance: str | Importance) -> None:
    """Remove ``heads_to_remove(heads, ratio)`` whole heads, least important first (scores of
    ``importance`` summed over each head's q/k/v rows)."""
    heads = layer.heads
    drop = heads_to_remove(heads, ratio)
    if drop <= 0:
        return
    blocks = 3 if layer.packed else 1
    width = layer.qkv[0].out_features // blocks
    head_dim = width // heads
    scores = _head_scores(layer, heads, get_importance(importance))
    keep = torch.sort(torch.topk(scores, heads - drop).indices).values.cpu()
    rows = (keep[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)
    if layer.packed:  # the same heads out of the q, k and v blocks
        packed_rows = torch.cat([b * width + rows for b in range(blocks)])
        lin = layer.qkv[0]
        lin.weight = _sliced(lin.weight, packed_rows.to(lin.weight.device), 0)
        if lin.bias is not None:
            lin.bias = _sliced(lin.bias, packed_rows.to(lin.weight.device), 0)
        lin.out_features = len(packed_rows)
        layer.module.split_size = len(rows)
    rows = rows.to(layer.out.weight.device)
    for lin in layer.qkv if not layer.packed else ():
        lin.weight = _sliced(lin.weight, rows, 0)
        if lin.bias is not None:
            lin.bias = _sliced(lin.bias, rows, 0)
        lin.out_features = len(rows)
    layer.out.weight = _sliced(layer.out.weight, rows, 1)
    layer.out.in_features = len(rows)
    setattr(layer.module, layer.heads_attr, heads - drop)
    if isinstance(getattr(layer.module, "all_head_size", None), int):
        layer.module.all_head_size = len(rows)
