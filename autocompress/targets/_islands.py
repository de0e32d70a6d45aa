"""Read an optimized ONNX Runtime graph for what runs on integers from input to output.

Tensors are followed in graph order: a ``QuantizeLinear`` or an integer kernel with a
quantized output makes a quantized tensor; an op whose data inputs are all quantized
(``MaxPool``, ``Transpose``, ``Reshape`` on uint8) keeps it quantized; a ``DequantizeLinear``
leaves integers. Every other op computes on floats: a float island, listed by name and type.
"""

from __future__ import annotations

from typing import Any

# op types that compute on integers after ORT's QDQ fusion
INT_OPS = {
    "QLinearConv",
    "QGemm",
    "QLinearMatMul",
    "MatMulIntegerToFloat",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeMatMul",
}

_FLOAT_OUT = {"MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulNBits"}
_Y_SCALE = {"QGemm": 7}  # QGemm's y_scale input: absent means a float output


def _quantized_output(node: Any) -> bool:
    op = node.op_type
    if op == "QuantizeLinear" or op.startswith("QLinear"):
        return True
    if op in _Y_SCALE:
        k = _Y_SCALE[op]
        return len(node.input) > k and bool(node.input[k])
    return op in INT_OPS and op not in _FLOAT_OUT


def graph_record(model: Any) -> dict[str, Any]:
    """``{"input": op, "output": op, "integer_ops": {...}, "float_islands": [...]}`` of the
    optimized ``model``: the ops reading the graph inputs and writing its outputs, the count
    of each integer op type, and every op that computes on floats."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    quantized: set[str] = set()
    integer: dict[str, int] = {}
    islands: list[dict[str, str]] = []
    for node in graph.node:
        data = [i for i in node.input if i and i not in inits]
        op = node.op_type
        if op == "DequantizeLinear":
            continue
        if op in INT_OPS and not _quantized_output(node):
            integer[op] = integer.get(op, 0) + 1  # integer inputs, float output
        elif _quantized_output(node) or (data and all(i in quantized for i in data)):
            quantized.update(node.output)
            if op != "QuantizeLinear":
                integer[op] = integer.get(op, 0) + 1
        else:
            islands.append({"op": op, "name": node.name})
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    first = sorted({n.op_type for n in graph.node if inputs & set(n.input)})
    last = sorted({n.op_type for n in graph.node if outputs & set(n.output)})
    return {
        "input": "+".join(first),
        "output": "+".join(last),
        "integer_ops": dict(sorted(integer.items())),
        "float_islands": islands,
    }
