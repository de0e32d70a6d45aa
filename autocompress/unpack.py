"""Modules replaced, when a Task is built, by equivalents the techniques can compress.

- ``nn.MultiheadAttention`` packs q/k/v in one ``in_proj_weight`` whose width must stay the
  embedding width, so its heads cannot be removed and its projections are no ``nn.Linear`` a
  target quantizes. :class:`SplitMultiheadAttention` computes the same function (same call
  signature, same outputs) with ``q``/``k``/``v``/``out_proj`` Linears and ``num_heads``: head
  pruning (``heads.py``), quantization and every target then treat it like any other attention.
  ``nn.TransformerEncoderLayer``, ``nn.Transformer`` and torchvision's ViT call it as they call
  ``nn.MultiheadAttention`` (their fused fast path is off for it). A module that cannot be
  unpacked exactly (``add_bias_kv``, ``add_zero_attn``) is kept packed, with the reason.
- Hugging Face's ``Conv1D`` (GPT-2 style projections: ``x @ W + b`` with ``W`` of shape
  ``(in, out)``) becomes the ``nn.Linear`` with weight ``W.T``: the dependency graph, pruning,
  quantization and export then see Linears (the packed ``c_attn`` loses whole heads).

The Task checks the outputs on its example inputs and keeps the user's modules if they differ.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class SplitMultiheadAttention(nn.Module):
    """Multi-head attention with separate q/k/v Linears; the interface of
    ``nn.MultiheadAttention`` (``batch_first``, masks, ``need_weights``, ``is_causal``)."""

    _qkv_same_embed_dim = False  # nn.TransformerEncoder(Layer)'s fused fast path stays off
    in_proj_weight = None
    in_proj_bias = None

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        batch_first: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.q = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k = nn.Linear(kdim or embed_dim, embed_dim, bias=bias)
        self.v = nn.Linear(vdim or embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_packed(cls, mha: nn.MultiheadAttention) -> SplitMultiheadAttention:
        """The same attention with ``mha``'s weights (copied)."""
        split = cls(
            mha.embed_dim,
            mha.num_heads,
            kdim=mha.kdim,
            vdim=mha.vdim,
            bias=mha.in_proj_bias is not None,
            dropout=mha.dropout,
            batch_first=mha.batch_first,
        )
        e = mha.embed_dim
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                ws = mha.in_proj_weight.split(e, dim=0)
            else:
                ws = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
            for lin, w in zip((split.q, split.k, split.v), ws, strict=True):
                lin.weight.copy_(w)
            if mha.in_proj_bias is not None:
                for lin, b in zip(
                    (split.q, split.k, split.v), mha.in_proj_bias.split(e), strict=True
                ):
                    lin.bias.copy_(b)
            split.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.out_proj.bias is not None:
                split.out_proj.bias.copy_(mha.out_proj.bias)
        return split.to(mha.out_proj.weight.device).train(mha.training)

    def _heads(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        # (B, L, H·d) -> (B, H, L, d); H is read from the (possibly pruned) width
        return x.reshape(batch, x.shape[1], self.num_heads, -1).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (
                t.unsqueeze(1 if not self.batch_first else 0) for t in (query, key, value)
            )
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first:  # (L, B, E) -> (B, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, length, source = query.shape[0], query.shape[1], key.shape[1]
        q = self._heads(self.q(query), batch)
        k = self._heads(self.k(key), batch)
        v = self._heads(self.v(value), batch)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, L, S)
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(length, source, dtype=torch.bool, device=q.device).triu(1)
        if attn_mask is not None:
            if attn_mask.dim() == 3 and attn_mask.shape[0] != batch * self.num_heads:
                raise ValueError(
                    f"a per-head attn_mask of shape {tuple(attn_mask.shape)} does not match "
                    f"{self.num_heads} heads (heads were pruned): give a 2-D mask or prune 0"
                )
            mask = (
                attn_mask if attn_mask.dim() == 2 else attn_mask.reshape(batch, -1, length, source)
            )
            scores = _masked(scores, mask)
        if key_padding_mask is not None:
            scores = _masked(scores, key_padding_mask.reshape(batch, 1, 1, source))
        weights = F.softmax(scores, dim=-1)
        out = F.dropout(weights, self.dropout, self.training) @ v  # (B, H, L, d)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1 if not self.batch_first else 0)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)
        return out, weights.squeeze(0) if unbatched else weights


def _masked(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A boolean mask hides where True; a float mask is added (as nn.MultiheadAttention)."""
    if mask.dtype == torch.bool:
        return scores.masked_fill(mask, float("-inf"))
    return scores + mask


def _why_packed(mha: nn.MultiheadAttention) -> str | None:
    if mha.bias_k is not None or mha.bias_v is not None:
        return "add_bias_kv=True has no separate-projection equivalent here"
    if mha.add_zero_attn:
        return "add_zero_attn=True has no separate-projection equivalent here"
    return None


def split_packed_attention(model: nn.Module) -> tuple[nn.Module, dict[str, str]]:
    """``model`` with every ``nn.MultiheadAttention`` that can be unpacked replaced by a
    :class:`SplitMultiheadAttention` (a copy of ``model``; ``model`` itself when none), and per
    kept packed module, why."""
    packed = {p: m for p, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    kept = {p: why for p, m in packed.items() if (why := _why_packed(m))}
    if len(kept) == len(packed):
        return model, kept
    model = copy.deepcopy(model)
    for path in packed:
        if path in kept:
            continue
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, SplitMultiheadAttention.from_packed(getattr(parent, name)))
    return model, kept


def _is_hf_conv1d(module: nn.Module) -> bool:
    kind = type(module)
    return kind.__name__ == "Conv1D" and kind.__module__.startswith("transformers")


def _linear_of(conv: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` computing what a Hugging Face ``Conv1D`` computes."""
    n_in, n_out = conv.weight.shape
    linear = nn.Linear(n_in, n_out, bias=conv.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        if conv.bias is not None:
            linear.bias.copy_(conv.bias)
    return linear.to(conv.weight.device).train(conv.training)


def unpack_model(model: nn.Module) -> tuple[nn.Module, dict[str, str]]:
    """``model`` with packed attention split and ``Conv1D`` layers as Linears (a copy; ``model``
    itself when nothing changes), and the attention modules kept packed with why."""
    split, kept = split_packed_attention(model)
    convs = [p for p, m in split.named_modules() if _is_hf_conv1d(m)]
    if convs:
        model = split if split is not model else copy.deepcopy(model)  # never the user's
        for path in convs:
            parent_path, _, name = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            setattr(parent, name, _linear_of(getattr(parent, name)))
        return model, kept
    return split, kept


def untie_linear_weights_(model: nn.Module) -> list[str]:
    """Give each ``nn.Linear`` whose weight is another module's too (a language model's output
    projection tied to its token embedding) its own copy, in place; returns ``"linear ~
    owner"`` pairs. Each then takes its own bit-width and fake quantizer while fine-tuning;
    the artifact stores both, as measured (``metrics.json``: ``untied_weights``)."""
    sharing: dict[int, list[tuple[str, nn.Module]]] = {}
    for path, mod in model.named_modules():  # a module registered twice counts once
        weight = getattr(mod, "weight", None)
        if isinstance(weight, nn.Parameter):
            sharing.setdefault(id(weight), []).append((path, mod))
    untied = []
    for users in sharing.values():
        if len(users) < 2:
            continue
        # the owner: a non-Linear user (the embedding table) if any, else the first
        owner = next((p for p, m in users if not isinstance(m, nn.Linear)), users[0][0])
        for path, mod in users:
            if path != owner and isinstance(mod, nn.Linear):
                w = mod.weight
                mod.weight = nn.Parameter(w.detach().clone(), requires_grad=w.requires_grad)
                untied.append(f"{path} ~ {owner}")
    return sorted(untied)


def unpack_checked(model: nn.Module, example_inputs: tuple) -> tuple[nn.Module, dict[str, str]]:
    """:func:`unpack`, kept only when the outputs on ``example_inputs`` are the same (else the
    user's modules, each packed attention with the reason)."""

    def run_model(m: nn.Module, inputs: Any) -> Any:
        return m(*inputs) if isinstance(inputs, tuple | list) else m(inputs)

    split, kept = unpack_model(model)
    if split is model:
        return model, kept
    was = model.training
    with torch.no_grad():
        before = run_model(model.eval(), example_inputs)
        after = run_model(split.eval(), example_inputs)
    model.train(was)
    split.train(was)
    if same_outputs(before, after):
        return split, kept
    packed = [p for p, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    return model, {p: "unpacked outputs differ on example_inputs" for p in packed}


def same_outputs(a: Any, b: Any, *, atol: float = 1e-4) -> bool:
    """Whether two model outputs (tensors, tuples, dicts of them) agree within ``atol``."""
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, atol=atol)
        )
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(
            same_outputs(x, y, atol=atol) for x, y in zip(a, b, strict=True)
        )
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_outputs(a[k], b[k], atol=atol) for k in a)
    return True


__all__ = [
    "SplitMultiheadAttention",
    "same_outputs",
    "split_packed_attention",
    "unpack_model",
    "unpack_checked",
    "untie_linear_weights_",
]
