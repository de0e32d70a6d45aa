"""The ``torch`` target: ``model.pt`` run by eager PyTorch (see ``_torch`` for the format)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from autocompress.measure.timing import count_macs, count_params
from autocompress.targets._base import SaveJob, TargetBase


@dataclass(frozen=True)
class TorchTarget(TargetBase):
    name: str = "torch"
    artifact_name: str = "model.pt"
    bits: tuple[int, ...] = (2, 3, 4, 8, 16, 32)
    export_format: ClassVar[str] = "torch"
    # a float ONNX file, measured in ONNX Runtime (``targets.onnx.export_measured``)
    export_conversions: ClassVar[tuple[str, ...]] = ("onnx",)
    # Static activation quantization needs torch.ao's deprecated static modules: not offered
    # (no ``activation_layers``: dynamic int8 Linear quantizes its inputs on the fly).
    quant_scopes: ClassVar[dict[str, str]] = {
        "weight": "8-bit Linear: dynamic int8 (activations quantized on the fly by fbgemm); "
        "Conv and other bit-widths: packed weights dequantized on load, float compute",
    }
    default_scope: ClassVar[str] = "weight"

    def mode(self, module: nn.Module, bits: int, parent: nn.Module | None = None) -> str:
        from autocompress.targets._torch import layer_mode

        return layer_mode(module, bits, parent)

    def write(self, job: SaveJob) -> dict[str, dict[str, Any]]:
        from autocompress.targets import _torch

        return _torch.save(
            job.model, job.path, bits=job.bits, structure=job.structure, meta=job.meta
        )

    def load(self, path: Path, skeleton: nn.Module, *, threads: int = 1) -> nn.Module:
        from autocompress.targets import _torch

        return _torch.load(path, skeleton)

    def read_meta(self, path: Path) -> dict[str, Any]:
        from autocompress.targets._torch import read

        return read(path)[0]

    def files(self, path: Path) -> list[Path]:
        return [path]

    def count(
        self, student: nn.Module, deployed: nn.Module, example_inputs: tuple
    ) -> dict[str, int]:
        return {"params": count_params(deployed), "macs": count_macs(deployed, example_inputs)}
