"""The config keys of a search measured on several runtimes: ``targets`` (the first is the
objective target unless ``objective_target`` names another), and ``target_options`` per target
when several are given (``{openvino: {...}}``); one target keeps the flat form.

Each check returns None or what is wrong, or raises a one-line ``ConfigError`` naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autocompress.errors import AutoCompressError, ConfigError


def target_names_problem(value: Any) -> str | None:
    """``targets``: registered targets whose runtime is installed (else the extra to install)."""
    if value is None:
        return None
    if not isinstance(value, tuple) or not value or not all(isinstance(v, str) for v in value):
        return "must be a non-empty list of target names, e.g. [onnxruntime, openvino]"
    if len(set(value)) != len(value):
        return "names a target twice"
    from autocompress.pipeline.options import CompressOptions

    for name in value:
        try:
            _ = CompressOptions.of(target=name).target
        except AutoCompressError as exc:
            return f"has {name!r}: {exc}"
    return None


def objective_of(
    where: str,
    targets: Sequence[str] | None,
    objective: str | None,
    options: Mapping[str, Any],
) -> str | None:
    """The objective target of ``targets`` (None: no ``targets`` key); the per-target
    ``target_options`` checked to name targets of the list."""
    if targets is None:
        if objective is not None:
            raise ConfigError(f"{where}: objective_target: only read with targets: [...]")
        return None
    objective = objective or targets[0]
    if objective not in targets:
        raise ConfigError(
            f"{where}: objective_target: {objective!r} is not one of targets {list(targets)}"
        )
    if len(targets) > 1:
        for key, value in options.items():
            if key not in targets:
                raise ConfigError(
                    f"{where}: target_options: with several targets it maps a target's name to "
                    f"its options, e.g. {{{targets[0]}: {{...}}}}; {key!r} is not one of "
                    f"{list(targets)}"
                )
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: target_options: {key}: must be a mapping of options")
    return objective


def check_options(where: str, name: str, options: Mapping[str, Any]) -> None:
    """Target ``name``'s options resolve (a bad option: one line naming it)."""
    from autocompress.pipeline.options import CompressOptions

    try:
        _ = CompressOptions.of(target=name, target_options=options).target
    except ConfigError:
        raise
    except AutoCompressError as exc:
        raise ConfigError(f"{where}: target_options: {exc}") from None


__all__ = ["check_options", "objective_of", "target_names_problem"]
