"""What the targets that lower the student into another runtime's graph (``openvino``,
``executorch``) share: the int8 layers they quantize activations for, the codes they store, and
the float model they export (bits checked, BatchNorms folded into the convs, also after a
concatenation, split over the branches)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from autocompress.errors import AutoCompressError
from autocompress.targets._base import TargetBase
from autocompress.techniques.fold import (
    concat_folds,
    fold_batchnorm,
    fold_concat_batchnorm_,
    foldable_pairs,
)


class LoweredTarget(TargetBase):
    """Methods of the ``Target`` protocol these targets answer alike."""

    name: str
    bits: tuple[int, ...]

    def activation_layers(
        self, model: nn.Module, bits: Mapping[str, int], scopes: Mapping[str, str] | None = None
    ) -> list[str]:
        from autocompress.targets import int8_activation_layers

        return int8_activation_layers(self, model, bits, scopes)  # type: ignore[arg-type]

    def code_bits(
        self, model: nn.Module, bits: Mapping[str, int], scopes: Mapping[str, str] | None = None
    ) -> dict[str, int]:
        return dict(bits)

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
        folded = foldable_pairs(model)
        float_model = fold_batchnorm(model, folded)
        split = concat_folds(float_model)  # a BatchNorm after a concat: over the branches
        fold_concat_batchnorm_(float_model, split)
        return float_model, folded, split


__all__ = ["LoweredTarget"]
