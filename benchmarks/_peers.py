"""What a user would run instead of a search: ONNX Runtime post-training quantization of the
teacher's fp32 ONNX export, and the sessions and round-robin timing the comparison uses."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.measure.timing import threads
from autocompress.targets.runtimes import load_config
from autocompress.task import run_model


class Session(nn.Module):
    """An ONNX Runtime session (one intra-op thread, ``ORT_ENABLE_ALL``, the artifact's own load
    config) called like a model;
    ``ops`` counts the op types of the graph ORT runs after its optimizations."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnx
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # the session entries our target loads an artifact with (weight-only: DQ folded at load)
        for key, value in load_config(onnx.load(str(path), load_external_data=False)).items():
            options.add_session_config_entry(key, value)
        optimized = path.with_suffix(".optimized.onnx")
        options.optimized_model_filepath = str(optimized)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        graph = onnx.load(str(optimized), load_external_data=False).graph
        self.ops = dict(Counter(n.op_type for n in graph.node).most_common())
        optimized.unlink()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {n: t.detach().numpy() for n, t in zip(self.names, inputs, strict=True)}
        return torch.from_numpy(self.session.run(None, feed)[0])


class _Calibration:
    """The task's training batches as ONNX Runtime calibration feeds."""

    def __init__(self, batches: Iterable[Any], names: list[str]) -> None:
        self._feeds = iter(
            [
                {n: t.numpy() for n, t in zip(names, _as_tuple(inputs), strict=True)}
                for inputs, _ in batches
            ]
        )

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


def _as_tuple(inputs: Any) -> tuple[torch.Tensor, ...]:
    return tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)


def quantize_static_peer(fp32: Path, out: Path, calibration: Iterable[Any]) -> Path:
    """QDQ, uint8 activations, int8 symmetric per-channel weights (U8S8), MinMax calibration on
    ``calibration`` batches; shape inference and ORT's pre-processing first."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    names = _input_names(pre)
    quantize_static(
        str(pre),
        str(out),
        _Calibration(calibration, names),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )
    pre.unlink()
    return out


def quantize_dynamic_peer(fp32: Path, out: Path) -> Path:
    """ORT dynamic quantization: int8 weights, activations quantized on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), per_channel=True, weight_type=QuantType.QInt8)
    return out


def _input_names(path: Path) -> list[str]:
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


@dataclass
class Contender:
    """One model in the comparison: how it runs, and the artifact whose files are its size;
    or, where its runtime refused it, no model and the one-line ``error``."""

    name: str
    runtime: str  # a target's name: speedups are against the teacher on the same one
    model: nn.Module | None
    artifact: Path | None
    kind: str  # "reference", "peer", "search" or "policy"
    info: dict[str, Any] = field(default_factory=dict)
    times_ms: list[float] = field(default_factory=list)
    error: str | None = None


def round_robin(
    contenders: list[Contender], inputs: tuple[torch.Tensor, ...], *, rounds: int, per_round: int
) -> None:
    """Time every contender in turn, ``per_round`` calls each per round, one thread; load from
    neighbours hits all of them alike."""
    for c in contenders:
        c.model.eval()
    with threads(1), torch.inference_mode():
        for c in contenders:
            for _ in range(3):
                run_model(c.model, inputs)
        for _ in range(rounds):
            for c in contenders:
                run_model(c.model, inputs)  # untimed: re-warm after the neighbour's turn
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    run_model(c.model, inputs)
                    c.times_ms.append((time.perf_counter() - t0) * 1e3)


def latency(c: Contender) -> dict[str, float]:
    ordered = sorted(c.times_ms)
    return {
        "latency_ms": statistics.median(ordered),
        "latency_p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "timed_calls": len(ordered),
    }
