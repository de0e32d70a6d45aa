"""Symmetric per-channel weight quantization: q = round(w/s)·s, fake-quant with an STE, packing.

The same ``quantize_weight`` is used while fine-tuning (fake-quant) and at conversion, so the
deployed integer weights are exactly what the student trained against.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def quantize_weight(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes and per-output-channel scales: w ≈ codes · scale[:, None, ...]."""
    flat = w.detach().reshape(w.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / qmax(bits)  # (C_out,)
    codes = torch.clamp(torch.round(flat / scale[:, None]), -qmax(bits), qmax(bits))
    return codes.reshape(w.shape).to(torch.int8), scale.to(torch.float32)


def dequantize(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (codes.dim() - 1)
    return codes.to(torch.float32) * scale.reshape(shape)


def fake_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    """q(w) in the forward pass, identity gradient in the backward pass (STE)."""
    flat = w.reshape(w.shape[0], -1)
    scale = flat.detach().abs().amax(dim=1).clamp_min(1e-12) / qmax(bits)
    q = torch.clamp(torch.round(flat / scale[:, None]), -qmax(bits), qmax(bits)) * scale[:, None]
    q = q.reshape(w.shape)
    return w + (q - w).detach()


class FakeQuant(nn.Module):
    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.bits == 16:
            return w + (w.half().float() - w).detach()
        return fake_quant(w, self.bits)


def add_fake_quant_(model: nn.Module, bits: Mapping[str, int]) -> None:
    """Parametrize the weight of every layer with bits < 32 by its fake-quantized value."""
    modules = dict(model.named_modules())
    for path, b in bits.items():
        if b < 32:
            parametrize.register_parametrization(modules[path], "weight", FakeQuant(b))


def remove_fake_quant_(model: nn.Module) -> None:
    """Drop the parametrizations, keeping the latent float weights (conversion re-quantizes)."""
    for mod in model.modules():
        if parametrize.is_parametrized(mod, "weight"):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack signed ``bits``-bit codes into a uint8 bit stream (little-endian within a byte)."""
    unsigned = (codes.reshape(-1).to(torch.int16) + qmax(bits)).numpy().astype(np.uint8)
    bitplanes = np.unpackbits(unsigned[:, None], axis=1, bitorder="little")[:, :bits]
    return torch.from_numpy(np.packbits(bitplanes.reshape(-1), bitorder="little"))


def unpack_codes(packed: torch.Tensor, bits: int, shape: tuple[int, ...]) -> torch.Tensor:
    n = int(np.prod(shape))
    stream = np.unpackbits(packed.numpy(), bitorder="little")[: n * bits].reshape(n, bits)
    unsigned = np.packbits(stream, axis=1, bitorder="little")[:, 0].astype(np.int16)
    return torch.from_numpy(unsigned - qmax(bits)).to(torch.int8).reshape(shape)
