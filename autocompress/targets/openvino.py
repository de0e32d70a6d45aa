"""The ``openvino`` target: an OpenVINO IR (``model.xml`` + ``model.bin``) run on the CPU plugin.

The IR is converted from the same QDQ ONNX graph the ``onnxruntime`` target builds (``_qdq``,
``_ort_build.Builder``): int8 weight codes and scales from our quantizer (the ones fine-tuning
trained, no re-calibration), uint8 activations with the fine-tuning scales. OpenVINO's ONNX
frontend reads that graph and its low-precision transformations run the 8-bit Conv/Linear
layers as u8 Convolution / FullyConnected kernels. The graph read by the frontend goes through
OpenVINO's offline (MOC) transformations without constant folding (``_ov_runtime.convert_onnx``:
shape subgraphs simplified, int8 weight constants kept; on the digits CNN the IR's XML went
from 229 to 108 KB, its weights 81 KB either way; a graph with 16-bit layers is saved as read,
since the transformations would store its f16 weights as f32) and is saved with its weights as
stored (``compress_to_fp16=False``), its header in the IR's rt_info.

Every artifact, the fp32 teacher included, is compiled for ``CPU`` with the objective set's
threads (``INFERENCE_NUM_THREADS``), one stream, the latency hint and
``INFERENCE_PRECISION_HINT=f32``: on CPUs with AVX-512 BF16 or AMX, OpenVINO otherwise runs an
fp32 model in bf16. Per-layer records are read from the compiled model's runtime graph
(``get_runtime_model()``: each node's ``layerType`` and ``runtimePrecision``), matched to our
layers by the ONNX node names the frontend keeps: ``int-compute`` means OpenVINO ran the layer
in u8/i8; ``metrics.json`` says the precision the artifact ran in (``inference_precision``).

Bits: 8 (int compute on Conv and Linear), 16 (f16 weights in the IR, f32 compute), 32, and 4
as weight compression: a 4-bit Linear (``MatMulNBits`` in the QDQ graph) runs as a
FullyConnected with u4 compressed weights (group size 32, our per-channel scale repeated over
the groups); a 4-bit Conv stores int4 codes and dequantizes them on every call (no u4 conv
kernel). 2 and 3 bits are not offered.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from autocompress.errors import AutoCompressError
from autocompress.targets import _ov_runtime as rt
from autocompress.targets._cpu import cpu_info, cpu_record
from autocompress.targets._lowered import LoweredJob, LoweredTarget, qdq_mode
from autocompress.targets._matmul import NBITS_BLOCK
from autocompress.targets.modes import LayerMode

FORMAT = "autocompress-openvino/1"


@dataclass(frozen=True)
class OpenVinoTarget(LoweredTarget):
    name: str = "openvino"
    artifact_name: str = "model.xml"
    bits: tuple[int, ...] = (4, 8, 16, 32)
    quant_scopes: ClassVar[dict[str, str]] = {
        "weight": "int8/int4 weights dequantized into f32 Convolution/FullyConnected, or u4 "
        "compressed FullyConnected weights",
        "weight+activation": "uint8 activations with the fine-tuning scales: u8 "
        "Convolution/FullyConnected kernels at 8 bits",
    }
    require = staticmethod(rt.require)  # one line naming the extra when OpenVINO is missing

    def describe(self) -> list[str]:
        cpu, flags = cpu_record(), cpu_info()[1]
        bf16 = any(f in flags for f in ("avx512_bf16", "amx_bf16"))
        return [
            f"cpu {cpu['model'] or '?'}: vnni {'yes' if cpu['vnni'] else 'no'}, bf16 "
            f"{'yes' if bf16 else 'no'}; INFERENCE_PRECISION_HINT {rt.INFERENCE_PRECISION} "
            "(fp32 layers run fp32)",
            f"4-bit Linear: u4 compressed FullyConnected weights, group size {NBITS_BLOCK}; "
            "4-bit Conv: int4 weights dequantized per call",
        ]

    def mode(self, module: nn.Module, bits: int, parent: nn.Module | None = None) -> str:
        return qdq_mode(module, bits, parent)

    def lower(self, job: LoweredJob) -> dict[str, dict[str, Any]]:
        from autocompress.targets import _embedding, _qdq
        from autocompress.targets._ort_build import builder_for

        builder = builder_for(self, job)
        blob = builder.variant(builder.int8)
        records: dict[str, dict[str, Any]] = {p: {"bits": b} for p, b in job.bits.items()}
        _embedding.table_records_(blob, builder.tables, records)
        for table in builder.tables:  # a lookup, not a compute node: recorded from the graph
            records[table].setdefault("mode", LayerMode.WEIGHT_ONLY)
            records[table].setdefault("op", "Gather")
        with tempfile.TemporaryDirectory(prefix="autocompress-openvino-") as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            onnx_path.write_bytes(blob)
            model_ov = rt.convert_onnx(onnx_path, simplify=16 not in job.bits.values())
            compiled = rt.compile_model(model_ov)
            _check_output_shape(compiled, job.model, job.task.example_inputs)
            users = _qdq.consumers(builder.float)
            inits = {i.name for i in builder.float.graph.initializer}
            nodes = {p: rt.layer_names(ln.node, users, inits) for p, ln in builder.layers.items()}
            rt.read_records_(compiled, nodes, records, group_size=NBITS_BLOCK)
            precision = rt.inference_precision(compiled)
            rt.write_ir(
                model_ov, job.path, job.header(FORMAT, records, inference_precision=precision)
            )
        return records

    def load(self, path: Path, skeleton: nn.Module, *, threads: int = 1) -> nn.Module:
        self.read_meta(path)
        return rt.OvModule(path, threads)

    def graph_record(self, path: Path) -> dict[str, Any]:
        """The precision the artifact runs in and the runtime ops it runs (type, precision)."""
        return rt.graph_record(rt.compile_model(path))

    def read_meta(self, path: Path) -> dict[str, Any]:
        rt.require()
        if not path.exists():
            raise AutoCompressError(f"cannot read artifact {path}: no such file")
        header = rt.read_header(path)
        if header.get("format") != FORMAT:
            raise AutoCompressError(f"{path} is not an autocompress OpenVINO artifact ({FORMAT})")
        return header

    def files(self, path: Path) -> list[Path]:
        return [path, path.with_suffix(".bin")]


def _check_output_shape(compiled: Any, model: nn.Module, example_inputs: tuple) -> None:
    """OpenVINO's ONNX reader must compute what the model computes: a different output shape
    (seen on graphs from the dynamo exporter) is refused in one line, never deployed."""
    import torch

    with torch.no_grad():
        want = model.eval()(*example_inputs)
    if not isinstance(want, torch.Tensor):
        return
    got = tuple(compiled([t.detach().cpu().numpy() for t in example_inputs])[0].shape)
    if got != tuple(want.shape):
        raise AutoCompressError(
            f"target 'openvino': OpenVINO computes an output of shape {list(got)} where the "
            f"model gives {list(want.shape)} (its ONNX reader does not follow this exported graph); use "
            "target onnxruntime or torch for this model"
        )
