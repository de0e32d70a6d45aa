"""The optional hooks every target declares, with what a target that does not need them answers.

``TargetBase`` is the base class of every registered target: the pipeline, ``inspect`` and
``export`` call these hooks directly instead of probing a target with ``hasattr``. A target
overrides what it has (an optional runtime to check, a graph to record, a machine to describe,
the ``export --format`` its artifact is copied under).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

# the hooks and class attributes a target declares (the target contract test reads this)
HOOKS = ("require", "describe", "graph_record", "export_format", "export_conversions")


class TargetBase:
    """Defaults of the optional parts of the ``Target`` protocol."""

    name: str
    artifact_name: str
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


__all__ = ["HOOKS", "TargetBase"]
