"""The ``onnxruntime`` target: ``model.onnx`` run by ONNX Runtime on integer kernels.

The pruned, fine-tuned student is BatchNorm-folded, exported to ONNX and rewritten into a
QDQ graph holding our own weight codes and scales (see ``_qdq``). Activations are uint8 and
weights int8 symmetric (U8S8, zero point 0): on AVX-512-VNNI and AVX-VNNI CPUs MLAS runs these
exactly. On AVX2-only CPUs the u8·s8 products use ``vpmaddubsw``, whose int16 accumulation
saturates (see ``_cpu``); there (option ``reduce_range: auto``, the default) the weights of
integer-compute layers are 7-bit codes (|q| <= 63) stored as int8, in fine-tuning's fake
quantizer and in the artifact alike (``code_bits``); the layer record says ``weight_range: 7``.

Option ``linear: dynamic`` runs 8-bit Linear layers as ``com.microsoft.DynamicQuantizeMatMul``
(activations quantized per call, from their own range; no calibration, no activation
fake-quant while fine-tuning) instead of static QDQ.

An artifact without static int8 layers (weights behind DequantizeLinear only) is loaded with
``session.disable_quant_qdq`` so ORT constant-folds those DQs once at load (``load_config``);
``MatMulNBits`` records ``int-compute`` only where a probe shows int8 activations on this CPU.

Sessions run at ``ORT_ENABLE_ALL`` (which also rewrites QLinearConv to NHWC), with the intra-op
threads of the objective set and one inter-op thread. Each layer's record is read from the
graph ORT optimized (``optimized_model_filepath``): ``int-compute`` when the layer's weights
feed an integer kernel, ``weight-only`` when they pass through a DequantizeLinear or a Cast.

Safety net: with ``max_layer_drop`` set, each int-compute layer is tried as weight-only on the
artifact; a layer whose int8 compute costs more than that much accuracy stays weight-only and
its record says ``"fallback": "weight-only"``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from autocompress.errors import AutoCompressError
from autocompress.targets._cpu import cpu_record, has_vnni
from autocompress.targets._lowered import LINEARS, LoweredJob, LoweredTarget, qdq_mode
from autocompress.targets._ort_graph import OrtModule, optimized_graph
from autocompress.targets.modes import LayerMode

FORMAT = "autocompress-onnx/1"


@dataclass(frozen=True)
class OnnxRuntimeTarget(LoweredTarget):
    name: str = "onnxruntime"
    artifact_name: str = "model.onnx"
    bits: tuple[int, ...] = (2, 3, 4, 8, 16, 32)
    max_layer_drop: float | None = None
    reduce_range: str | bool = "auto"  # auto: 7-bit integer-compute weights without VNNI
    linear: str = "static"  # 8-bit Linear: static QDQ or dynamic (DynamicQuantizeMatMul)
    quant_scopes: ClassVar[dict[str, str]] = {
        "weight": "int8/low-bit weights behind DequantizeLinear, float Conv/Gemm compute",
        "weight+activation": "static uint8 activation scales (calibrated, fake-quantized in "
        "fine-tuning): QLinearConv/QGemm integer kernels at 8 bits; a graph output a "
        "layer set explicitly to it is quantized and dequantized too",
    }
    export_format: ClassVar[str] = "onnx"

    def __post_init__(self) -> None:
        choice = {"auto": "auto", "true": True, "false": False, True: True, False: False}
        key = self.reduce_range.lower() if isinstance(self.reduce_range, str) else self.reduce_range
        if key not in choice:
            raise AutoCompressError(
                f"target 'onnxruntime': reduce_range {self.reduce_range!r} is not one of "
                "auto, true, false"
            )
        object.__setattr__(self, "reduce_range", choice[key])
        drop = self.max_layer_drop
        if drop is not None and (isinstance(drop, bool) or not isinstance(drop, int | float)):
            raise AutoCompressError(
                f"target 'onnxruntime': max_layer_drop {drop!r} must be a number (0.01 = 1 point)"
            )
        if self.linear not in ("static", "dynamic"):
            raise AutoCompressError(
                f"target 'onnxruntime': linear {self.linear!r} is not one of static, dynamic"
            )

    @property
    def reduces_range(self) -> bool:
        """Whether integer-compute weights use 7-bit codes (``auto``: when the CPU lacks VNNI)."""
        return not has_vnni() if self.reduce_range == "auto" else bool(self.reduce_range)

    def describe(self) -> list[str]:
        cpu = cpu_record()
        why = "option" if self.reduce_range != "auto" else ("VNNI" if cpu["vnni"] else "no VNNI")
        codes = "7-bit codes (|q| <= 63)" if self.reduces_range else "full int8 codes (|q| <= 127)"
        return [
            f"cpu {cpu['model'] or '?'}: vnni {'yes' if cpu['vnni'] else 'no'}; reduce_range "
            f"{str(self.reduces_range).lower()} ({why}): 8-bit integer-compute weights use {codes}",
            f"8-bit Linear: {self.linear} activation quantization",
        ]

    def mode(self, module: nn.Module, bits: int, parent: nn.Module | None = None) -> str:
        mode = qdq_mode(module, bits, parent)
        if mode == LayerMode.WEIGHT_ONLY and bits in (2, 3, 4) and isinstance(module, LINEARS):
            from autocompress.targets._matmul import nbits_int8

            # MatMulNBits, accuracy_level 4: int8 activations where this CPU's MLAS has the kernel
            return (
                LayerMode.INT_COMPUTE
                if nbits_int8(2 if bits == 2 else 4, 4)
                else LayerMode.WEIGHT_ONLY
            )
        return mode

    def activation_layers(
        self, model: nn.Module, bits: Mapping[str, int], scopes: Mapping[str, str] | None = None
    ) -> list[str]:
        """The 8-bit integer-compute layers with static activation scales (not ``dynamic``)."""
        dynamic = set(self.dynamic_layers(model, bits, scopes))
        return [p for p in self._int8(model, bits, scopes) if p not in dynamic]

    def dynamic_layers(
        self, model: nn.Module, bits: Mapping[str, int], scopes: Mapping[str, str] | None = None
    ) -> list[str]:
        """8-bit Linear layers run as DynamicQuantizeMatMul (``linear: dynamic``)."""
        if self.linear != "dynamic":
            return []
        modules = dict(model.named_modules())
        return [p for p in self._int8(model, bits, scopes) if isinstance(modules[p], LINEARS)]

    def code_bits(
        self, model: nn.Module, bits: Mapping[str, int], scopes: Mapping[str, str] | None = None
    ) -> dict[str, int]:
        """Per layer, the bit-width of the integer codes that the fine-tuning fake quantizer and
        the artifact both use: 7 for the int8 integer-compute layers under reduce_range."""
        reduced = set(self._int8(model, bits, scopes)) if self.reduces_range else set()
        return {p: 7 if p in reduced else b for p, b in bits.items()}

    def _int8(
        self, model: nn.Module, bits: Mapping[str, int], scopes: Mapping[str, str] | None
    ) -> list[str]:
        """8-bit integer-compute layers whose scope quantizes activations."""
        return super().activation_layers(model, bits, scopes)

    def lower(self, job: LoweredJob) -> dict[str, dict[str, Any]]:
        from autocompress.targets._ort_build import builder_for

        dynamic = set(self.dynamic_layers(job.model, job.bits, job.scopes))
        builder = builder_for(self, job, dynamic=dynamic)
        blob, records = builder.build(self.max_layer_drop)
        header = job.header(FORMAT, records, reduce_range=self.reduces_range, linear=self.linear)
        builder.write(job.path, blob, header)
        return records

    def load(self, path: Path, skeleton: nn.Module, *, threads: int = 1) -> nn.Module:
        self.read_meta(path)
        return OrtModule(path, threads)

    def graph_record(self, path: Path) -> dict[str, Any]:
        """What the optimized graph runs from input to output (see ``_islands``)."""
        from autocompress.targets._islands import graph_record

        return graph_record(optimized_graph(path.read_bytes(), as_loaded=True))

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
