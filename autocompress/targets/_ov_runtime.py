"""OpenVINO as the ``openvino`` target runs it: one ``Core`` per process, the compile settings
every artifact (teacher included) runs under, the callable wrapper the task metric uses, the IR
header, and the per-layer records read from the compiled model's runtime graph."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.errors import AutoCompressError
from autocompress.targets._base import require_modules
from autocompress.targets.modes import LayerMode

HEADER_KEY = "autocompress"
# fp32 stays fp32: on CPUs with AVX-512 BF16 or AMX OpenVINO otherwise runs fp32 models in bf16
INFERENCE_PRECISION = "f32"
# runtime layer types that compute a Conv / Linear / MatMul layer
COMPUTE = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution")
INTEGER = ("u8", "i8")
SKIP = ("Input", "Output", "Const", "Parameter", "Result", "Constant")


def require() -> None:
    """One-line error naming the extra to install when OpenVINO is missing."""
    require_modules("openvino", "openvino")


@functools.cache
def core() -> Any:
    require()
    import openvino as ov

    return ov.Core()


def compile_config(threads: int) -> dict[str, Any]:
    """CPU, ``threads`` inference threads, one stream, the latency hint, fp32 inference."""
    return {
        "INFERENCE_NUM_THREADS": int(threads),
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION,
    }


def compile_model(model: Any, threads: int = 1) -> Any:
    """``model`` (an ``ov.Model`` or an IR path) compiled for ``CPU`` under ``compile_config``."""
    source = str(model) if isinstance(model, Path) else model
    return core().compile_model(source, "CPU", compile_config(threads))


class OvModule(nn.Module):
    """A compiled OpenVINO model (or an IR path, compiled under ``compile_config``) behind the
    nn.Module call interface the task metric uses.

    Inputs are copied into input tensors the request holds (re-made only when a shape changes),
    as a deployed caller fills its input buffers: handing the request a new tensor on every call
    cost 80-170 us per call here, more than the int8 digits CNN itself computes."""

    def __init__(self, model: Path | Any, threads: int = 1) -> None:
        super().__init__()
        self.compiled = compile_model(model, threads) if isinstance(model, Path) else model
        self.request = self.compiled.create_infer_request()
        self.buffers: dict[int, Any] = {}

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        import numpy as np
        import openvino as ov

        for i, t in enumerate(inputs):
            array = t.detach().cpu().numpy()
            held = self.buffers.get(i)
            if held is None or held.shape != array.shape or held.dtype != array.dtype:
                held = self.buffers[i] = np.empty_like(array, order="C")
                self.request.set_input_tensor(i, ov.Tensor(held, shared_memory=True))
            np.copyto(held, array)
        self.request.infer()
        outputs = tuple(
            torch.from_numpy(self.request.get_output_tensor(i).data.copy())
            for i in range(len(self.compiled.outputs))
        )  # a model with several outputs (two heads) returns them all, in order
        return outputs[0] if len(outputs) == 1 else outputs


def inference_precision(compiled: Any) -> str:
    """The precision the compiled model computes floats in (``f32``, ``bf16``...)."""
    return compiled.get_property("INFERENCE_PRECISION_HINT").to_string()


def runtime_ops(compiled: Any) -> list[dict[str, Any]]:
    """The nodes OpenVINO executes: name, layer type, runtime precision, the original (ONNX
    frontend) node names fused into each."""
    ops = []
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind in SKIP:
            continue
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        ops.append(
            {
                "name": op.get_friendly_name(),
                "type": kind,
                "precision": info["runtimePrecision"].astype(str),
                "original": [n for n in names.split(",") if n],
            }
        )
    return ops


def _matches(original: list[str], names: set[str]) -> bool:
    return any(o in names or any(o.startswith(n + "/") for n in names) for o in original)


def find_op(ops: list[dict[str, Any]], names: set[str]) -> dict[str, Any] | None:
    """The compute node among ``ops`` that the ONNX node (or output tensor) ``names`` became."""
    hits = [op for op in ops if _matches(op["original"], names)]
    return next((op for op in hits if op["type"] in COMPUTE), None)


def layer_names(node: Any, users: Mapping[str, list[Any]], inits: set[str]) -> set[str]:
    """Names an ONNX node can carry through OpenVINO's frontend: its own, its outputs (the
    frontend names nodes after their outputs), the output before a split-off bias Add, and a
    bias Add after a MatMul (the FullyConnected it fuses into is named after the Add)."""
    outs = set(node.output)
    names = {node.name, *outs, *(o.removesuffix("_nobias") for o in outs)}
    for user in users.get(node.output[0], []):
        if user.op_type == "Add" and any(i in inits for i in user.input):
            names |= {user.name, *user.output}
    return names - {""}


def read_records_(
    compiled: Any,
    nodes: Mapping[str, set[str]],
    records: dict[str, dict[str, Any]],
    *,
    group_size: int,
) -> None:
    """Each layer's ``mode``, ``op`` and ``runtime_precision`` from what OpenVINO runs (``nodes``:
    per layer, its ``layer_names``): ``int-compute`` only where its compute node runs in u8/i8."""
    ops = runtime_ops(compiled)
    dynamic_group = int(compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE"))
    for path, rec in records.items():
        if "mode" in rec and path not in nodes:  # embedding tables: recorded from the graph
            continue
        op = find_op(ops, nodes[path]) if path in nodes else None
        if op is None:
            mode = LayerMode.FLOAT if rec["bits"] == 32 else LayerMode.WEIGHT_ONLY
            rec.update(mode=mode, op=rec.get("op", "not found in the runtime graph"))
            continue
        precision = op["precision"]
        if rec["bits"] == 32:
            mode = LayerMode.FLOAT
        elif rec["bits"] == 8 and precision in INTEGER:
            mode = LayerMode.INT_COMPUTE
        else:
            mode = LayerMode.WEIGHT_ONLY
        rec.update(mode=mode, op=op["type"], runtime_precision=precision, runtime_node=op["name"])
        if rec["bits"] == 4 and precision in ("u4", "i4"):
            rec["group_size"] = group_size  # OpenVINO's compressed-weight block
            rec["dynamic_quantization_group_size"] = dynamic_group
        elif rec["bits"] == 4:  # int4 codes behind a DequantizeLinear the plugin kept or folded
            kept = any(f"{path}.weight_dq" in o["original"] for o in ops)
            rec["weights"] = f"int4 in the IR, dequantized {'per call' if kept else 'at compile'}"
        elif rec["bits"] == 16:
            rec["weights"] = "f16 in the IR"


def graph_record(compiled: Any) -> dict[str, Any]:
    """The precision the artifact ran in, and a count of each runtime ``layerType precision``."""
    counts: dict[str, int] = {}
    for op in runtime_ops(compiled):
        key = f"{op['type']} {op['precision']}"
        counts[key] = counts.get(key, 0) + 1
    return {
        "inference_precision": inference_precision(compiled),
        "runtime_ops": dict(sorted(counts.items())),
    }


def convert_onnx(path: Path, *, simplify: bool = True) -> Any:
    """The ONNX file as an OpenVINO model; with ``simplify``, passed through OpenVINO's offline
    (MOC) transformations without constant folding, as ``ovc`` runs them: the QDQ graph's shape
    subgraphs and reshapes are simplified, the int8 weight constants stay int8. Not for a graph
    with 16-bit layers: there the transformations turn the f16 weights into f32 constants
    (measured: the IR's weights as large as the fp32 model's), so it is saved as read."""
    model = core().read_model(str(path))
    if simplify:
        from openvino._offline_transformations import apply_moc_transformations

        apply_moc_transformations(model, cf=False)
    return model


def write_ir(model: Any, path: Path, header: Mapping[str, Any]) -> None:
    """``model`` as ``path`` (.xml) + its .bin, the header in the IR's rt_info, weights as
    stored (no fp16 compression)."""
    import openvino as ov

    model.set_rt_info(json.dumps(header, default=_plain), [HEADER_KEY])
    ov.save_model(model, str(path), compress_to_fp16=False)


def read_header(path: Path) -> dict[str, Any]:
    try:
        model = core().read_model(str(path))
        return json.loads(model.get_rt_info([HEADER_KEY]).astype(str))
    except AutoCompressError:
        raise
    except Exception:
        return {}


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
