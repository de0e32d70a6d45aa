"""Where trials run: the backend registry (``local``: this process; ``ray``: Ray Tune workers).

A backend is a module with ``run(session)`` (the loop itself is
:mod:`autocompress.study.session`) plus the config keys only it reads, and optionally
``polish(session, jobs, may_start)`` for the polish stage (:mod:`autocompress.study.polish`;
without one, the local backend's runs the polishes in the driver, one after another). Each
backend validates its own keys: a key another backend reads (``address`` on ``backend:
local``) is a one-line error, not silently ignored. Modules are imported on use, so Ray
loads only for ``backend: ray``.

>>> sorted(BACKENDS)
['local', 'ray']
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from autocompress.errors import ConfigError


@dataclass(frozen=True)
class Backend:
    """One backend: its module (``run(session)``) and the config keys only it reads."""

    name: str
    module: str
    keys: tuple[str, ...] = ()

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add ``backend`` (or replace the one of its name); its keys become backend-only keys."""
    BACKENDS[backend.name] = backend
    return backend


register_backend(Backend("local", "autocompress.study.backends.local"))
register_backend(
    Backend(
        "ray",
        "autocompress.study.backends.ray",
        keys=("address", "max_concurrent", "resources_per_trial"),
    )
)


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"backend: {name!r}; choose from {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]


def foreign_keys(name: str, values: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, owner)`` for each key set in ``values`` that only another backend reads."""
    return [
        (key, other.name)
        for other in BACKENDS.values()
        if other.name != name
        for key in other.keys
        if values.get(key) is not None and key not in get_backend(name).keys
    ]


__all__ = ["BACKENDS", "Backend", "foreign_keys", "get_backend", "register_backend"]
