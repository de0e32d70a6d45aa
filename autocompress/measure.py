"""Honest measurements: latency with fixed threads, warm-up and repeats; params; MACs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .task import run_model


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, restoring the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p90_ms: float
    repeats: int


def measure_latency(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    *,
    n_threads: int = 1,
    warmup: int = 5,
    repeats: int = 30,
    min_seconds: float = 0.0,
) -> Latency:
    """Median and p90 wall time of one forward pass at ``n_threads`` intra-op threads.

    Runs at least ``repeats`` timed passes after ``warmup`` untimed ones, and keeps going
    until ``min_seconds`` of timed work when that is set.
    """
    if repeats < 20:
        raise ValueError(f"latency needs at least 20 timed repeats, got repeats={repeats}")
    model.eval()
    times: list[float] = []
    with threads(n_threads), torch.inference_mode():
        for _ in range(warmup):
            run_model(model, example_inputs)
        start = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            run_model(model, example_inputs)
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    return Latency(median_ms=statistics.median(times), p90_ms=p90, repeats=len(times))


def count_params(model: nn.Module) -> int:
    """Parameters, counting int8 dynamic Linear weights packed inside quantized modules and
    the codes of quantized embedding tables."""
    from .embedding import QuantEmbedding

    total = sum(p.numel() for p in model.parameters())
    for mod in model.modules():
        if isinstance(mod, torch.ao.nn.quantized.dynamic.Linear):
            w, b = mod._weight_bias()
            total += w.numel() + (b.numel() if b is not None else 0)
        elif isinstance(mod, QuantEmbedding):
            total += mod.codes.numel()
    return total


def count_macs(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of the Conv and Linear layers (float or int8) for one forward."""
    macs = 0

    def conv_hook(m, inputs, out):
        nonlocal macs
        k = m.weight.shape[1] * int(torch.tensor(m.weight.shape[2:]).prod())
        macs += out.numel() * k

    def linear_hook(m, inputs, out):
        nonlocal macs
        macs += out.numel() * m.in_features

    hooks = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear | torch.ao.nn.quantized.dynamic.Linear):
            hooks.append(mod.register_forward_hook(linear_hook))
    try:
        with torch.inference_mode():
            run_model(model.eval(), example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return int(macs)
