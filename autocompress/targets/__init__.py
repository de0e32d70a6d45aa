"""Deployment targets: how a compressed model becomes a file, and how that file runs.

A target is one module holding one class that inherits ``TargetBase`` (``Target``: the contract,
declared once with the defaults of its optional hooks), registered in ``TARGETS`` below. Adding a
target = a new module + one line in ``_targets`` (or one :func:`register_target` call); the
pipeline (compress, export, search, inspect) reaches targets only through ``get_target``.

Layer modes (per layer, per bit-width, :class:`LayerMode` in ``modes``): ``int-compute`` (integer
kernels run it), ``weight-only`` (low-bit storage, float compute) or ``float``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from autocompress.errors import AutoCompressError
from autocompress.measure.gate import Gate, NoGate
from autocompress.measure.timing import measure_latency, measure_paired
from autocompress.targets._base import HOOKS, SaveJob, TargetBase
from autocompress.targets.modes import MODES, LayerMode

# what every target answers, declared once in ``TargetBase`` (the type the pipeline names)
Target = TargetBase


# A timing whose p90 is over twice its median was descheduled for much of the run (another
# process took the core: seen beside a benchmark, where Ray's niced workers starve); it is
# taken again, up to RETAKES times, and the record says how often (``latency_retakes``).
RETAKES = 2
DISTURBED = 2.0


def _disturbed(lat: Any) -> bool:
    return lat.p90_ms > DISTURBED * lat.median_ms


def measure_runtime(
    task: Any,
    deployed: nn.Module,
    files: list[Path],
    settings: Any,
    gate: Gate = NoGate(),
    reference: nn.Module | None = None,
) -> dict[str, Any]:
    """Bytes of the deployed model's files and its latency on its runtime.

    With a ``reference`` (the teacher's artifact on the same target), both are timed
    interleaved and the teacher's figures come back as ``teacher_paired``."""
    timing = {
        "n_threads": settings.threads,
        "warmup": settings.warmup,
        "repeats": settings.repeats,
    }
    inputs = settings.inputs(task.example_inputs)
    with gate.exclusive():
        retakes = -1
        while True:
            retakes += 1
            if reference is None:
                lat, ref = measure_latency(deployed, inputs, **timing), None
            else:
                lat, ref = measure_paired(deployed, reference, inputs, **timing)
            clean = not any(_disturbed(x) for x in (lat, ref) if x is not None)
            if clean or retakes == RETAKES:
                break
    out: dict[str, Any] = {
        "size_bytes": sum(f.stat().st_size for f in files),
        "latency_ms": lat.median_ms,
        "latency_p90_ms": lat.p90_ms,
    }
    if retakes:
        out["latency_retakes"] = retakes
    if ref is not None:
        out["teacher_paired"] = {"latency_ms": ref.median_ms, "latency_p90_ms": ref.p90_ms}
    return out


def int8_activation_layers(
    target: Target,
    model: nn.Module,
    bits: Mapping[str, int],
    scopes: Mapping[str, str] | None,
) -> list[str]:
    """8-bit layers ``target`` runs on integer kernels whose scope quantizes activations."""
    from autocompress.techniques.scope import with_activations

    modules = dict(model.named_modules())
    capable = [
        p
        for p, b in bits.items()
        if b == 8
        and p in modules
        and target.mode(modules[p], b, modules.get(p.rpartition(".")[0])) == LayerMode.INT_COMPUTE
    ]
    return with_activations(scopes, capable)


def _targets() -> dict[str, Target]:
    from autocompress.targets.executorch import ExecuTorchTarget
    from autocompress.targets.openvino import OpenVinoTarget
    from autocompress.targets.ort import OnnxRuntimeTarget
    from autocompress.targets.pytorch import TorchTarget

    return {
        "torch": TorchTarget(),
        "onnxruntime": OnnxRuntimeTarget(),
        "openvino": OpenVinoTarget(),
        "executorch": ExecuTorchTarget(),
    }


TARGETS: dict[str, Target] = _targets()


def get_target(name: str, **options: Any) -> Target:
    """The registered target ``name``, with ``options`` (its dataclass fields) replaced."""
    try:
        target = TARGETS[name]
    except KeyError:
        raise AutoCompressError(
            f"unknown target {name!r}; available targets: {', '.join(sorted(TARGETS))}"
        ) from None
    target.require()  # an optional runtime: one line naming the extra to install
    if not options:
        return target
    known = {f.name for f in dataclasses.fields(target)} - {"name", "artifact_name", "bits"}  # type: ignore[arg-type]
    unknown = sorted(set(options) - known)
    if unknown:
        raise AutoCompressError(
            f"target {name!r} has no option {unknown[0]!r}; options: {', '.join(sorted(known)) or 'none'}"
        )
    return dataclasses.replace(target, **options)  # type: ignore[type-var]


def register_target(target: Target) -> Target:
    """Add ``target`` (an instance of a ``TargetBase`` subclass) under its name."""
    if not isinstance(target, TargetBase):
        raise AutoCompressError(
            f"target {getattr(target, 'name', target)!r}: a target inherits "
            "autocompress.targets.TargetBase (its optional hooks)"
        )
    TARGETS[target.name] = target
    return target


def export_formats() -> tuple[str, ...]:
    """Every ``export --format``: each target's own artifact and what it converts to."""
    formats = (f for t in TARGETS.values() for f in (t.native_format, *t.export_conversions))
    return tuple(dict.fromkeys(formats))


def structure_diff(original: nn.Module, pruned: nn.Module) -> dict[str, dict[str, Any]]:
    """Plain module attributes (channel counts, heads...) that pruning changed."""
    from autocompress.targets._torch import structure_diff as diff

    return diff(original, pruned)


def find_artifact(directory: Path) -> Path:
    """The artifact file a target wrote into ``directory``."""
    for target in TARGETS.values():
        if (directory / target.artifact_name).exists():
            return directory / target.artifact_name
    names = ", ".join(t.artifact_name for t in TARGETS.values())
    raise AutoCompressError(f"{directory} holds no artifact ({names})")


def target_of(path: Path) -> Target:
    """The target that writes files named like ``path``."""
    for target in TARGETS.values():
        if path.name == target.artifact_name or path.suffix == Path(target.artifact_name).suffix:
            return target
    raise AutoCompressError(f"{path}: not an artifact of any target ({', '.join(TARGETS)})")


__all__ = [
    "DISTURBED",
    "HOOKS",
    "MODES",
    "LayerMode",
    "RETAKES",
    "SaveJob",
    "TARGETS",
    "Target",
    "TargetBase",
    "export_formats",
    "find_artifact",
    "get_target",
    "int8_activation_layers",
    "measure_runtime",
    "register_target",
    "structure_diff",
    "target_of",
]
