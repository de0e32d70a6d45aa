"""What the targets that lower the student into another runtime's graph (``onnxruntime``,
``openvino``, ``executorch``) share: the layer types they run on integer kernels, the int8 layers
they quantize activations for, the float model they export (bits checked, BatchNorms folded into
the convs, also after a concatenation, split over the branches), the header every such artifact
carries, and the params and MACs of that folded model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from autocompress.errors import AutoCompressError
from autocompress.measure.timing import count_macs, count_params
from autocompress.targets._base import SaveJob, TargetBase
from autocompress.targets._cpu import cpu_record
from autocompress.targets.modes import LayerMode
from autocompress.techniques.fold import (
    concat_folds,
    fold_batchnorm,
    fold_concat_batchnorm_,
    foldable_pairs,
)

LINEARS = (nn.Linear,)
CONVS = (nn.Conv1d, nn.Conv2d)
# modules whose eager fast path runs their own projections (their layers stay float)
OPAQUE = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def qdq_mode(module: nn.Module, bits: int, parent: nn.Module | None) -> str:
    """The mode of a layer in a QDQ graph: float at 32 bits or inside an opaque module, integer
    compute for an 8-bit Conv/Linear, weight-only otherwise."""
    if bits == 32 or isinstance(parent, OPAQUE):
        return LayerMode.FLOAT
    if bits == 8 and isinstance(module, CONVS + LINEARS):
        return LayerMode.INT_COMPUTE
    return LayerMode.WEIGHT_ONLY


def folded_float(model: nn.Module) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(a float copy of ``model`` with its BatchNorms folded, the folded pairs, the concat
    splits)."""
    folded = foldable_pairs(model)
    float_model = fold_batchnorm(model, folded)
    split = concat_folds(float_model)  # a BatchNorm after a concat: over the branches
    fold_concat_batchnorm_(float_model, split)
    return float_model, folded, split


@dataclass(frozen=True)
class LoweredJob(SaveJob):
    """A ``save`` as a lowered target runs it: ``model`` is the folded float model."""

    folded: dict[str, Any] | None = None
    split: dict[str, Any] | None = None

    def header(self, fmt: str, records: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        """The artifact's header: ``meta``, the format, structure, records, folds, ``extra``
        and this CPU."""
        return dict(
            self.meta,
            format=fmt,
            structure=self.structure,
            layers=records,
            folded=self.folded,
            split=self.split,
            **extra,
            cpu=cpu_record(),
        )


@dataclass(frozen=True)
class LoweredTarget(TargetBase):
    """The parts of the target contract these targets answer alike; each writes its artifact in
    ``lower``."""

    name: str
    artifact_name: str
    bits: tuple[int, ...]
    # training batches that calibrate the int8 activations fine-tuning left without scales
    calibration_batches: int = 8
    default_scope: ClassVar[str] = "weight+activation"

    def activation_layers(
        self, model: nn.Module, bits: Mapping[str, int], scopes: Mapping[str, str] | None = None
    ) -> list[str]:
        """8-bit integer-compute layers whose scope quantizes activations."""
        from autocompress.targets import int8_activation_layers

        return int8_activation_layers(self, model, bits, scopes)  # type: ignore[arg-type]

    def float_for_export(
        self, model: nn.Module, bits: Mapping[str, int]
    ) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
        """(the float model with BatchNorms folded, the folded pairs, the concat splits);
        a bit-width this target does not run is one line."""
        wrong = sorted({b for b in bits.values() if b not in self.bits})
        if wrong:
            raise AutoCompressError(
                f"target {self.name!r} cannot run {wrong[0]}-bit layers; bits: "
                f"{', '.join(map(str, self.bits))}"
            )
        return folded_float(model)

    def write(self, job: SaveJob) -> dict[str, dict[str, Any]]:
        """The runtime checked, the model folded, then lowered by the target's ``lower``."""
        self.require()
        float_model, folded, split = self.float_for_export(job.model, job.bits)
        fields = {**vars(job), "model": float_model}
        return self.lower(LoweredJob(**fields, folded=folded, split=split))

    def lower(self, job: LoweredJob) -> dict[str, dict[str, Any]]:
        """Write ``job``'s folded float model as this target's artifact; per-layer records."""
        raise self._lacks("lower")

    def count(
        self, student: nn.Module, deployed: nn.Module, example_inputs: tuple
    ) -> dict[str, int]:
        """Params and MACs of the folded float model the artifact was written from."""
        folded = folded_float(student)[0]
        return {"params": count_params(folded), "macs": count_macs(folded, example_inputs)}


__all__ = ["CONVS", "LINEARS", "LoweredJob", "LoweredTarget", "OPAQUE", "folded_float", "qdq_mode"]
