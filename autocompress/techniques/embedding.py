"""Quantized embedding tables: per-row (per-token) symmetric integer codes plus float32 scales.

An ``nn.Embedding`` table (V, D) at b bits is stored as codes ``round(w / s)`` with one scale
per row, ``s_v = max|w_v| / (2^(b-1) - 1)`` (``quantize_weight``: dim 0 is the row). The
forward gathers the rows of the looked-up ids and dequantizes those rows only, so the float
table is never rebuilt: a lookup is not integer compute (records say ``weight-only``), but
the table takes b/32 of its float32 bytes, and fine-tuning fake-quantizes exactly these rows.

>>> import torch
>>> table = torch.nn.Embedding(10, 4)
>>> q = QuantEmbedding.from_embedding(table, bits=8)
>>> ids = torch.tensor([[1, 2, 9]])
>>> bool((q(ids) - table(ids)).abs().max() <= table.weight.abs().max() / 127)
True
"""

from __future__ import annotations

import torch
from torch import nn

from autocompress.techniques.quantize import quantize_weight


class QuantEmbedding(nn.Module):
    """An embedding lookup on int8 codes (any bit-width up to 8) and per-row scales."""

    def __init__(
        self, codes: torch.Tensor, scale: torch.Tensor, padding_idx: int | None = None
    ) -> None:
        super().__init__()
        if codes.dtype != torch.int8 or codes.dim() != 2 or scale.shape != codes.shape[:1]:
            raise ValueError(
                f"QuantEmbedding needs (V, D) int8 codes and (V,) scales, got "
                f"{tuple(codes.shape)} {codes.dtype} and {tuple(scale.shape)}"
            )
        self.num_embeddings, self.embedding_dim = codes.shape
        self.padding_idx = padding_idx
        self.register_buffer("codes", codes.contiguous())
        self.register_buffer("scale", scale.to(torch.float32).contiguous())

    @classmethod
    def from_embedding(cls, table: nn.Embedding, bits: int) -> QuantEmbedding:
        codes, scale = quantize_weight(table.weight, bits)
        return cls(codes, scale, table.padding_idx)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        rows = self.codes.index_select(0, flat).to(torch.float32)
        rows = rows * self.scale.index_select(0, flat).unsqueeze(1)
        return rows.reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, codes=int8, per-row scales"


def quantizes_rows(module: nn.Module, bits: int) -> bool:
    """True when a table at ``bits`` is deployed as codes with gathered-row dequantization
    (2-8 bits on a plain lookup; ``max_norm`` renormalizes the float table in place and keeps
    the dequantized float table instead)."""
    return isinstance(module, nn.Embedding) and bits <= 8 and module.max_norm is None
