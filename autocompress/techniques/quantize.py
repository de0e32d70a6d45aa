"""Symmetric per-channel weight quantization: q = round(w/s)·s, fake-quant with an STE, packing.

The same ``quantize_weight`` is used while fine-tuning (fake-quant) and at conversion, so the
deployed integer weights are exactly what the student trained against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def quantize_weight(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes and per-output-channel scales: w ≈ codes · scale[:, None, ...]."""
    flat = w.detach().reshape(w.shape[0], -1)
    amax = flat.abs().amax(dim=1)  # (C_out,)
    # an all-zero row (sparsity can make one) gets scale 1/qmax: its codes stay 0, and an
    # integer bias scaled by it (ONNX Runtime's s_x·s_w) stays representable
    scale = torch.where(amax > 0, amax.clamp_min(1e-12), torch.ones_like(amax)) / qmax(bits)
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


# --- activations: uint8 per-tensor affine, MinMax-calibrated, then fixed (QAT with an STE) ---


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """uint8 scale and zero point covering [lo, hi] ∪ {0}; zero point 0 when lo >= 0 (after a
    ReLU), so ONNX Runtime drops the ReLU into the preceding integer kernel."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max(hi - lo, 1e-8) / 255.0
    zero_point = int(np.clip(round(-lo / scale), 0, 255))
    return float(np.float32(scale)), zero_point


class ActivationQuant:
    """Fake-quantizes the inputs of the given layers with fixed uint8 qparams.

    ``calibrate_`` runs a few batches and keeps each input's min/max (MinMax calibration);
    ``attach`` then fake-quantizes those inputs with ``torch.fake_quantize_per_tensor_affine``
    (straight-through inside the range). ``qparams`` are the values the target deploys."""

    def __init__(self, layers: list[str]) -> None:
        self.layers = list(layers)
        self.qparams: dict[str, tuple[float, int]] = {}

    def calibrate_(self, model: nn.Module, batches: list) -> dict[str, tuple[float, int]]:
        from autocompress.task import run_model

        modules = dict(model.named_modules())
        ranges: dict[str, list[float]] = {}

        def observe(path: str):
            def hook(mod, args):
                x = args[0].detach()
                lo, hi = float(x.min()), float(x.max())
                r = ranges.setdefault(path, [lo, hi])
                r[0], r[1] = min(r[0], lo), max(r[1], hi)

            return hook

        hooks = [modules[p].register_forward_pre_hook(observe(p)) for p in self.layers]
        was_training = model.training
        try:
            model.eval()
            with torch.inference_mode():
                for inputs in batches:
                    run_model(model, inputs)
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        self.qparams = {p: activation_qparams(*ranges[p]) for p in self.layers if p in ranges}
        return self.qparams

    def attach(self, model: nn.Module) -> list[Any]:
        """Register the fixed fake-quant hooks; returns the handles (``.remove()`` each)."""
        modules = dict(model.named_modules())

        def fq(scale: float, zero_point: int):
            def hook(mod, args):
                x = torch.fake_quantize_per_tensor_affine(args[0], scale, zero_point, 0, 255)
                return (x, *args[1:])

            return hook

        return [
            modules[p].register_forward_pre_hook(fq(s, z)) for p, (s, z) in self.qparams.items()
        ]
