"""One exception tree for user mistakes; the CLI turns these into a one-line message and exit 2."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any


class AutoCompressError(ValueError):
    """A user mistake: bad input, a bad file, a bad key. The message says what, where and how."""


class PolicyError(AutoCompressError):
    """A policy that cannot be applied to the model (unknown key, bad ratio, unmatched glob...)."""


class TaskError(AutoCompressError):
    """A task spec that cannot be loaded or does not return a Task."""


class ConfigError(AutoCompressError):
    """A search config, search-space or objective file with a bad key or value."""


def reject_unknown_keys(
    given: Any, allowed: Iterable[str], error: Callable[[str | None], AutoCompressError]
) -> None:
    """Raise ``error(None)`` if ``given`` is not a mapping, ``error(key)`` for its first key
    outside ``allowed``: the check every policy, config and space section makes."""
    if not isinstance(given, Mapping):
        raise error(None)
    for key in given:
        if key not in allowed:
            raise error(key)
