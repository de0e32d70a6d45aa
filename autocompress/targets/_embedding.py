"""Quantized embedding tables in the ``onnxruntime`` artifact: gather the codes, then dequantize
only the gathered rows.

An ``nn.Embedding`` exports as ``Gather(table, ids)``. At b < 32 bits the table initializer is
replaced by our per-row codes and scales (``quantize_weight``, the values fine-tuning
fake-quantized):

- 8 bits: ``Gather(int8 codes (V, D), ids) -> Cast(float)`` times ``Gather(scales (V, 1), ids)``
  (plain ONNX ops). A ``DequantizeLinear`` of the whole table feeding the Gather would
  dequantize all V rows on every run; this dequantizes the looked-up rows only.
- 2/3/4 bits: ``com.microsoft.GatherBlockQuantized`` on uint8-packed 4-bit codes (offset by
  its default zero point 8), the row's scale repeated over the blocks of the row. A width D
  with no power-of-two block of 16 or more dividing it keeps the codes in the int8 form above.
- 16 bits: a float16 table, ``Gather`` then ``Cast`` to float.

The lookup is not integer compute: records say ``weight-only``, the op, and the bytes the
table's initializers take in the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from autocompress.targets.modes import LayerMode
from autocompress.techniques.quantize import quantize_weight

_SUFFIXES = ("quantized", "scale", "nbits", "nbits_scale", "fp16")


@dataclass(frozen=True)
class Table:
    init: str  # the float table's initializer in the export
    weight: torch.Tensor  # (V, D) as in torch


def map_tables(model: onnx.ModelProto, weights: Mapping[str, torch.Tensor]) -> dict[str, Table]:
    """The layers among ``weights`` whose table feeds a Gather as its data, matched by value
    (shape and bytes)."""
    inits = {i.name: i for i in model.graph.initializer}
    by_key = {
        (tuple(w.shape), w.detach().to(torch.float32).numpy().tobytes()): p
        for p, w in weights.items()
        if w.dim() == 2
    }
    found: dict[str, Table] = {}
    for node in model.graph.node:
        if node.op_type != "Gather" or not node.input or node.input[0] not in inits:
            continue
        arr = numpy_helper.to_array(inits[node.input[0]])
        if arr.dtype != np.float32 or arr.ndim != 2:
            continue
        path = by_key.get((arr.shape, np.ascontiguousarray(arr).tobytes()))
        if path is not None:
            found[path] = Table(node.input[0], weights[path])
    return found


def _block(width: int) -> int | None:
    """The largest power-of-two block (>= 16) dividing a row of ``width`` values."""
    block = 16
    while width % (block * 2) == 0:
        block *= 2
    return block if width % block == 0 else None


def _gathers(model: onnx.ModelProto, table: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] == table]


def _int8_rows(
    path: str, node: onnx.NodeProto, codes: np.ndarray, scale: np.ndarray, k: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Gather the int8 codes and the scales of the looked-up rows, multiply."""
    w, s = f"{path}.weight_quantized", f"{path}.weight_scale"
    ids, out, axis = node.input[1], node.output[0], _axis(node)
    tag = f"{path}.gather{k}"
    nodes = [
        helper.make_node("Gather", [w, ids], [f"{tag}_codes"], axis=axis, name=f"{tag}_codes"),
        helper.make_node("Cast", [f"{tag}_codes"], [f"{tag}_float"], to=TensorProto.FLOAT),
        helper.make_node("Gather", [s, ids], [f"{tag}_scale"], axis=axis, name=f"{tag}_scale"),
        helper.make_node("Mul", [f"{tag}_float", f"{tag}_scale"], [out], name=f"{tag}_mul"),
    ]
    inits = [numpy_helper.from_array(codes, w), numpy_helper.from_array(scale[:, None], s)]
    return nodes, inits


def _nbits_rows(
    path: str, node: onnx.NodeProto, codes: np.ndarray, scale: np.ndarray, block: int, k: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """GatherBlockQuantized on 4-bit codes packed two per byte (low nibble first)."""
    w, s = f"{path}.weight_nbits", f"{path}.weight_nbits_scale"
    unsigned = (codes.astype(np.int16) + 8).astype(np.uint8)
    packed = (unsigned[:, 0::2] | (unsigned[:, 1::2] << 4)).astype(np.uint8)
    scales = np.repeat(scale[:, None], codes.shape[1] // block, axis=1)
    gather = helper.make_node(
        "GatherBlockQuantized",
        [w, node.input[1], s],
        [node.output[0]],
        domain="com.microsoft",
        gather_axis=0,
        quantize_axis=1,
        block_size=block,
        bits=4,
        name=f"{path}.gather{k}",
    )
    return [gather], [numpy_helper.from_array(packed, w), numpy_helper.from_array(scales, s)]


def _fp16_rows(
    path: str, node: onnx.NodeProto, table: np.ndarray, k: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    w, tag = f"{path}.weight_fp16", f"{path}.gather{k}"
    nodes = [
        helper.make_node("Gather", [w, node.input[1]], [f"{tag}_half"], axis=_axis(node)),
        helper.make_node("Cast", [f"{tag}_half"], [node.output[0]], to=TensorProto.FLOAT),
    ]
    return nodes, [numpy_helper.from_array(table.astype(np.float16), w)]


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


def quantize_tables_(
    model: onnx.ModelProto, tables: Mapping[str, Table], bits: Mapping[str, int]
) -> None:
    """Replace each table below 32 bits (and the Gathers reading it) in place."""
    graph = model.graph
    replace: dict[str, list[onnx.NodeProto]] = {}  # by the Gather's output
    new_inits: list[onnx.TensorProto] = []
    dropped: set[str] = set()
    for path, tab in tables.items():
        b, init = bits.get(path, 32), tab.init
        gathers = _gathers(model, init)
        if b == 32 or not gathers or any(_axis(n) != 0 for n in gathers):
            continue
        dropped.add(init)
        table = tab.weight.detach().to(torch.float32)
        codes, scale = (t.numpy() for t in quantize_weight(table, min(b, 8)))
        block = _block(table.shape[1]) if b < 8 else None
        for k, node in enumerate(gathers):
            if b == 16:
                nodes, inits = _fp16_rows(path, node, table.numpy(), k)
            elif block is not None:
                nodes, inits = _nbits_rows(path, node, codes, scale, block, k)
            else:
                nodes, inits = _int8_rows(path, node, codes, scale, k)
            replace[node.output[0]] = nodes
            if k == 0:
                new_inits += inits
    if not replace:
        return
    nodes = [m for n in graph.node for m in replace.get(n.output[0] if n.output else "", [n])]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}  # e.g. a tied output projection
    kept = [i for i in graph.initializer if i.name not in dropped or i.name in used]
    del graph.initializer[:]
    graph.initializer.extend([*kept, *new_inits])
    if any(n.domain == "com.microsoft" for n in nodes) and not any(
        o.domain == "com.microsoft" for o in model.opset_import
    ):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def table_records_(
    blob: bytes, tables: Mapping[str, Table], records: dict[str, dict[str, Any]]
) -> None:
    """Each table's lookup op and the bytes of its initializers in the artifact."""
    model = onnx.load_from_string(blob)
    sizes = {i.name: len(i.raw_data) or i.ByteSize() for i in model.graph.initializer}
    for path, tab in tables.items():
        rec = records.setdefault(path, {})
        names = [tab.init, *(f"{path}.weight_{s}" for s in _SUFFIXES)]
        rec["bytes"] = sum(sizes.get(n, 0) for n in names)
        if rec.get("bits", 32) == 32:
            rec.update(mode=LayerMode.FLOAT, op="Gather")
        elif rec["bits"] < 8 and f"{path}.weight_quantized" in sizes:
            rec["storage"] = "int8 codes (no 4-bit block divides the row)"
