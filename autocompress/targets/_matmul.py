"""Linear layers as ONNX Runtime's integer matmul contrib ops, written from our own codes:
``MatMulNBits`` below 8 bits and ``DynamicQuantizeMatMul`` for dynamic int8."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from autocompress.techniques.quantize import qmax

NBITS_BLOCK = 32


def initializer(name: str, array: np.ndarray) -> onnx.TensorProto:
    array = np.asarray(array)
    return numpy_helper.from_array(array if array.flags.c_contiguous else array.copy(), name)


def pack_nbits(codes: torch.Tensor, bits: int) -> tuple[np.ndarray, int, int]:
    """(N, K) signed codes -> MatMulNBits B (N, k_blocks, blob) uint8, its default zp offset."""
    container = 2 if bits == 2 else 4
    offset = 2 ** (container - 1)
    n, k = codes.shape
    blocks = -(-k // NBITS_BLOCK)
    stored = np.full((n, blocks * NBITS_BLOCK), offset, dtype=np.uint8)
    stored[:, :k] = (codes.numpy().astype(np.int16) + offset).astype(np.uint8)
    per_byte = 8 // container
    stored = stored.reshape(n, blocks, NBITS_BLOCK // per_byte, per_byte)
    packed = np.zeros(stored.shape[:3], dtype=np.uint8)
    for j in range(per_byte):
        packed |= (stored[..., j] << (container * j)).astype(np.uint8)
    return packed, container, blocks


def nbits_nodes(
    path: str,
    node: onnx.NodeProto,
    codes: torch.Tensor,
    scale: torch.Tensor,
    bits: int,
    new_inits: list[onnx.TensorProto],
) -> list[onnx.NodeProto]:
    """A Linear below 8 bits as MatMulNBits (+ Add for a Gemm's bias)."""
    packed, container, blocks = pack_nbits(codes, bits)
    n, k = codes.shape
    b_name, s_name = f"{path}.weight_nbits", f"{path}.weight_nbits_scale"
    new_inits.append(initializer(b_name, packed))
    new_inits.append(
        initializer(s_name, np.repeat(scale.numpy()[:, None], blocks, axis=1).reshape(-1))
    )
    out = node.output[0]
    has_bias = node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]
    mm_out = out + "_nobias" if has_bias else out
    nodes = [
        helper.make_node(
            "MatMulNBits",
            [node.input[0], b_name, s_name],
            [mm_out],
            domain="com.microsoft",
            K=k,
            N=n,
            bits=container,
            block_size=NBITS_BLOCK,
            accuracy_level=4,
            name=node.name or path,
        )
    ]
    if has_bias:
        nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [out]))
    assert qmax(bits) < 2 ** (container - 1)
    return nodes


def dynamic_nodes(
    path: str,
    node: onnx.NodeProto,
    codes: torch.Tensor,
    scale: torch.Tensor,
    inits: dict[str, onnx.TensorProto],
    new_inits: list[onnx.TensorProto],
) -> list[onnx.NodeProto]:
    """An 8-bit Linear (Gemm or MatMul) as ``com.microsoft.DynamicQuantizeMatMul``: the input is
    quantized to uint8 on every call from its own range; B holds our int8 codes (K, N), with our
    per-output-channel scales and zero point 0; a Gemm's bias is the op's float bias."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Gemm" and (
        attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0
    ):
        raise ValueError(f"{path}: Gemm with transA/alpha/beta has no DynamicQuantizeMatMul form")
    w_name, s_name = f"{path}.weight_quantized", f"{path}.weight_scale"
    z_name = f"{path}.weight_zero_point"
    new_inits.append(initializer(w_name, codes.numpy().reshape(codes.shape[0], -1).T))
    new_inits.append(initializer(s_name, scale.numpy()))
    new_inits.append(initializer(z_name, np.zeros(scale.shape, np.int8)))
    inputs = [node.input[0], w_name, s_name, z_name]
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32).reshape(-1)
        b_name = f"{path}.bias_float"
        new_inits.append(initializer(b_name, np.broadcast_to(bias, scale.shape)))
        inputs.append(b_name)
    return [
        helper.make_node(
            "DynamicQuantizeMatMul",
            inputs,
            list(node.output),
            domain="com.microsoft",
            name=node.name or path,
        )
    ]


@functools.cache
def nbits_int8(container: int, accuracy_level: int, block: int = NBITS_BLOCK) -> bool:
    """Whether this CPU's ``MatMulNBits`` (``container``-bit weights at ``accuracy_level``)
    computes with int8-quantized activations, probed on a small random matmul: its output is
    compared with the float product of the dequantized weights and with an emulation that
    quantizes the activations to int8 per ``block`` (symmetric, amax/127). MLAS falls back to
    float compute where it has no int8 kernel for the bit-width."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    k, n, m = 4 * block, 16, 4
    codes = torch.from_numpy(
        rng.integers(-(2 ** (container - 1)) + 1, 2 ** (container - 1), (n, k))
    )
    scale = torch.from_numpy(rng.uniform(0.01, 0.1, n).astype(np.float32))
    packed, _, blocks = pack_nbits(codes.to(torch.int8), container)
    a = rng.standard_normal((m, k)).astype(np.float32)
    a[:, 3] *= 30  # an outlier: int8 activation rounding shows clearly
    graph = helper.make_graph(
        [
            helper.make_node(
                "MatMulNBits",
                ["A", "B", "S"],
                ["Y"],
                domain="com.microsoft",
                K=k,
                N=n,
                bits=container,
                block_size=block,
                accuracy_level=accuracy_level,
            )
        ],
        "probe",
        [helper.make_tensor_value_info("A", onnx.TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [m, n])],
        [
            initializer("B", packed),
            initializer("S", np.repeat(scale.numpy()[:, None], blocks, axis=1).reshape(-1)),
        ],
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    y = session.run(None, {"A": a})[0].astype(np.float64)
    w = codes.numpy().astype(np.float64) * scale.numpy()[:, None]
    blocked = a.reshape(m, -1, block).astype(np.float64)
    s_a = np.abs(blocked).max(axis=-1, keepdims=True) / 127
    emulated = (np.round(blocked / s_a) * s_a).reshape(m, k) @ w.T
    return bool(np.abs(y - emulated).max() < np.abs(y - a.astype(np.float64) @ w.T).max() / 10)
