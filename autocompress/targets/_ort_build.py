"""Build the ``onnxruntime`` artifact: export once, rewrite to QDQ, read back what ORT runs,
and (optionally) fall layers whose int8 compute costs too much accuracy back to weight-only."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autocompress.targets import _embedding, _qdq
from autocompress.targets._ort_graph import (
    OrtModule,
    _read_modes,
    export_float,
    load_config,
    optimized_graph,
)
from autocompress.targets.modes import LayerMode


def _as_tuple(inputs: Any) -> tuple:
    return tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)


class Builder:
    """One float export of ``model``, turned into QDQ variants on demand."""

    def __init__(
        self,
        model: nn.Module,
        task: Any,
        *,
        bits: Mapping[str, int],
        activations: dict[str, tuple[float, int]],
        calibration_batches: int,
        int8: set[str],
        quantize_outputs: Collection[str] = (),
        code_bits: Mapping[str, int] | None = None,
        dynamic: Collection[str] = (),
    ) -> None:
        self.task = task
        self.code_bits = dict(code_bits or bits)
        self.quantize_outputs = set(quantize_outputs)
        self.bits = dict(bits)
        self.float = export_float(model, task.example_inputs)
        _qdq.global_pool_(self.float)
        weights = {
            p: m.weight
            for p, m in model.named_modules()
            if p in self.bits and isinstance(getattr(m, "weight", None), torch.Tensor)
        }
        # weight ops only from layers (a table tied to an output projection has its values)
        tables = {p for p, m in model.named_modules() if isinstance(m, nn.Embedding)}
        self.layers = _qdq.map_layers(
            self.float, {p: w for p, w in weights.items() if p not in tables}
        )
        self.tables = _embedding.map_tables(  # embedding lookups (Gather), tables only
            self.float, {p: w for p, w in weights.items() if p in tables}
        )
        self.int8 = {p for p in int8 if p in self.layers}
        self.dynamic = {p for p in dynamic if p in self.layers}
        self.activations = activations
        self.batches = [
            tuple(t.detach().numpy() for t in _as_tuple(inputs))
            for inputs, _ in islice(iter(task.train_loader), calibration_batches)
        ]
        self._calibrated: dict[str, tuple[float, int]] = {}

    def variant(self, int8: set[str]) -> bytes:
        """The QDQ model with ``int8`` layers on integer kernels, serialized."""
        import onnx

        model = onnx.ModelProto()
        model.CopyFrom(self.float)
        layers = _qdq.map_layers(model, {p: ln.weight for p, ln in self.layers.items()})
        outputs = self.quantize_outputs & int8
        _, alias, quant = _qdq.plan(model, layers, int8, self.activations, outputs=outputs)
        todo = [t for t, qp in quant.items() if qp is None and t not in alias]
        missing = [t for t in todo if t not in self._calibrated]
        self._calibrated.update(_qdq.calibrate(self.float, missing, self.batches))
        qparams = {t: qp if qp is not None else self._calibrated.get(t) for t, qp in quant.items()}
        for out, src in alias.items():
            qparams[out] = qparams[src]
        built = _qdq.build(
            model, layers, self.bits, int8, qparams, code_bits=self.code_bits, dynamic=self.dynamic
        )
        _embedding.quantize_tables_(built, self.tables, self.bits)
        return built.SerializeToString()

    def records(self, blob: bytes) -> dict[str, dict[str, Any]]:
        import onnx

        records: dict[str, dict[str, Any]] = {}
        for path, b in self.bits.items():
            rec: dict[str, Any] = {"bits": b}
            if path not in self.layers:
                rec["op"] = "not exported as its own node"
            records[path] = rec
        _read_modes(optimized_graph(blob), records)
        _embedding.table_records_(blob, self.tables, records)
        dequantize = "per call"
        if load_config(onnx.load_from_string(blob)):
            loaded = optimized_graph(blob, as_loaded=True)
            if "DequantizeLinear" not in {n.op_type for n in loaded.graph.node}:
                dequantize = "once at load (constant-folded, session.disable_quant_qdq)"
        for path, rec in records.items():
            if self.code_bits.get(path, rec["bits"]) != rec["bits"]:
                rec["weight_range"] = self.code_bits[path]  # 7: reduce_range codes in int8
            if path in self.dynamic and rec.get("mode") == LayerMode.INT_COMPUTE:
                rec["activations"] = "dynamic"
            if str(rec.get("op", "")).startswith("DequantizeLinear->"):
                rec["dequantize"] = dequantize
        return records

    def accuracy(self, blob: bytes) -> float:
        return float(self.task.evaluate(OrtModule(blob)))

    def build(self, max_layer_drop: float | None) -> tuple[bytes, dict[str, dict[str, Any]]]:
        """The artifact's bytes and per-layer records (after the safety net when set)."""
        blob = self.variant(self.int8)
        records = self.records(blob)
        if max_layer_drop is None:
            return blob, records
        full = self.accuracy(blob)
        costs = {}
        for path in sorted(p for p in self.int8 if records[p]["mode"] == LayerMode.INT_COMPUTE):
            costs[path] = self.accuracy(self.variant(self.int8 - {path})) - full
        fallback = {p for p, cost in costs.items() if cost > max_layer_drop}
        if fallback:
            blob = self.variant(self.int8 - fallback)
            records = self.records(blob)
        for path, cost in costs.items():
            records[path]["int8_cost"] = round(float(cost), 6)
            if path in fallback:
                records[path]["fallback"] = records[path]["mode"]
        return blob, records

    def write(self, path: Path, blob: bytes, header: Mapping[str, Any]) -> None:
        import onnx

        model = onnx.load_from_string(blob)
        entry = model.metadata_props.add()
        entry.key, entry.value = "autocompress", json.dumps(header, default=_plain)
        path.write_bytes(model.SerializeToString())


def builder_for(target: Any, job: Any, **options: Any) -> Builder:
    """The QDQ builder of a ``save`` on ``target`` (onnxruntime, openvino): ``job``'s folded float
    model with the target's int8 layers, weight codes and calibration batches; ``options`` as
    ``Builder`` takes them (``dynamic``)."""
    return Builder(
        job.model,
        job.task,
        bits=job.bits,
        activations=job.activations,
        calibration_batches=target.calibration_batches,
        int8=set(target.activation_layers(job.model, job.bits, job.scopes)),
        quantize_outputs=set(job.meta.get("quant_outputs", ())),
        code_bits=target.code_bits(job.model, job.bits, job.scopes),
        **options,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
