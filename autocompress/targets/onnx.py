"""Float ONNX export of a ``torch``-target model, measured in ONNX Runtime (``export
--format onnx`` on a torch-target search; the ``onnxruntime`` target writes its own int8 file).

The exported graph computes in float32 with the deployed (already quantized) weight values:
PyTorch's dynamic int8 Linear does not export, so int8 Linears become float Linears holding
the dequantized int8 weights. Every layer is therefore ``weight-only`` in the ONNX file.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from autocompress.targets._ort_graph import OrtModule, write_onnx
from autocompress.targets.modes import LayerMode


def _float_linear(q: nn.Module) -> nn.Linear:
    weight, bias = q._weight_bias()
    lin = nn.Linear(q.in_features, q.out_features, bias=bias is not None)
    lin.weight = nn.Parameter(weight.dequantize(), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return lin


def export_onnx(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path) -> Path:
    """Write ``model`` as ONNX (opset 17, dynamic batch) to ``path``."""
    model = copy.deepcopy(model).eval()
    for name, mod in list(model.named_modules()):
        if isinstance(mod, torch.ao.nn.quantized.dynamic.Linear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, _float_linear(mod))
    return write_onnx(model, example_inputs, path)


def _measure(task, path: Path, settings) -> dict:
    from autocompress.measure.timing import measure_latency

    session = OrtModule(path, settings.threads)
    lat = measure_latency(
        session,
        settings.inputs(task.example_inputs),
        n_threads=settings.threads,
        warmup=settings.warmup,
        repeats=settings.repeats,
    )
    return {
        "accuracy": task.evaluate(session),
        "size_bytes": path.stat().st_size,
        "latency_ms": lat.median_ms,
        "latency_p90_ms": lat.p90_ms,
    }


def export_measured(task, deployed: nn.Module, torch_metrics: dict, out: Path, *, settings) -> dict:
    """Write ``out/model.onnx``, measure it and the ONNX teacher in ONNX Runtime, write
    ``out/metrics.onnx.json``. Every layer is ``weight-only`` (float compute) in the file."""
    import json

    path = export_onnx(deployed, task.example_inputs, out / "model.onnx")
    teacher_path = export_onnx(task.model, task.example_inputs, out / "teacher.onnx")
    measured, base = _measure(task, path, settings), _measure(task, teacher_path, settings)
    teacher_path.unlink()
    metrics = {
        **measured,
        "params": torch_metrics["params"],
        "macs": torch_metrics["macs"],
        "speedup": base["latency_ms"] / measured["latency_ms"],
        "compression": base["size_bytes"] / measured["size_bytes"],
        "teacher": {
            **base,
            "params": torch_metrics["teacher"]["params"],
            "macs": torch_metrics["teacher"]["macs"],
        },
        "layers": {
            p: {**rec, "mode": LayerMode.FLOAT if rec["bits"] == 32 else LayerMode.WEIGHT_ONLY}
            for p, rec in torch_metrics["layers"].items()
        },
        "artifact": "model.onnx",
        "target": "onnx",
        "threads": settings.threads,
    }
    (out / "metrics.onnx.json").write_text(json.dumps(metrics, indent=2))
    return metrics
