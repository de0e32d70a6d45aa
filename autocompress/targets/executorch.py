"""The ``executorch`` target: a ``.pte`` program lowered to the XNNPACK delegate, run by
ExecuTorch's own runtime on this CPU (XNNPACK's threadpool at the objective set's threads).

BatchNorms are folded into their convs first (one after a concatenation split over the
branches), as for ``onnxruntime``/``openvino``. The student is exported with ``torch.export`` at
the task's example-input shapes and lowered with ``to_edge_transform_and_lower(...,
partitioner=[XnnpackPartitioner()])``.

Bits: 8 and 32. An 8-bit embedding table becomes int8 codes with per-row scales
(``QuantEmbedding``: the looked-up rows gathered from the codes and dequantized, portable
kernels; ``weight-only``). An 8-bit Conv/Linear becomes an XNNPACK int8 kernel (qs8 weights, per-channel
symmetric, int8 activations) carrying our fine-tuned codes and per-channel scales: the pt2e
graph of ExecuTorch's ``XNNPACKQuantizer`` with its observers pinned to our values
(``_et_lower``; the codes are checked equal after conversion, nothing is re-calibrated for
those layers). Where the layer's output feeds the next int8 layer (a CNN's convolutions) the
kernel is static (qs8 in and out) with the fine-tuning's input scale; a Linear whose output goes
to a float op (a transformer's: LayerNorm, softmax, GELU) runs XNNPACK's qd8 kernel instead
(input quantized per call, float output: XNNPACK's static kernel would force an int8 output
grid that costs accuracy; measured in ``_et_lower._quantizer``). Each record says which
(``activations``). 16 and 4 bits are not offered: per-layer fp16
storage would need fp16 weights cast up inside the lowered graph, and XNNPACK's 4-bit path
takes groupwise Linear weights under dynamic int8 activations (torchao's flow); neither is
built from our codes yet (not tried).

Records come from the lowered program: per layer, whether its op runs inside an XNNPACK
delegate (``runs: XNNPACK``) on int8 inputs and weights (``int-compute``) or falls back to a
portable kernel; ``graph`` counts delegated and portable ops. The header (format, structure,
records, the output tree spec) is stored in the ``.pte`` as a constant method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from autocompress.errors import AutoCompressError
from autocompress.targets import _et_runtime as rt
from autocompress.targets._cpu import cpu_record
from autocompress.targets._lowered import CONVS, LINEARS, OPAQUE, LoweredJob, LoweredTarget
from autocompress.targets.modes import LayerMode
from autocompress.techniques.embedding import quantizes_rows

FORMAT = "autocompress-executorch/1"


@dataclass(frozen=True)
class ExecuTorchTarget(LoweredTarget):
    name: str = "executorch"
    artifact_name: str = "model.pte"
    bits: tuple[int, ...] = (8, 32)
    quant_scopes: ClassVar[dict[str, str]] = {
        "weight+activation": "int8 activations: XNNPACK qs8 Conv/Linear kernels with the "
        "fine-tuning's scales where the output feeds the next int8 layer, qd8 (per-call scales, "
        "float output) for a Linear feeding a float op",
    }
    require = staticmethod(rt.require)  # one line naming the extra when ExecuTorch is missing

    def describe(self) -> list[str]:
        cpu = cpu_record()
        return [
            f"cpu {cpu['model'] or '?'}: XNNPACK delegate, ExecuTorch runtime threadpool at the "
            "objective set's threads",
            "8-bit Conv/Linear: XNNPACK int8 (our codes and scales, pt2e XNNPACKQuantizer graph "
            "with pinned qparams); 16 and 4 bits not offered",
        ]

    def mode(self, module: nn.Module, bits: int, parent: nn.Module | None = None) -> str:
        if bits == 8 and isinstance(module, CONVS + LINEARS) and not isinstance(parent, OPAQUE):
            return LayerMode.INT_COMPUTE
        if bits == 8 and quantizes_rows(module, bits):
            return LayerMode.WEIGHT_ONLY  # int8 table, looked-up rows dequantized
        return LayerMode.FLOAT

    def lower(self, job: LoweredJob) -> dict[str, dict[str, Any]]:
        from torch.utils._pytree import tree_structure, treespec_dumps

        from autocompress.targets import _et_lower

        float_model, bits, inputs = job.model, job.bits, tuple(job.task.example_inputs)
        layers = self.activation_layers(float_model, bits, job.scopes)
        modules = dict(float_model.named_modules())
        tables = [p for p, b in bits.items() if b == 8 and quantizes_rows(modules.get(p), 8)]
        codes = _et_lower.set_codes_(
            float_model, [p for p, b in bits.items() if b == 8 and p not in tables]
        )
        table_bytes = _et_lower.set_tables_(float_model, tables)
        pinned: dict[str, dict[str, Any]] = {}
        graph: nn.Module = float_model
        if layers:
            batches = [b for b, _ in islice(iter(job.task.train_loader), self.calibration_batches)]
            graph, pinned = _et_lower.quantize(
                float_model,
                inputs,
                codes={p: codes[p] for p in layers},
                activations={p: a for p, a in job.activations.items() if p in layers},
                batches=batches,
            )
        methods: dict[str, Any] = {rt.HEADER_METHOD: rt.header_tensor({})}
        edge, program = _et_lower.lower(graph, inputs, methods)
        ops = rt.program_ops(program)
        records: dict[str, dict[str, Any]] = {p: {"bits": b} for p, b in bits.items()}
        rt.read_records_(ops, records)
        for p in tables:  # a lookup, not a compute op: what the program holds and does
            records[p].pop("fallback", None)
            records[p].update(
                mode=LayerMode.WEIGHT_ONLY,
                op="index_select on int8 codes, rows x per-row scales",
                runs="portable",
                bytes=table_bytes[p],
            )
        for p, rec in records.items():
            if "fallback" in rec and p not in layers:
                rec["fallback"] = _not_offered(modules, p)
            if p in pinned:
                rec["weights"] = "our int8 codes and per-channel scales (pinned qparams)"
                if "input_qparams" in pinned[p]:
                    rec["input_qparams"] = pinned[p]["input_qparams"]  # the fine-tuning's
        out_spec = tree_structure(float_model(*inputs))
        header = job.header(
            FORMAT,
            records,
            batch=int(inputs[0].shape[0]),
            out_spec=treespec_dumps(out_spec),
            graph={k: ops[k] for k in ("partitions", "delegated_ops", "portable_ops")},
        )
        _et_lower.set_method_(edge, rt.HEADER_METHOD, rt.header_tensor(header))
        job.path.write_bytes(edge.to_executorch().buffer)
        return records

    def load(self, path: Path, skeleton: nn.Module, *, threads: int = 1) -> nn.Module:
        self.read_meta(path)
        return rt.EtModule(path, threads)

    def graph_record(self, path: Path) -> dict[str, Any]:
        """Partitions delegated to XNNPACK and the op counts inside them and left portable."""
        return dict(self.read_meta(path)["graph"])

    def read_meta(self, path: Path) -> dict[str, Any]:
        rt.require()
        if not path.exists():
            raise AutoCompressError(f"cannot read artifact {path}: no such file")
        try:
            header = rt.read_header(rt.load_program(path))
        except Exception as exc:
            raise AutoCompressError(f"cannot read artifact {path}: {exc}") from None
        if header.get("format") != FORMAT:
            raise AutoCompressError(f"{path} is not an autocompress ExecuTorch artifact ({FORMAT})")
        return header

    def files(self, path: Path) -> list[Path]:
        return [path]


def _not_offered(modules: Mapping[str, nn.Module], path: str) -> str:
    """Why an 8-bit layer is not an int8 kernel on this target (its mode is ``float``)."""
    module, parent = modules.get(path), modules.get(path.rpartition(".")[0])
    if isinstance(parent, OPAQUE):
        why = (
            f"inside {type(parent).__name__}, whose eager fast path bypasses it (no activation QAT)"
        )
    elif isinstance(module, nn.Embedding):
        why = "an embedding lookup (no int8 table kernel)"
    else:
        why = f"no int8 kernel for {type(module).__name__}"
    return f"8-bit codes kept as fp32 weights: {why}"
