"""How a quantized layer runs on a target: the one spelling of the layer modes.

``int-compute`` (integer kernels run it), ``weight-only`` (low-bit storage, float compute) or
``float``. A :class:`LayerMode` is a ``StrEnum``: it equals its string, so the per-layer records
in ``metrics.json`` and ``trials.jsonl`` stay as they were.
"""

from __future__ import annotations

from enum import StrEnum


class LayerMode(StrEnum):
    INT_COMPUTE = "int-compute"
    WEIGHT_ONLY = "weight-only"
    FLOAT = "float"


MODES = tuple(LayerMode)

__all__ = ["MODES", "LayerMode"]
