"""Where the student trains: the training device and the fine-tuning precision.

Pruning importance, activation calibration, distillation and fine-tuning run on the training
device; conversion, export and every measurement (accuracy, size, latency) run on the target's
own runtime, on the CPU, whatever trained the student. The artifact is the same either way.

>>> training = Training.resolve("auto", precision="fp32")  # CUDA when PyTorch sees one
>>> training.device.type in ("cpu", "cuda")
True
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from autocompress.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def device_problem(spec: Any) -> str | None:
    """What is wrong with a device name (None when it is one of ``DEVICES``)."""
    if isinstance(spec, str) and (
        spec in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", spec)
    ):
        return None
    return "is not a device; choose auto, cpu, cuda or cuda:N"


def resolve_device(spec: str = "auto", *, key: str = "device") -> torch.device:
    """``auto`` is CUDA when PyTorch sees one, else the CPU; a CUDA device that is not there is
    a one-line error naming ``key``."""
    problem = device_problem(spec)
    if problem:
        raise ConfigError(f"{key}: {spec!r} {problem}")
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        spec = "cuda"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{key}: {spec!r} but PyTorch sees no CUDA device here "
                f"(torch {torch.__version__}, cuda {torch.version.cuda}); use cpu or auto"
            )
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"{key}: {spec!r} but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        return torch.device("cuda", index)  # the record names the index
    return device


def precision_problem(device: torch.device, precision: str) -> str | None:
    """None when ``device`` can fine-tune in ``precision``, else why not."""
    if precision not in PRECISIONS:
        return f"is not one of {', '.join(PRECISIONS)}"
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return f"is not supported by {torch.cuda.get_device_name(device)}; use fp16 or fp32"
        return None
    if precision == "fp16":
        return "needs a CUDA device (the CPU autocasts to bf16 only); use bf16 or fp32"
    return None


@dataclass(frozen=True)
class Training:
    """The device the student trains on and the precision of its fine-tuning."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"

    @classmethod
    def resolve(cls, device: str = "auto", *, precision: str = "fp32") -> Training:
        """From names, checked: errors name ``device`` or ``finetune.precision``."""
        dev = resolve_device(device)
        problem = precision_problem(dev, precision)
        if problem:
            raise ConfigError(f"finetune.precision: {precision!r} {problem}")
        return cls(device=dev, precision=precision)

    @property
    def on_cpu(self) -> bool:
        return self.device.type == "cpu"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's mixed-precision context (none for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16 gradients are scaled (bf16 has fp32's range and needs none)."""
        if self.precision == "fp16" and self.device.type == "cuda":
            return torch.amp.GradScaler("cuda")
        return None

    def record(self, *, trained: bool = True) -> dict[str, Any]:
        """What ``metrics.json`` says about how the student was trained (without fine-tuning:
        where importance and calibration ran, and no precision)."""
        rec: dict[str, Any] = {"device": str(self.device)}
        rec["precision"] = self.precision if trained else None
        if self.device.type == "cuda":
            rec["device_name"] = torch.cuda.get_device_name(self.device)
        return rec

    def with_device(self, device: torch.device) -> Training:
        return replace(self, device=device)


CPU = Training()


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors inside tuples, lists and mappings (e.g. a tokenizer's batch) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=device.type == "cuda")  # to the host: blocking
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(to_device(v, device) for v in value))
    if isinstance(value, tuple | list):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, Mapping):
        moved = {k: to_device(v, device) for k, v in value.items()}
        try:
            return type(value)(moved)
        except TypeError:
            return moved
    return value


class DeviceLoader:
    """A re-iterable loader whose ``(inputs, targets)`` batches arrive on ``device``."""

    def __init__(self, loader: Iterable, device: torch.device) -> None:
        self.loader = loader
        self.device = device

    def __iter__(self) -> Iterator:
        for batch in self.loader:
            yield to_device(batch, self.device)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]


def on_device(task: Any, device: torch.device) -> Any:
    """A view of ``task`` for the student's work on ``device`` (tracing, importance,
    calibration): example inputs and training batches moved there. The teacher stays where it
    is (``TeacherCache.to`` runs a copy of it on the device). The task itself on the CPU."""
    if device.type == "cpu":
        return task
    view = copy.copy(task)  # no __post_init__: the task was checked when it was built
    view.example_inputs = to_device(tuple(task.example_inputs), device)
    view.train_loader = DeviceLoader(task.train_loader, device)
    if isinstance(task.loss, nn.Module):  # e.g. a class-weighted loss: its tensors go too
        view.loss = copy.deepcopy(task.loss).to(device)
    return view


@contextlib.contextmanager
def moved(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """``model`` on ``device`` inside the block, back on the CPU after it."""
    model.to(device)
    try:
        yield model
    finally:
        model.to("cpu")


__all__ = [
    "CPU",
    "DEVICES",
    "PRECISIONS",
    "DeviceLoader",
    "Training",
    "device_problem",
    "moved",
    "on_device",
    "precision_problem",
    "resolve_device",
    "to_device",
]
