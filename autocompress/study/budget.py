"""A search budget in wall-clock time (``budget: 30m``), shared by the start and the trials.

``budget`` is an alternative to ``trials:``: the search asks no new trial once the budget is
spent (the trials running then finish), counted from the moment the search is prepared, so
the measured start's time counts too; the first trial runs whatever the start took. A
resumed search gets the budget again. With a polish stage (``polish:``), ``reserve`` seconds
of it are kept for the polish: the search stops asking when only those are left.

>>> parse_budget("1h30m")
5400.0
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from autocompress.errors import ConfigError

MAX_TRIALS = 10_000  # ``trials`` when only a budget bounds the search
_PART = re.compile(r"(\d+(?:\.\d+)?)([smh])")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def budget_problem(value: object) -> str | None:
    """What is wrong with a budget value (None when it is a duration like 30m, 1h30m, 90s)."""
    if value is None:
        return None
    try:
        parse_budget(value)
    except ConfigError as exc:
        return str(exc)
    return None


def parse_budget(value: object) -> float:
    """Seconds in ``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"`` (or a number of seconds)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().lower().replace(" ", "")
        parts = _PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ConfigError("is not a duration; write e.g. 90s, 30m, 2h or 1h30m")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ConfigError("is not a duration; write e.g. 90s, 30m, 2h or 1h30m")
    if not seconds > 0:
        raise ConfigError("must be longer than 0 s")
    return seconds


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes or hours else "") + f"{secs}s"


@dataclass
class Budget:
    """The time a search may take, from its start (``time.monotonic``)."""

    seconds: float
    started: float = field(default_factory=time.monotonic)
    reserve: float = 0.0  # seconds kept for the polish stage: the search's part ends before

    @classmethod
    def of(cls, value: object) -> Budget | None:
        return None if value is None else cls(parse_budget(value))

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    @property
    def spent(self) -> bool:
        """The search's part is spent (``left()`` is the whole budget's, polish included)."""
        return self.left() <= self.reserve


__all__ = ["MAX_TRIALS", "Budget", "budget_problem", "format_seconds", "parse_budget"]
