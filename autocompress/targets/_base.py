"""The target contract, declared once: ``TargetBase``, the class every registered target inherits.

The pipeline, ``inspect`` and ``export`` call these methods directly instead of probing a target
with ``hasattr``. A target implements the parts without a default (``mode``, ``write``, ``load``,
``read_meta``, ``files``, ``count``; left out, they raise naming the target) and overrides the
optional hooks it has (``HOOKS``: an optional runtime to check, a graph to record, a machine to
describe, the ``export --format`` its artifact is copied under, the layers whose activations it
quantizes). ``save`` hands one :class:`SaveJob` to the target's ``write``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from autocompress.errors import AutoCompressError

# the hooks and class attributes a target declares (the target contract test reads this)
HOOKS = (
    "require",
    "describe",
    "graph_record",
    "export_format",
    "export_conversions",
    "activation_layers",
    "code_bits",
)


@dataclass(frozen=True)
class SaveJob:
    """One ``save``: the model, the artifact file it goes to, and what the artifact records."""

    model: nn.Module
    path: Path
    task: Any
    bits: Mapping[str, int]  # per layer
    structure: Mapping[str, Mapping[str, Any]]  # what pruning changed (``structure_diff``)
    meta: Mapping[str, Any]  # the header (``artifact_meta``)
    activations: dict[str, tuple[float, int]]  # fine-tuning's activation (scale, zero point)

    @property
    def scopes(self) -> Mapping[str, str] | None:
        """Per layer, its quantization scope (the header's ``quant_scope``)."""
        return self.meta.get("quant_scope")


class TargetBase:
    """What a target answers: the required parts and the defaults of the optional ones."""

    name: str
    artifact_name: str
    bits: tuple[int, ...]
    quant_scopes: ClassVar[dict[str, str]]  # quantization scope -> what it means on this target
    default_scope: ClassVar[str]  # the scope of a layer whose policy sets none
    # the ``export --format`` that copies this target's own artifact ("" = the target's name)
    export_format: ClassVar[str] = ""
    # other ``export --format`` values the artifact is converted to (and measured in)
    export_conversions: ClassVar[tuple[str, ...]] = ()

    def require(self) -> None:
        """Raise one line naming the extra to install when the target's runtime is missing."""

    def describe(self) -> list[str]:
        """What the target's options resolve to on this machine (``inspect`` prints it)."""
        return []

    def graph_record(self, path: Path) -> dict[str, Any] | None:
        """What the artifact's runtime graph runs (``metrics.json``'s ``graph``), or None."""
        return None

    @property
    def native_format(self) -> str:
        """The ``export --format`` of this target's own artifact."""
        return self.export_format or self.name

    def activation_layers(
        self, model: nn.Module, bits: Mapping[str, int], scopes: Mapping[str, str] | None = None
    ) -> list[str]:
        """Layers whose inputs the artifact quantizes (fake-quantized while fine-tuning), among
        those whose ``scopes`` entry is ``weight+activation`` (all capable when None); none by
        default."""
        return []

    def code_bits(
        self, model: nn.Module, bits: Mapping[str, int], scopes: Mapping[str, str] | None = None
    ) -> dict[str, int]:
        """Per layer, the bit-width of the integer weight codes, used alike by fine-tuning's fake
        quantizer and the artifact (e.g. 7 where ``bits`` says 8 under reduce_range); by default
        the layer's bits."""
        return dict(bits)

    def mode(self, module: nn.Module, bits: int, parent: nn.Module | None = None) -> str:
        """The mode a layer of this type runs in at ``bits`` (intended; records read the
        artifact)."""
        raise self._lacks("mode")

    def save(
        self,
        model: nn.Module,
        path: Path,
        *,
        task: Any = None,
        bits: Mapping[str, int],
        structure: Mapping[str, Mapping[str, Any]],
        meta: Mapping[str, Any],
        activations: Mapping[str, tuple[float, int]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Write the artifact (the target's ``write``); per-layer records ``{"bits", "mode",
        ...}``."""
        job = SaveJob(model, path, task, bits, structure, meta, dict(activations or {}))
        return self.write(job)

    def write(self, job: SaveJob) -> dict[str, dict[str, Any]]:
        """Write ``job``'s artifact; per-layer records ``{"bits", "mode", ...}``."""
        raise self._lacks("write")

    def load(self, path: Path, skeleton: nn.Module, *, threads: int = 1) -> nn.Module:
        """The deployed model, callable like an ``nn.Module`` on the task's inputs."""
        raise self._lacks("load")

    def read_meta(self, path: Path) -> dict[str, Any]:
        """The artifact's header."""
        raise self._lacks("read_meta")

    def files(self, path: Path) -> list[Path]:
        """The artifact's files (the model file plus any external data)."""
        raise self._lacks("files")

    def count(
        self, student: nn.Module, deployed: nn.Module, example_inputs: tuple
    ) -> dict[str, int]:
        """``params`` and ``macs`` of what was deployed."""
        raise self._lacks("count")

    def _lacks(self, part: str) -> NotImplementedError:
        return NotImplementedError(f"target {self.name!r} does not implement {part}()")


def require_modules(target: str, package: str, *modules: str) -> None:
    """One line naming the extra to install (``autocompress[<target>]``) when ``package`` or one
    of its ``modules`` (the target's runtime) cannot be imported."""
    try:
        for module in (package, *modules):
            importlib.import_module(module)
    except ImportError:
        raise AutoCompressError(
            f"target {target!r} needs the {package} package, which is not installed: "
            f'pip install "autocompress[{target}]"'
        ) from None


__all__ = ["HOOKS", "SaveJob", "TargetBase", "require_modules"]
