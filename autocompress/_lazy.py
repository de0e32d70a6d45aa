"""Lazy names (PEP 562): a package lists which of its modules holds each public name and loads
that module on first use, so ``import autocompress`` does not import Optuna, Ray, MLflow or
plotting."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_names(
    package: str, modules: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for ``package``: ``modules`` maps a module (relative to
    ``package`` when it starts with a dot) to the names it holds.

    >>> __getattr__, __all__ = lazy_names(__name__, {".report": ("write_report",)})  # doctest: +SKIP
    """
    where = {
        name: importlib.util.resolve_name(module, package) if module.startswith(".") else module
        for module, names in modules.items()
        for name in names
    }

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(where)
