"""Rewrite a float ONNX export into a QDQ graph that holds OUR quantized weights.

Per layer (a Conv, or a Linear exported as Gemm or MatMul), by bit-width:

- 8, int-compute: int8 codes and per-output-channel scales from ``quantize_weight`` (zero
  point 0) behind a ``DequantizeLinear``; the bias as int32 with scale s_x·s_w; the input
  activation behind uint8 ``QuantizeLinear``/``DequantizeLinear``. ONNX Runtime fuses these
  into ``QLinearConv`` / ``QGemm`` / ``QLinearMatMul`` / ``MatMulIntegerToFloat``.
- 2/3/4 on a Linear: ``com.microsoft.MatMulNBits`` (4-bit containers for 3 and 4 bits, 2-bit
  for 2), our codes offset by the default zero point 2^(bits-1), our per-channel scale
  repeated over the K blocks.
- 2/3/4 on a Conv: int4 codes (opset 21) behind ``DequantizeLinear`` into a float Conv
  (weight-only: no low-bit conv kernel exists).
- 16: float16 initializer behind a ``Cast``; 32: untouched.

Activations are uint8 per-tensor affine. Inputs of int8 layers take the qparams given by the
caller (the fixed scales fine-tuning used); other quantized tensors (conv outputs before a
residual add, add/concat/pool outputs) get MinMax ranges from running the float graph on the
calibration batches. A quantized tensor that a ReLU produced has zero point 0, so ORT drops
the ReLU into the kernel before it. Add, Concat and pooling become integer ops when all
their inputs are quantized.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from autocompress.targets._matmul import dynamic_nodes, nbits_nodes
from autocompress.targets._matmul import initializer as _init
from autocompress.techniques.quantize import activation_qparams, quantize_weight

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
STRUCTURAL = ("Add", "Concat", "GlobalAveragePool", "AveragePool")
PASSTHROUGH = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze")


@dataclass
class LayerNode:
    node: onnx.NodeProto
    weight: torch.Tensor  # (C_out, ...) as in torch
    transposed: bool  # the initializer holds weight.T (MatMul, Gemm transB=0)


@dataclass
class Plan:
    """What the builder will do: which layers run int8 and which tensors get Q/DQ."""

    int8: set[str] = field(default_factory=set)
    qparams: dict[str, tuple[float, int]] = field(default_factory=dict)


def map_layers(model: onnx.ModelProto, weights: Mapping[str, torch.Tensor]) -> dict[str, LayerNode]:
    """Which ONNX node computes which torch layer, by matching the weight initializer's values."""
    inits = {i.name: i for i in model.graph.initializer}
    by_key: dict[tuple, str] = {}
    for path, w in weights.items():
        flat = w.detach().reshape(w.shape[0], -1) if w.dim() > 2 else w.detach()
        by_key[(tuple(w.shape), w.detach().numpy().tobytes())] = path
        if w.dim() == 2:
            by_key[(tuple(flat.T.shape), flat.T.contiguous().numpy().tobytes())] = path + "\x00T"
    found: dict[str, LayerNode] = {}
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        arr = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        key = by_key.get((arr.shape, np.ascontiguousarray(arr).tobytes()))
        if key is None:
            continue
        path, transposed = key.removesuffix("\x00T"), key.endswith("\x00T")
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            if bool(trans_b) == transposed:
                continue
        found[path] = LayerNode(node=node, weight=weights[path], transposed=transposed)
    return found


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def global_pool_(model: onnx.ModelProto) -> None:
    """ReduceMean over H, W of an NCHW tensor (``x.mean(dim=(2, 3))``) -> GlobalAveragePool +
    Flatten, which ORT runs on uint8 (``QLinearGlobalAveragePool``)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in [*inferred.graph.value_info, *inferred.graph.input]
    }
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in model.graph.node
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
    }
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and node.op_type == "ReduceMean" and len(node.input) > 1:
            axes = inits.get(node.input[1], consts.get(node.input[1]))
        if (
            node.op_type == "ReduceMean"
            and ranks.get(node.input[0]) == 4
            and axes is not None
            and sorted(int(a) % 4 for a in np.atleast_1d(axes)) == [2, 3]
            and attrs.get("keepdims", 1) == 0
        ):
            pooled = node.output[0] + "_pooled"
            nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], [pooled]))
            nodes.append(helper.make_node("Flatten", [pooled], [node.output[0]], axis=1))
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def effective_output(name: str, users: dict[str, list[onnx.NodeProto]]) -> str:
    """The tensor after a ReLU that is the only consumer (ORT folds that ReLU into a Q zp 0)."""
    nxt = users.get(name, [])
    if len(nxt) == 1 and nxt[0].op_type == "Relu":
        return nxt[0].output[0]
    return name


def plan(
    model: onnx.ModelProto,
    layers: Mapping[str, LayerNode],
    int8: set[str],
    input_qparams: Mapping[str, tuple[float, int]],
    *,
    outputs: Collection[str] = (),
) -> tuple[set[str], dict[str, str], dict[str, tuple[float, int] | None]]:
    """Tensors to quantize: ``{tensor: qparams or None (calibrate)}``, plus the integer nodes
    and passthrough aliases (output shares its input's qparams). A graph output computed by
    one of the ``outputs`` layers is quantized too (Q then DQ to float at the very end)."""
    users = consumers(model)
    graph_outputs = {o.name for o in model.graph.output}
    inits = {i.name for i in model.graph.initializer}
    int_nodes: set[str] = set()
    alias: dict[str, str] = {}
    quant: dict[str, tuple[float, int] | None] = {}
    by_node = {id(layers[p].node): p for p in int8}
    for path in int8:
        quant[layers[path].node.input[0]] = input_qparams.get(path)

    def is_int8_layer(node: onnx.NodeProto) -> bool:
        return id(node) in by_node

    for node in model.graph.node:
        acts = [i for i in node.input if i and i not in inits]
        if is_int8_layer(node):
            int_nodes.add(node.name)
            out = effective_output(node.output[0], users)
            feeds_int = all(is_int8_layer(u) for u in users.get(out, []))
            if out in graph_outputs and by_node[id(node)] in outputs:
                quant.setdefault(out, None)
            elif out not in graph_outputs and (node.op_type == "Conv" or feeds_int):
                quant.setdefault(out, None)
        elif node.op_type in STRUCTURAL and acts and all(a in quant for a in acts):
            if len(acts) != len([i for i in node.input if i]):
                continue  # e.g. an Add with a constant operand
            out = effective_output(node.output[0], users)
            if out not in graph_outputs:
                int_nodes.add(node.name)
                quant.setdefault(out, None)
        elif node.op_type in PASSTHROUGH and acts and acts[0] in quant:
            out = node.output[0]
            if out not in graph_outputs:
                int_nodes.add(node.name)
                alias[out] = acts[0]
                if quant.get(out) is not None and quant[acts[0]] is None:
                    quant[acts[0]] = quant[out]
                quant[out] = None
    return int_nodes, alias, quant


def calibrate(
    model: onnx.ModelProto, tensors: list[str], batches: list[tuple[np.ndarray, ...]]
) -> dict[str, tuple[float, int]]:
    """MinMax over the calibration batches, run on the float graph."""
    import onnxruntime as ort

    if not tensors:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output} | {i.name for i in probe.graph.input}
    for t in tensors:
        if t not in known:
            probe.graph.output.append(helper.make_empty_tensor_value_info(t))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, ["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    inner = [t for t in tensors if t not in names]
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    for batch in batches:
        feed = dict(zip(names, batch, strict=True))
        values = session.run(inner, feed) if inner else []
        pairs = [*zip(inner, values, strict=True), *((t, feed[t]) for t in tensors if t in feed)]
        for t, v in pairs:
            lo[t], hi[t] = min(lo[t], float(v.min())), max(hi[t], float(v.max()))
    return {t: activation_qparams(lo[t], hi[t]) for t in tensors}


def _qdq_nodes(tensor: str, qp: tuple[float, int], users: list[onnx.NodeProto], out: list) -> list:
    scale, zp = f"{tensor}_scale", f"{tensor}_zero_point"
    out += [_init(scale, np.array(qp[0], np.float32)), _init(zp, np.array(qp[1], np.uint8))]
    nodes = [helper.make_node("QuantizeLinear", [tensor, scale, zp], [tensor + "_q"])]
    for k, user in enumerate(users):
        dq = f"{tensor}_dq{k}"
        nodes.append(helper.make_node("DequantizeLinear", [tensor + "_q", scale, zp], [dq]))
        for idx, name in enumerate(user.input):
            if name == tensor:
                user.input[idx] = dq
    return nodes


def build(
    model: onnx.ModelProto,
    layers: Mapping[str, LayerNode],
    bits: Mapping[str, int],
    int8: set[str],
    qparams: Mapping[str, tuple[float, int]],
    *,
    code_bits: Mapping[str, int] | None = None,
    dynamic: Collection[str] = (),
) -> onnx.ModelProto:
    """The QDQ model: ``model`` (a float export, modified in place) with quantized weights and
    Q/DQ on the tensors ``qparams`` names. ``int8`` layers take int8 weights and int32 bias;
    ``dynamic`` 8-bit Linear layers become DynamicQuantizeMatMul. ``code_bits`` (default
    ``bits``) is the width of each layer's integer codes (7: reduce_range, stored as int8)."""
    code_bits = code_bits or {}
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users = consumers(model)
    new_inits: list[onnx.TensorProto] = []
    before: dict[int, list[onnx.NodeProto]] = {}
    replace: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[str] = set()
    for path, ln in layers.items():
        b = bits.get(path, 32)
        node = ln.node
        if b == 32:
            continue
        dropped.add(node.input[1])
        if b == 16:
            half = f"{path}.weight_fp16"
            arr = numpy_helper.to_array(inits[node.input[1]]).astype(np.float16)
            new_inits.append(_init(half, arr))
            cast = helper.make_node("Cast", [half], [f"{path}.weight_cast"], to=TensorProto.FLOAT)
            before.setdefault(id(node), []).append(cast)
            node.input[1] = f"{path}.weight_cast"
            continue
        codes, scale = quantize_weight(ln.weight, code_bits.get(path, b))
        if b < 8 and node.op_type in ("Gemm", "MatMul"):
            replace[id(node)] = nbits_nodes(path, node, codes, scale, b, new_inits)
            continue
        if b == 8 and path in dynamic and node.op_type in ("Gemm", "MatMul"):
            replace[id(node)] = dynamic_nodes(path, node, codes, scale, inits, new_inits)
            continue
        w_name, s_name, z_name = f"{path}.weight_quantized", f"{path}.weight_scale", ""
        z_name = f"{path}.weight_zero_point"
        axis = 1 if ln.transposed else 0
        if b == 8:
            arr = codes.numpy()
            new_inits.append(_init(w_name, arr.T if ln.transposed else arr))
            new_inits.append(_init(z_name, np.zeros(scale.shape, np.int8)))
        else:  # low-bit conv: int4 container, weight-only
            arr = codes.numpy()
            new_inits.append(
                helper.make_tensor(w_name, TensorProto.INT4, arr.shape, arr.flatten().tolist())
            )
            new_inits.append(
                helper.make_tensor(z_name, TensorProto.INT4, scale.shape, [0] * scale.numel())
            )
        new_inits.append(_init(s_name, scale.numpy()))
        dq = helper.make_node(
            "DequantizeLinear", [w_name, s_name, z_name], [f"{path}.weight_dq"], axis=axis
        )
        before.setdefault(id(node), []).append(dq)
        node.input[1] = f"{path}.weight_dq"
        if path in int8 and len(node.input) > 2 and node.input[2] in inits:
            s_x = qparams[node.input[0]][0]
            bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            b_scale = (s_x * scale.numpy().astype(np.float64)).astype(np.float32)
            q_bias = np.round(bias / b_scale.astype(np.float64)).astype(np.int32)
            dropped.add(node.input[2])
            names = [f"{path}.bias_quantized", f"{path}.bias_scale", f"{path}.bias_zero_point"]
            new_inits += [
                _init(names[0], q_bias),
                _init(names[1], b_scale),
                _init(names[2], np.zeros(q_bias.shape, np.int32)),
            ]
            before[id(node)].append(
                helper.make_node("DequantizeLinear", names, [f"{path}.bias_dq"], axis=0)
            )
            node.input[2] = f"{path}.bias_dq"
    relus = _absorbed_relus(model, qparams, users)
    qdq: dict[str, list[onnx.NodeProto]] = {}
    outputs = {o.name for o in graph.output}
    for tensor, qp in qparams.items():
        if tensor in outputs:
            qdq.update(_output_qdq(model, tensor, qp, new_inits))
        else:
            qdq[tensor] = _qdq_nodes(tensor, qp, users.get(tensor, []), new_inits)
    nodes: list[onnx.NodeProto] = []
    for t in graph.input:
        nodes += qdq.pop(t.name, [])
    for node in graph.node:
        if id(node) in relus:
            continue
        nodes += before.get(id(node), [])
        nodes += replace.get(id(node), [node])
        for out in node.output:
            nodes += qdq.pop(out, [])
    assert not qdq, f"tensors never produced: {sorted(qdq)}"
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    # the exporter shares identical constants between layers: keep what any node still reads
    kept = [i for i in graph.initializer if i.name not in dropped or i.name in used]
    del graph.initializer[:]
    graph.initializer.extend([*kept, *new_inits])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def _output_qdq(
    model: onnx.ModelProto, tensor: str, qp: tuple[float, int], out: list
) -> dict[str, list[onnx.NodeProto]]:
    """Q -> DQ on a graph output: its producer writes ``<tensor>_float``, the DQ writes it."""
    producer = next(n for n in model.graph.node if tensor in n.output)
    src = tensor + "_float"
    producer.output[list(producer.output).index(tensor)] = src
    scale, zp = f"{tensor}_scale", f"{tensor}_zero_point"
    out += [_init(scale, np.array(qp[0], np.float32)), _init(zp, np.array(qp[1], np.uint8))]
    return {
        src: [
            helper.make_node("QuantizeLinear", [src, scale, zp], [tensor + "_q"]),
            helper.make_node("DequantizeLinear", [tensor + "_q", scale, zp], [tensor]),
        ]
    }


def _absorbed_relus(
    model: onnx.ModelProto,
    qparams: Mapping[str, tuple[float, int]],
    users: dict[str, list[onnx.NodeProto]],
) -> set[int]:
    """ReLUs whose output is quantized with zero point 0: the uint8 Q clamps at 0 already, so
    the ReLU is dropped and its producer writes the quantized tensor directly (ORT's QDQ
    fusions for Add/Concat do not look through a ReLU)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    dropped: set[int] = set()
    for tensor, (_, zp) in qparams.items():
        relu = producers.get(tensor)
        if zp != 0 or relu is None or relu.op_type != "Relu":
            continue
        src = producers.get(relu.input[0])
        if src is None or len(users.get(relu.input[0], [])) != 1:
            continue
        src.output[list(src.output).index(relu.input[0])] = tensor
        dropped.add(id(relu))
    return dropped
