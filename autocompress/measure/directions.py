"""Which way an objective is better: the one spelling of ``maximize`` / ``minimize``.

A :class:`Direction` is a ``StrEnum``: it equals its string, so YAML objective files,
``pareto.json`` and Optuna (which reads the strings) stay as they were.
"""

from __future__ import annotations

from enum import StrEnum


class Direction(StrEnum):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


DIRECTIONS = tuple(Direction)

__all__ = ["DIRECTIONS", "Direction"]
