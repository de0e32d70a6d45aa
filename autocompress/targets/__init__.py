"""Deployment targets: how a compressed model becomes a file, and how that file runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from ..errors import AutoCompressError


class Target(Protocol):
    name: str
    artifact_name: str
    bits: tuple[int, ...]

    def save(self, model: nn.Module, path: Path, **kwargs: Any) -> dict[str, dict[str, Any]]: ...

    def load(self, path: Path, skeleton: nn.Module) -> nn.Module: ...


@dataclass(frozen=True)
class TorchTarget:
    name: str = "torch"
    artifact_name: str = "model.pt"
    bits: tuple[int, ...] = (2, 3, 4, 8, 16, 32)

    def save(self, model: nn.Module, path: Path, **kwargs: Any) -> dict[str, dict[str, Any]]:
        from . import _torch

        return _torch.save(model, path, **kwargs)

    def load(self, path: Path, skeleton: nn.Module) -> nn.Module:
        from . import _torch

        return _torch.load(path, skeleton)


TARGETS: dict[str, Target] = {"torch": TorchTarget()}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise AutoCompressError(
            f"unknown target {name!r}; available targets: {', '.join(sorted(TARGETS))}"
        ) from None
