"""Value specs: what a space key may hold (a fixed value, a range, or choices), checked.

``FIELDS`` says for each searchable key whether it is an integer, its default scale and its
legal values; ``Values.parse`` reads ``5``, ``[low, high]``, ``{low, high, step, log}`` or
``{choices: [...]}`` against it and names the key on a bad value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from autocompress.errors import ConfigError
from autocompress.policy import FINETUNE_SCOPES, QUANT_SCOPES, SUPPORTED_BITS, Distill, Finetune
from autocompress.study.presets import check_keys, to_number

Number = float | int


def set_parts(owner: Any, names: Iterable[str]) -> dict[str, Any]:
    """``{name: value}`` for each named attribute of ``owner`` that is set (neither None nor
    False), a part that has ``to_dict`` written as its dict: how specs write themselves."""
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(owner, name)
        if value is not None and value is not False:
            out[name] = value.to_dict() if hasattr(value, "to_dict") else value
    return out


@dataclass(frozen=True)
class _Field:
    """What a value spec may hold: integer or float, default log scale, and its legal values."""

    integer: bool
    log: bool
    check: Callable[[Number], str | None]
    ranges: bool = True
    words: tuple[str, ...] = ()  # a field of named choices (no numbers)


def _between(low: float, high: float, *, high_open: bool = False) -> Callable[[Number], str | None]:
    def check(v: Number) -> str | None:
        if low <= v < high if high_open else low <= v <= high:
            return None
        return f"{v} is outside [{low}, {high}{')' if high_open else ']'}"

    return check


def _positive(v: Number) -> str | None:
    return None if v > 0 else f"{v} must be > 0"


def _non_negative(v: Number) -> str | None:
    return None if v >= 0 else f"{v} must be >= 0"


def _bit_width(v: Number) -> str | None:
    if v in SUPPORTED_BITS and float(v).is_integer():
        return None
    return f"{v} is not a supported bit-width (choose from {', '.join(map(str, SUPPORTED_BITS))})"


FIELDS: dict[str, _Field] = {
    "distill.alpha": _Field(integer=False, log=False, check=_between(0.0, 1.0)),
    "distill.temperature": _Field(integer=False, log=False, check=_positive),
    "finetune.lambda": _Field(integer=False, log=True, check=_non_negative),
    "finetune.epochs": _Field(integer=True, log=False, check=_non_negative),
    "finetune.lr": _Field(integer=False, log=True, check=_positive),
    "prune": _Field(integer=False, log=False, check=_between(0.0, 1.0, high_open=True)),
    "sparsity": _Field(integer=False, log=False, check=_between(0.0, 1.0, high_open=True)),
    "bits": _Field(integer=True, log=False, check=_bit_width, ranges=False),
    "distill.feature_weight": _Field(integer=False, log=False, check=_non_negative),
    "finetune.scope": _Field(False, False, _non_negative, ranges=False, words=FINETUNE_SCOPES),
    "scope": _Field(False, False, _non_negative, ranges=False, words=QUANT_SCOPES),
}

# Values a policy takes when a space leaves a global out (the Policy defaults).
GLOBAL_DEFAULTS: dict[str, Number] = {
    "distill.alpha": Distill.alpha,
    "distill.temperature": Distill.temperature,
    "finetune.lambda": Finetune.lambda_,
    "finetune.epochs": Finetune.epochs,
    "finetune.lr": Finetune.lr,
    "finetune.scope": Finetune.scope,  # type: ignore[dict-item]
}


@dataclass(frozen=True)
class Values:
    """A fixed value (``fixed``), a range (``low``..``high``, optional ``step``/``log``), or
    ``choices``. Exactly one form is set."""

    fixed: Number | None = None
    low: Number | None = None
    high: Number | None = None
    step: Number | None = None
    log: bool = False
    choices: tuple[Number, ...] | None = None

    @property
    def is_fixed(self) -> bool:
        return self.fixed is not None

    def to_dict(self) -> Number | dict[str, Any]:
        if self.fixed is not None:
            return self.fixed
        if self.choices is not None:
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.step is not None:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return out

    @classmethod
    def parse(cls, data: Any, *, field_name: str, source: str, key: str) -> Values:
        """Parse ``5`` / ``[low, high]`` / ``{low, high, step, log}`` / ``{choices: [...]}``."""
        spec = FIELDS[field_name]

        def num(value: Any, where: str) -> Number:
            if spec.words:
                if value not in spec.words:
                    raise ConfigError(
                        f"{source}: {where}: {value!r} is not one of {', '.join(spec.words)}"
                    )
                return value
            v = to_number(source, where, value)
            if spec.integer:
                if not float(v).is_integer():
                    raise ConfigError(f"{source}: {where}: {value!r} must be an integer")
                v = int(v)
            problem = spec.check(v)
            if problem:
                raise ConfigError(f"{source}: {where}: {problem}")
            return v

        if isinstance(data, list) and spec.ranges:
            if len(data) != 2:
                raise ConfigError(
                    f"{source}: {key}: a range is [low, high], got {data!r} "
                    "(use {choices: [...]} for a list of values)"
                )
            data = {"low": data[0], "high": data[1]}
        if not isinstance(data, Mapping):
            return cls(fixed=num(data, key))
        allowed = ("low", "high", "step", "log", "choices") if spec.ranges else ("choices",)
        check_keys(source, key, data, allowed)
        if "choices" in data:
            if set(data) != {"choices"}:
                raise ConfigError(f"{source}: {key}: give either choices or low/high, not both")
            raw = data["choices"]
            if not isinstance(raw, list) or not raw:
                raise ConfigError(f"{source}: {key}.choices: must be a non-empty list, got {raw!r}")
            choices = tuple(dict.fromkeys(num(c, f"{key}.choices") for c in raw))
            return cls(fixed=choices[0]) if len(choices) == 1 else cls(choices=choices)
        if "low" not in data or "high" not in data:
            raise ConfigError(f"{source}: {key}: a range needs both low and high, got {data!r}")
        low, high = num(data["low"], f"{key}.low"), num(data["high"], f"{key}.high")
        if low > high:
            raise ConfigError(f"{source}: {key}: low {low} is above high {high}")
        log = data.get("log", spec.log)
        if not isinstance(log, bool):
            raise ConfigError(f"{source}: {key}.log: must be true or false, got {log!r}")
        step = None
        if data.get("step") is not None:
            step = to_number(source, f"{key}.step", data["step"])
            if step <= 0 or (spec.integer and not float(step).is_integer()):
                raise ConfigError(f"{source}: {key}.step: {step!r} must be a positive number")
            step = int(step) if spec.integer else step
        if log and (step is not None or spec.integer or low <= 0):
            raise ConfigError(
                f"{source}: {key}: a log range needs float values > 0 and no step; "
                f"got low={low}, step={step} (set log: false)"
            )
        if low == high:
            return cls(fixed=low)
        return cls(low=low, high=high, step=step, log=log)
