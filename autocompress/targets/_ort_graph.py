"""ONNX export and ONNX Runtime sessions shared by the ``onnxruntime`` target and its builder:
float export (a module that will not export is named), session options, the optimized graph ORT
runs, and the per-layer modes read back from it."""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.errors import AutoCompressError
from autocompress.targets._islands import INT_OPS
from autocompress.targets.modes import LayerMode


@contextlib.contextmanager
def no_mha_fastpath() -> Iterator[None]:
    """nn.MultiheadAttention's fused eval fast path has no ONNX symbolic: export without it."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


OPSET = 21  # int4 DequantizeLinear for low-bit convs


class ExportError(AutoCompressError):
    """A module cannot be exported to ONNX."""


# ORT's QDQ handling off: constant folding then dequantizes weights behind DequantizeLinear once,
# when the session is created, instead of on every call (it keeps them otherwise)
FOLD_WEIGHTS = {"session.disable_quant_qdq": "1"}


def load_config(model: Any) -> dict[str, str]:
    """Session config entries an artifact runs with: a graph whose only quantization is weights
    behind DequantizeLinear (no activation QuantizeLinear, so no QDQ fusion to keep) gets
    ``FOLD_WEIGHTS``; MatMulNBits and DynamicQuantizeMatMul are explicit ops, unaffected."""
    ops = {n.op_type for n in model.graph.node}
    return dict(FOLD_WEIGHTS) if "DequantizeLinear" in ops and "QuantizeLinear" not in ops else {}


def _proto(model: Path | bytes) -> Any:
    import onnx

    if isinstance(model, bytes):
        return onnx.load_from_string(model)
    return onnx.load(str(model), load_external_data=False)


def session_options(threads: int, optimized: Path | None = None, config: dict | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # the optimized-model and unused-initializer notices
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return options


class OrtModule(nn.Module):
    """An ONNX Runtime session behind the nn.Module call interface the task metric uses, with the
    artifact's ``load_config``."""

    def __init__(self, path: Path | bytes, threads: int = 1) -> None:
        super().__init__()
        import onnxruntime as ort

        model = path if isinstance(path, bytes) else str(path)
        options = session_options(threads, config=load_config(_proto(path)))
        self.session = ort.InferenceSession(model, options, ["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        feed = {n: t.detach().cpu().numpy() for n, t in zip(self.names, inputs, strict=True)}
        outputs = tuple(torch.from_numpy(o) for o in self.session.run(None, feed))
        return outputs[0] if len(outputs) == 1 else outputs  # several heads: all, in order


def optimized_graph(model: bytes, threads: int = 1, *, as_loaded: bool = False):
    """The graph ORT runs after its optimizations, read back from ``optimized_model_filepath``;
    with ``as_loaded`` under the artifact's ``load_config`` (folded weights lose their names)."""
    import onnx
    import onnxruntime as ort

    config = load_config(_proto(model)) if as_loaded else None
    with tempfile.TemporaryDirectory(prefix="autocompress-ort-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        options = session_options(threads, out, config)
        ort.InferenceSession(model, options, ["CPUExecutionProvider"])
        return onnx.load(str(out))


def _failing_module(model: nn.Module, example_inputs: tuple) -> str | None:
    """The first leaf module (in call order) that does not export on its own."""
    calls: list[tuple[str, nn.Module, tuple]] = []
    with contextlib.ExitStack() as hooks:  # each hook removed on the way out
        for p, m in model.named_modules():
            if p and not list(m.children()):
                record = m.register_forward_hook(
                    lambda mod, args, out, p=p: calls.append((p, mod, args))
                )
                hooks.enter_context(record)
        with torch.inference_mode():
            model(*example_inputs)
    for path, mod, args in calls:
        try:
            with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
                warnings.simplefilter("ignore")
                torch.onnx.export(mod, args, str(Path(tmp) / "m.onnx"), dynamo=False)
        except Exception:
            return path
    return None


def write_onnx(model: nn.Module, example_inputs: tuple, path: Path) -> Path:
    """``torch.onnx.export`` as every ONNX path here calls it: inputs ``input<i>``, output
    ``output``, dynamic batch, opset 17, TorchScript exporter, MHA fast path off. Where the
    TorchScript exporter has no symbolic for an op (``aten::diff`` in Hugging Face decoders'
    mask code), the dynamo exporter (opset 18) runs instead, on a batch of two so that the
    batch stays dynamic."""
    names = [f"input{i}" for i in range(len(example_inputs))]
    common = {
        "input_names": names,
        "output_names": ["output"],
        "dynamic_axes": {n: {0: "batch"} for n in [*names, "output"]},
    }
    with no_mha_fastpath():
        try:
            torch.onnx.export(
                model, example_inputs, str(path), opset_version=17, dynamo=False, **common
            )
        except Exception as exc:
            if "to ONNX opset version" not in str(exc):  # only a missing op symbolic
                raise
            pair = tuple(torch.cat([t, t]) for t in example_inputs)
            with contextlib.redirect_stdout(io.StringIO()):
                torch.onnx.export(model, pair, str(path), opset_version=18, dynamo=True, **common)
    return path


def export_float(model: nn.Module, example_inputs: tuple) -> Any:
    """``model`` as a float ONNX graph (dynamic batch), at opset ``OPSET``."""
    import onnx
    from onnx import version_converter

    with tempfile.TemporaryDirectory(prefix="autocompress-export-") as tmp:
        path = Path(tmp) / "float.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                write_onnx(model, example_inputs, path)
        except Exception as exc:
            culprit = _failing_module(model, example_inputs)
            where = f"module {culprit!r}" if culprit else "the model's own forward"
            raise ExportError(
                f"ONNX export failed in {where}: {str(exc).splitlines()[0]}; exclude it from the "
                "model or use target 'torch'"
            ) from None
        return version_converter.convert_version(onnx.load(str(path)), OPSET)


def _read_modes(optimized: Any, records: dict[str, dict[str, Any]]) -> None:
    """Set each record's ``mode`` and ``op`` from the node its weights feed in ``optimized``."""
    from onnx import helper

    users: dict[str, Any] = {}
    for node in optimized.graph.node:
        for name in node.input:
            users.setdefault(name, node)
    for path, rec in records.items():
        # ``_T``: ORT fuses DequantizeLinear -> MatMul of 8-bit codes into MatMulNBits itself
        suffixes = ("quantized", "nbits", "fp16", "cast", "quantized_T")
        names = [f"{path}.weight_{s}" for s in suffixes]
        node = next((users[n] for n in names if n in users), None)
        if rec["bits"] == 32 or node is None:
            rec.update(mode=LayerMode.FLOAT, op=rec.get("op", "float"))
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear":
            consumer = users.get(node.output[0])
            rec.update(
                mode=LayerMode.WEIGHT_ONLY,
                op=f"DequantizeLinear->{consumer.op_type if consumer else '?'}",
            )
        elif node.op_type == "MatMulNBits" and node.input[1].endswith("_quantized_T"):
            # ORT's own fusion of our int8 weight-only DequantizeLinear -> MatMul: 8-bit
            # weights, float activations
            rec.update(mode=LayerMode.WEIGHT_ONLY, op="MatMulNBits (fused by ONNX Runtime)")
        elif node.op_type == "MatMulNBits":
            from autocompress.targets._matmul import nbits_int8

            level, container = attrs.get("accuracy_level", 0), attrs.get("bits", 4)
            int8_acts = nbits_int8(container, level)  # probed on this CPU, not assumed
            rec.update(
                mode=LayerMode.INT_COMPUTE if int8_acts else LayerMode.WEIGHT_ONLY,
                op="MatMulNBits",
                compute="int8 activations per block" if int8_acts else "float",
            )
        elif node.op_type in INT_OPS:
            rec.update(mode=LayerMode.INT_COMPUTE, op=node.op_type)
        else:
            rec.update(mode=LayerMode.WEIGHT_ONLY, op=node.op_type)
