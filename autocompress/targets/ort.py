"""The ``onnxruntime`` target: ``model.onnx`` run by ONNX Runtime on integer kernels.

The pruned, fine-tuned student is BatchNorm-folded, exported to ONNX and rewritten into a
QDQ graph holding our own weight codes and scales (see ``_qdq``). Activations are uint8 and
weights int8 symmetric (U8S8, zero point 0): on AVX-512-VNNI and AVX-VNNI CPUs MLAS runs these
without ``reduce_range``. On AVX2-only CPUs the u8·s8 products use ``vpmaddubsw``, whose int16
accumulation can saturate: there ORT's own quantizer advises ``reduce_range`` (7-bit weights)
or S8S8; we keep full-range int8 and say so here.

Sessions run at ``ORT_ENABLE_ALL`` (which also rewrites QLinearConv to NHWC), with the intra-op
threads of the objective set and one inter-op thread. Each layer's record is read from the
graph ORT optimized (``optimized_model_filepath``): ``int-compute`` when the layer's weights
feed an integer kernel, ``weight-only`` when they pass through a DequantizeLinear or a Cast.

Safety net: with ``max_layer_drop`` set, each int-compute layer is tried as weight-only on the
artifact; a layer whose int8 compute costs more than that much accuracy stays weight-only and
its record says ``"fallback": "weight-only"``.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import AutoCompressError
from ..fold import concat_folds, fold_batchnorm, fold_concat_batchnorm_, foldable_pairs
from ..measure import count_macs, count_params


@contextlib.contextmanager
def no_mha_fastpath() -> Iterator[None]:
    """nn.MultiheadAttention's fused eval fast path has no ONNX symbolic: export without it."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


FORMAT = "autocompress-onnx/1"
OPSET = 21  # int4 DequantizeLinear for low-bit convs
INT_OPS = {
    "QLinearConv",
    "QGemm",
    "QLinearMatMul",
    "MatMulIntegerToFloat",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeMatMul",
}
_LINEARS = (nn.Linear,)
_CONVS = (nn.Conv1d, nn.Conv2d)
_OPAQUE = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


class ExportError(AutoCompressError):
    """A module cannot be exported to ONNX."""


def session_options(threads: int, optimized: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # the optimized-model and unused-initializer notices
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return options


class OrtModule(nn.Module):
    """An ONNX Runtime session behind the nn.Module call interface the task metric uses."""

    def __init__(self, path: Path | bytes, threads: int = 1) -> None:
        super().__init__()
        import onnxruntime as ort

        model = path if isinstance(path, bytes) else str(path)
        self.session = ort.InferenceSession(
            model, session_options(threads), ["CPUExecutionProvider"]
        )
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {n: t.detach().cpu().numpy() for n, t in zip(self.names, inputs, strict=True)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def optimized_graph(model: bytes, threads: int = 1):
    """The graph ORT runs after its optimizations, read back from ``optimized_model_filepath``."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="autocompress-ort-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        ort.InferenceSession(model, session_options(threads, out), ["CPUExecutionProvider"])
        return onnx.load(str(out))


def _failing_module(model: nn.Module, example_inputs: tuple) -> str | None:
    """The first leaf module (in call order) that does not export on its own."""
    calls: list[tuple[str, nn.Module, tuple]] = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out, p=p: calls.append((p, mod, args)))
        for p, m in model.named_modules()
        if p and not list(m.children())
    ]
    try:
        with torch.inference_mode():
            model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    for path, mod, args in calls:
        try:
            with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
                warnings.simplefilter("ignore")
                torch.onnx.export(mod, args, str(Path(tmp) / "m.onnx"), dynamo=False)
        except Exception:
            return path
    return None


def export_float(model: nn.Module, example_inputs: tuple) -> Any:
    """``model`` as a float ONNX graph (dynamic batch), at opset ``OPSET``."""
    import onnx
    from onnx import version_converter

    names = [f"input{i}" for i in range(len(example_inputs))]
    with tempfile.TemporaryDirectory(prefix="autocompress-export-") as tmp:
        path = Path(tmp) / "float.onnx"
        try:
            with warnings.catch_warnings(), no_mha_fastpath():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    example_inputs,
                    str(path),
                    input_names=names,
                    output_names=["output"],
                    dynamic_axes={n: {0: "batch"} for n in [*names, "output"]},
                    opset_version=17,
                    dynamo=False,
                )
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
        names = [f"{path}.weight_{s}" for s in ("quantized", "nbits", "fp16", "cast")]
        node = next((users[n] for n in names if n in users), None)
        if rec["bits"] == 32 or node is None:
            rec.update(mode="float", op=rec.get("op", "float"))
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear":
            consumer = users.get(node.output[0])
            rec.update(
                mode="weight-only", op=f"DequantizeLinear->{consumer.op_type if consumer else '?'}"
            )
        elif node.op_type == "MatMulNBits":
            int8_acts = attrs.get("accuracy_level") == 4 and attrs.get("bits") == 4
            rec.update(mode="int-compute" if int8_acts else "weight-only", op="MatMulNBits")
        elif node.op_type in INT_OPS:
            rec.update(mode="int-compute", op=node.op_type)
        else:
            rec.update(mode="weight-only", op=node.op_type)


@dataclass(frozen=True)
class OnnxRuntimeTarget:
    name: str = "onnxruntime"
    artifact_name: str = "model.onnx"
    bits: tuple[int, ...] = (2, 3, 4, 8, 16, 32)
    calibration_batches: int = 8
    max_layer_drop: float | None = None
    quant_scopes: ClassVar[dict[str, str]] = {
        "weight": "int8/low-bit weights behind DequantizeLinear, float Conv/Gemm compute",
        "weight+activation": "static uint8 activation scales (calibrated, fake-quantized in "
        "fine-tuning): QLinearConv/QGemm integer kernels at 8 bits; a graph output a "
        "layer set explicitly to it is quantized and dequantized too",
    }
    default_scope: ClassVar[str] = "weight+activation"

    def mode(self, module: nn.Module, bits: int, parent: nn.Module | None = None) -> str:
        if bits == 32 or isinstance(parent, _OPAQUE):
            return "float"
        if bits == 8 and isinstance(module, _CONVS + _LINEARS):
            return "int-compute"
        if bits in (3, 4) and isinstance(module, _LINEARS):
            return "int-compute"  # MatMulNBits, accuracy_level 4: int8 activations
        return "weight-only"

    def activation_layers(
        self,
        model: nn.Module,
        bits: Mapping[str, int],
        scopes: Mapping[str, str] | None = None,
    ) -> list[str]:
        from ..scope import with_activations

        modules = dict(model.named_modules())
        capable = [
            p
            for p, b in bits.items()
            if b == 8
            and p in modules
            and self.mode(modules[p], b, modules.get(p.rpartition(".")[0])) == "int-compute"
        ]
        return with_activations(scopes, capable)

    def save(
        self,
        model: nn.Module,
        path: Path,
        *,
        task: Any,
        bits: Mapping[str, int],
        structure: Mapping[str, Mapping[str, Any]],
        meta: Mapping[str, Any],
        activations: Mapping[str, tuple[float, int]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        from ._ort_build import Builder

        folded = foldable_pairs(model)
        float_model = fold_batchnorm(model, folded)
        split = concat_folds(float_model)  # a BatchNorm after a concat: over the branches
        fold_concat_batchnorm_(float_model, split)
        builder = Builder(
            float_model,
            task,
            bits=bits,
            activations=dict(activations or {}),
            calibration_batches=self.calibration_batches,
            int8=set(self.activation_layers(float_model, bits, meta.get("quant_scope"))),
            quantize_outputs=set(meta.get("quant_outputs", ())),
        )
        blob, records = builder.build(self.max_layer_drop)
        header = dict(
            meta, format=FORMAT, structure=structure, layers=records, folded=folded, split=split
        )
        builder.write(path, blob, header)
        return records

    def load(self, path: Path, skeleton: nn.Module, *, threads: int = 1) -> nn.Module:
        self.read_meta(path)
        return OrtModule(path, threads)

    def graph_record(self, path: Path) -> dict[str, Any]:
        """What the optimized graph runs from input to output (see ``_islands``)."""
        from ._islands import graph_record

        return graph_record(optimized_graph(path.read_bytes()))

    def read_meta(self, path: Path) -> dict[str, Any]:
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise AutoCompressError(f"cannot read artifact {path}: {exc}") from None
        props = {p.key: p.value for p in model.metadata_props}
        header = json.loads(props.get("autocompress", "{}"))
        if header.get("format") != FORMAT:
            raise AutoCompressError(f"{path} is not an autocompress ONNX artifact ({FORMAT})")
        return header

    def files(self, path: Path) -> list[Path]:
        extra = [p for p in path.parent.glob(path.name + ".data*")]
        return [path, *extra]

    def count(
        self, student: nn.Module, deployed: nn.Module, example_inputs: tuple
    ) -> dict[str, int]:
        folded = fold_batchnorm(student, foldable_pairs(student))
        fold_concat_batchnorm_(folded, concat_folds(folded))
        return {"params": count_params(folded), "macs": count_macs(folded, example_inputs)}
