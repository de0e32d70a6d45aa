"""Honest measurements: latency with fixed threads, warm-up and repeats; params; MACs.

``MeasureSettings`` is how a search times its artifacts (an objective set's ``latency``).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autocompress.task import run_model


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
class MeasureSettings:
    """How latency is measured: intra-op threads, warm-up and timed repeats."""

    threads: int = 1
    warmup: int = 5
    repeats: int = 30
    batch_size: int | None = None  # None: the task's example_inputs as given
    # time each candidate interleaved with the teacher's artifact in the same process, so its
    # ratio to the teacher holds when other work on the machine slows both (see measure_paired)
    paired: bool = True

    @classmethod
    def from_latency(cls, latency: Any) -> MeasureSettings:
        """From an objective set's ``latency`` section."""
        return cls(
            threads=latency.threads,
            warmup=latency.warmup,
            repeats=latency.repeats,
            batch_size=latency.batch_size,
            paired=latency.paired,
        )

    def inputs(self, example_inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The example inputs at ``batch_size`` (the first sample repeated)."""
        if self.batch_size is None or example_inputs[0].shape[0] == self.batch_size:
            return example_inputs
        return tuple(
            t[:1].expand(self.batch_size, *t.shape[1:]).contiguous() for t in example_inputs
        )


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
    return _latency(times)


def measure_paired(
    model: nn.Module,
    reference: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    *,
    n_threads: int = 1,
    warmup: int = 5,
    repeats: int = 30,
) -> tuple[Latency, Latency]:
    """Latency of ``model`` and of ``reference``, timed interleaved in this process.

    Each round times both, in an order drawn at random per round (a fixed seed), so a slowdown
    from other work on the machine lands on both alike, and a periodic one (a time slice
    shared with another process) cannot line up with one of the two, as it can with a fixed
    alternation: their ratio is the figure a search can trust under load, where two
    separately timed medians are not.

    Each timed call follows one untimed call of the same model (a turn), so it runs as a
    deployed model called repeatedly does: warm. Timed straight after the other model, a small
    model ran with its weights and buffers evicted by the larger one: the digits search's
    polished ONNX Runtime student timed 0.127 ms interleaved call by call against 0.064 ms
    with the untimed call and 0.045-0.070 ms alone, while the 2.8 MB teacher moved 5 %
    (0.546 vs 0.576 ms): the ratio to the teacher read 4.3x instead of 8-9x.
    """
    if repeats < 20:
        raise ValueError(f"latency needs at least 20 timed repeats, got repeats={repeats}")
    model.eval()
    reference.eval()
    times: tuple[list[float], list[float]] = ([], [])
    pair = (model, reference)
    with threads(n_threads), torch.inference_mode():
        for _ in range(warmup):
            run_model(model, example_inputs)
            run_model(reference, example_inputs)
        order = random.Random(0)
        for _ in range(repeats):
            for i in (0, 1) if order.random() < 0.5 else (1, 0):
                run_model(pair[i], example_inputs)  # untimed: the timed call runs warm
                t0 = time.perf_counter()
                run_model(pair[i], example_inputs)
                times[i].append((time.perf_counter() - t0) * 1e3)
    return _latency(times[0]), _latency(times[1])


def _latency(times: list[float]) -> Latency:
    times = sorted(times)
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    return Latency(median_ms=statistics.median(times), p90_ms=p90, repeats=len(times))


def count_params(model: nn.Module) -> int:
    """Parameters, counting int8 dynamic Linear weights packed inside quantized modules and
    the codes of quantized embedding tables."""
    from autocompress.techniques.embedding import QuantEmbedding

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
