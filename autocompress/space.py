"""Search spaces: YAML rules that turn a model's layers into named hyperparameters.

A space has global ranges (``distill.alpha``, ``distill.temperature``, ``finetune.lambda``,
optionally ``finetune.epochs`` and ``finetune.lr``) and layer ``rules``. The first rule that
matches a layer (glob on its module path, class name, role) sets its prune range and bit-width
choices; ``group`` ties layers into one parameter. Output layers are never pruned.

Two more pruning strategies (see ``policy``): a rule's ``sparsity`` range searches the
``weight`` strategy's per-layer sparsity (``sparsity.<group>``; output layers included, as
no output is removed), and a top-level ``drop`` section searches the ``structure`` strategy:
``drop: {blocks: auto}`` (every droppable block, see ``drop``) or a list of globs on block
paths, ``choices: [keep, drop]`` (the default) giving one categorical ``drop.<block>`` each.

>>> space = load_space("default")
>>> resolved = space.resolve(model, example_inputs)  # doctest: +SKIP
>>> policy = resolved.suggest(trial)  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .layers import LayerInfo, list_layers
from .policy import FINETUNE_SCOPES, QUANT_SCOPES, SUPPORTED_BITS, Distill, Finetune, Policy
from .presets import preset_dir

Number = float | int


# -- reading preset files ------------------------------------------------------------------


def read_preset(name_or_path: str | Path, folder: str) -> tuple[dict[str, Any], str]:
    """Read ``<repo>/<folder>/<name>.yaml`` or a YAML file path; return ``(data, source)``."""
    import yaml

    text_name = str(name_or_path)
    if text_name.endswith((".yaml", ".yml")) or "/" in text_name or "\\" in text_name:
        path, source = Path(text_name), text_name
    else:
        path, source = preset_dir(folder) / f"{text_name}.yaml", f"{folder}/{text_name}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in preset_dir(folder).glob("*.yaml"))
            raise ConfigError(
                f"unknown {folder} preset {text_name!r}; presets: {', '.join(known)} "
                "(or give a path to a .yaml file)"
            )
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a YAML mapping, got {type(data).__name__}")
    return data, source


def check_keys(source: str, where: str, given: Any, allowed: Iterable[str]) -> None:
    """Raise ``ConfigError`` if ``given`` is not a mapping or has a key outside ``allowed``."""
    allowed = tuple(allowed)
    label = f"{source}: {where}" if where else source
    if not isinstance(given, Mapping):
        raise ConfigError(f"{label}: must be a mapping, got {given!r}")
    for key in given:
        if key not in allowed:
            raise ConfigError(
                f"{source}: {where + '.' if where else ''}{key}: unknown key; "
                f"allowed: {', '.join(allowed)}"
            )


def to_number(source: str, key: str, value: Any) -> Number:
    """A finite number; strings like ``1e-6`` (which YAML 1.1 leaves as text) are accepted."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigError(f"{source}: {key}: {value!r} is not a number")
    return value


# -- value specs: a fixed value, a range, or choices ----------------------------------------


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


# -- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LayerContext:
    layer: LayerInfo
    attention: str | None  # path of the attention module whose q/k/v this layer is
    channel_group: str | None = None  # name of the coupled prune group the layer belongs to


ROLES: dict[str, Callable[[_LayerContext], bool]] = {
    "qkv": lambda ctx: ctx.attention is not None,
    "output": lambda ctx: ctx.layer.is_output,
}

GROUP_FIELDS: dict[str, Callable[[_LayerContext], str | None]] = {
    "path": lambda ctx: ctx.layer.path,
    "parent": lambda ctx: ctx.layer.path.rpartition(".")[0] or ctx.layer.path,
    "type": lambda ctx: ctx.layer.type,
    "attention": lambda ctx: ctx.attention,
    "group": lambda ctx: ctx.channel_group,
}

_RULE_KEYS = ("match", "type", "role", "prune", "bits", "group", "optional", "sparsity", "scope")


def _strings(source: str, key: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(s, str) for s in items):
        raise ConfigError(f"{source}: {key}: must be a string or a list of strings, got {value!r}")
    return tuple(items)


def _check_group(source: str, key: str, group: Any) -> str:
    if not isinstance(group, str) or not group:
        raise ConfigError(f"{source}: {key}: must be a non-empty string, got {group!r}")
    if group.startswith("prefix:"):
        n = group.removeprefix("prefix:")
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(
                f"{source}: {key}: {group!r}: prefix:N needs a whole number N >= 1 (e.g. prefix:1)"
            )
        return group
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(group) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"{source}: {key}: {group!r} is not a valid template: {exc}") from None
    for name in names:
        if name not in GROUP_FIELDS:
            raise ConfigError(
                f"{source}: {key}: unknown template field {{{name}}} in {group!r}; "
                f"use {', '.join('{' + f + '}' for f in GROUP_FIELDS)}, prefix:N or a fixed name"
            )
    return group


@dataclass(frozen=True)
class Rule:
    """Which layers (``match`` globs on the path, ``type`` class names, ``role``), their prune
    values and bit-widths, and the ``group`` template that ties them into one parameter."""

    match: tuple[str, ...] = ()
    type: tuple[str, ...] = ()
    role: str | None = None
    prune: Values | None = None
    bits: Values | None = None
    group: str | None = None
    optional: bool = False
    sparsity: Values | None = None
    scope: Values | None = None  # quantization scope choices (weight, weight+activation)

    def label(self, index: int) -> str:
        """``rules[2] (match ['*fc1'], type ['Linear'])``: how errors name this rule."""
        parts = [f"match {list(self.match)}"] if self.match else []
        parts += [f"type {list(self.type)}"] if self.type else []
        parts += [f"role {self.role}"] if self.role else []
        return f"rules[{index}]" + (f" ({', '.join(parts)})" if parts else "")

    def matches(self, ctx: _LayerContext) -> bool:
        path, kind = ctx.layer.path, ctx.layer.type
        return (
            (not self.match or any(fnmatch.fnmatchcase(path, g) for g in self.match))
            and (not self.type or any(fnmatch.fnmatchcase(kind, t) for t in self.type))
            and (self.role is None or ROLES[self.role](ctx))
        )

    def group_name(self, ctx: _LayerContext) -> str | None:
        """The group this layer joins, or None for a missing template field."""
        if self.group is None:
            return ctx.layer.path
        if self.group.startswith("prefix:"):
            n = int(self.group.removeprefix("prefix:"))
            return ".".join(ctx.layer.path.split(".")[:n])
        values = {name: fn(ctx) for name, fn in GROUP_FIELDS.items()}
        names = [f for _, f, _, _ in string.Formatter().parse(self.group) if f is not None]
        if any(values[n] is None for n in names):
            return None
        return self.group.format_map(values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.match:
            out["match"] = self.match[0] if len(self.match) == 1 else list(self.match)
        if self.type:
            out["type"] = self.type[0] if len(self.type) == 1 else list(self.type)
        if self.role is not None:
            out["role"] = self.role
        if self.prune is not None:
            out["prune"] = self.prune.to_dict()
        if self.bits is not None:
            out["bits"] = self.bits.to_dict()
        if self.group is not None:
            out["group"] = self.group
        if self.optional:
            out["optional"] = True
        if self.sparsity is not None:
            out["sparsity"] = self.sparsity.to_dict()
        if self.scope is not None:
            out["scope"] = self.scope.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any, *, source: str, key: str) -> Rule:
        check_keys(source, key, data, _RULE_KEYS)
        role = data.get("role")
        if role is not None and role not in ROLES:
            raise ConfigError(
                f"{source}: {key}.role: unknown role {role!r}; choose from {', '.join(ROLES)}"
            )
        optional = data.get("optional", False)
        if not isinstance(optional, bool):
            raise ConfigError(f"{source}: {key}.optional: must be true or false, got {optional!r}")

        def values(name: str) -> Values | None:
            if data.get(name) is None:
                return None
            return Values.parse(data[name], field_name=name, source=source, key=f"{key}.{name}")

        return cls(
            match=_strings(source, f"{key}.match", data["match"]) if "match" in data else (),
            type=_strings(source, f"{key}.type", data["type"]) if "type" in data else (),
            role=role,
            prune=values("prune"),
            bits=values("bits"),
            group=_check_group(source, f"{key}.group", data["group"]) if "group" in data else None,
            optional=optional,
            sparsity=values("sparsity"),
            scope=values("scope"),
        )


# -- the resolved space ----------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter, as Optuna sees it."""

    name: str
    kind: str  # float | log-float | int | categorical
    low: Number | None = None
    high: Number | None = None
    step: Number | None = None
    choices: tuple[Any, ...] | None = None  # numbers; "keep"/"drop" for drop.<block>

    @classmethod
    def from_values(cls, name: str, values: Values, *, integer: bool) -> Param:
        assert values.fixed is None
        if values.choices is not None:
            return cls(name=name, kind="categorical", choices=values.choices)
        kind = "int" if integer else "log-float" if values.log else "float"
        return cls(name=name, kind=kind, low=values.low, high=values.high, step=values.step)

    def suggest(self, trial: Any) -> Number:
        return _SUGGEST[self.kind](trial, self)

    def nearest(self, value: Number) -> Number:
        """The allowed value closest to ``value`` (a member of the choices or grid)."""
        if self.choices is not None and value in self.choices:
            return value
        if self.choices is not None and all(isinstance(c, str) for c in self.choices):
            return self.choices[0]
        if self.choices is not None:
            numbers = [c for c in self.choices if isinstance(c, int | float)]
            return min(numbers or self.choices, key=lambda c: (abs(c - value), c))
        assert self.low is not None and self.high is not None
        v = min(max(value, self.low), self.high)
        if self.step is not None:
            k = min(
                round((v - self.low) / self.step), int((self.high - self.low) / self.step + 1e-9)
            )
            v = self.low + k * self.step
        if self.kind == "int":
            return int(round(v))
        return round(float(v), 12)

    def contains(self, value: Any) -> bool:
        if isinstance(value, str):
            return value in (self.choices or ())
        return isinstance(value, int | float) and self.nearest(value) == value


_SUGGEST: dict[str, Callable[[Any, Param], Number]] = {
    "float": lambda t, p: t.suggest_float(p.name, p.low, p.high, step=p.step),
    "log-float": lambda t, p: t.suggest_float(p.name, p.low, p.high, log=True),
    "int": lambda t, p: t.suggest_int(p.name, p.low, p.high, step=p.step or 1),
    "categorical": lambda t, p: t.suggest_categorical(p.name, list(p.choices or ())),
}


@dataclass(frozen=True)
class LayerSpace:
    """What the space makes of one layer: its prune/bits parameter names or fixed values."""

    path: str
    type: str
    shape: tuple[int, ...]
    params: int
    is_output: bool
    rule: int | None
    group: str | None
    prune_param: str | None
    bits_param: str | None
    prune: float = 0.0  # used when prune_param is None
    bits: int = 32  # used when bits_param is None
    prune_group: str | None = None  # the coupled group (or attention module) it is pruned with
    prune_note: str | None = None  # why it is not pruned, when its group cannot be
    sparsity_param: str | None = None
    sparsity: float | None = None  # used when sparsity_param is None; None: no sparsity rule
    scope_param: str | None = None
    scope: str | None = None  # used when scope_param is None; None: the target's default


@dataclass(frozen=True)
class UniformBaseline:
    """A uniform policy enqueued before the search: per-layer targets and global values."""

    prune: float
    bits: int
    globals: Mapping[str, Number] = field(default_factory=dict)
    max_epochs: bool = True


BASELINES: dict[str, UniformBaseline] = {
    "identity": UniformBaseline(
        prune=0.0,
        bits=32,
        globals={"distill.alpha": 1.0, "finetune.lambda": 0.0, "finetune.epochs": 0},
        max_epochs=False,
    ),
    "int8": UniformBaseline(prune=0.0, bits=8),
    "prune30-int8": UniformBaseline(prune=0.3, bits=8),
}
_UNIFORM_NAME = re.compile(r"(?:prune(\d{1,2})-)?int(\d{1,2})")


def baseline_spec(kind: str) -> UniformBaseline:
    """A named baseline, or a uniform one spelled ``int<B>`` / ``prune<NN>-int<B>`` (e.g.
    ``prune50-int4``: 50 % of every prunable layer pruned, every layer at 4 bits)."""
    if kind in BASELINES:
        return BASELINES[kind]
    found = _UNIFORM_NAME.fullmatch(kind)
    if found is None or int(found.group(2)) not in SUPPORTED_BITS:
        raise ConfigError(
            f"unknown baseline {kind!r}; choose from {', '.join(BASELINES)} or spell a uniform "
            f"one prune<NN>-int<B> with B in {', '.join(map(str, SUPPORTED_BITS))}"
        )
    return UniformBaseline(prune=int(found.group(1) or 0) / 100, bits=int(found.group(2)))


# Globals of the training baselines: mid-range distillation, light regularization.
_BASELINE_GLOBALS: dict[str, Number] = {
    "distill.alpha": 0.5,
    "distill.temperature": 4.0,
    "finetune.lambda": 1e-4,
    "finetune.lr": 1e-3,
    "finetune.scope": "full",
    "distill.feature_weight": 0.0,
}


@dataclass(frozen=True)
class ResolvedSpace:
    """A space applied to one model: the parameter list and what each layer uses."""

    source: str
    params: tuple[Param, ...]
    layers: tuple[LayerSpace, ...]
    fixed: Mapping[str, Number]  # globals the space fixes (not searched)
    units: tuple[PruneUnit, ...] = ()  # the model's coupled prune groups, in module order
    dropped: tuple[str, ...] = ()  # blocks the space always drops (drop choices [drop])

    @property
    def dimension(self) -> int:
        return len(self.params)

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def suggest(self, trial: Any) -> Policy:
        """Ask an Optuna trial for every parameter (in a fixed order) and build the policy."""
        return self.policy_from_params({p.name: p.suggest(trial) for p in self.params})

    def policy_from_params(self, params: Mapping[str, Any]) -> Policy:
        """The policy for a flat ``{param name: value}`` dict; missing values take defaults
        (prune 0, bits 32, the Policy defaults for globals)."""

        def glob(name: str) -> Number:
            if name in params:
                return params[name]
            return self.fixed.get(name, GLOBAL_DEFAULTS[name])

        prune_layers: dict[str, float] = {}
        quant_layers: dict[str, int] = {}
        scope_layers = {
            layer.path: str(params.get(layer.scope_param) if layer.scope_param else layer.scope)
            for layer in self.layers
            if layer.scope_param or layer.scope
        }
        sparsity_layers: dict[str, float] = {}
        for layer in self.layers:
            if not layer.is_output:
                prune_layers[layer.path] = float(
                    params.get(layer.prune_param, 0.0) if layer.prune_param else layer.prune
                )
            quant_layers[layer.path] = int(
                params.get(layer.bits_param, 32) if layer.bits_param else layer.bits
            )
            if layer.sparsity_param or layer.sparsity:
                sparsity_layers[layer.path] = float(
                    params.get(layer.sparsity_param, 0.0)
                    if layer.sparsity_param
                    else layer.sparsity or 0.0
                )
        drops = [
            n[len("drop.") :] for n, v in params.items() if n.startswith("drop.") and v == "drop"
        ]
        weight = params.get("distill.feature_weight", self.fixed.get("distill.feature_weight"))
        return Policy(
            distill=Distill(
                alpha=float(glob("distill.alpha")),
                temperature=float(glob("distill.temperature")),
                feature_weight=None if weight is None else float(weight),
            ),
            prune_layers=prune_layers,
            quant_layers=quant_layers,
            finetune=Finetune(
                lambda_=float(glob("finetune.lambda")),
                epochs=int(glob("finetune.epochs")),
                lr=float(glob("finetune.lr")),
                scope=str(glob("finetune.scope")),
            ),
            sparsity_layers=sparsity_layers,
            drop_blocks=(*self.dropped, *drops),
            quant_scope_layers=scope_layers,
        )

    def params_for_policy(self, kind: str) -> dict[str, Number]:
        """Flat param values of a uniform baseline (``identity``, ``int8``, ``prune30-int8``),
        each snapped to the nearest value the parameter allows."""
        base = baseline_spec(kind)
        targets = {**_BASELINE_GLOBALS, **base.globals}
        out: dict[str, Number] = {}
        for p in self.params:
            if p.name == "finetune.epochs" and base.max_epochs:
                out[p.name] = max(p.choices) if p.choices else p.nearest(p.high or 0)
            elif p.name.startswith("prune."):
                out[p.name] = p.nearest(base.prune)
            elif p.name.startswith("bits."):
                out[p.name] = p.nearest(base.bits)
            elif p.name.startswith("scope."):  # the target's default: the first choice
                out[p.name] = p.choices[0] if p.choices else "weight"
            elif p.name.startswith(("sparsity.", "drop.")):  # baselines prune units only
                out[p.name] = p.nearest("keep" if p.name.startswith("drop.") else 0.0)
            else:
                target = targets[p.name] if p.name in targets else GLOBAL_DEFAULTS[p.name]
                out[p.name] = p.nearest(target)
        return out


# -- the space as written ---------------------------------------------------------------------

_TOP_KEYS = ("distill", "finetune", "rules", "drop", "hierarchy")
DROP_CHOICES = ("keep", "drop")


@dataclass(frozen=True)
class DropRule:
    """The ``drop`` section: which droppable blocks are searched (``auto``: all) and how."""

    blocks: tuple[str, ...] = ("*",)
    choices: tuple[str, ...] = DROP_CHOICES

    def to_dict(self) -> dict[str, Any]:
        blocks = "auto" if self.blocks == ("*",) else list(self.blocks)
        return {"blocks": blocks, "choices": list(self.choices)}

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> DropRule:
        check_keys(source, "drop", data, ("blocks", "choices"))
        blocks = data.get("blocks", "auto")
        globs = ("*",) if blocks == "auto" else _strings(source, "drop.blocks", blocks)
        choices = _strings(source, "drop.choices", data.get("choices", list(DROP_CHOICES)))
        if not set(choices) <= set(DROP_CHOICES):
            raise ConfigError(f"{source}: drop.choices: {list(choices)}: use keep and/or drop")
        return cls(blocks=globs, choices=tuple(dict.fromkeys(choices)))

    def blocks_of(self, model: nn.Module, example_inputs: tuple, source: str) -> list[str]:
        from .drop import find_blocks

        found = list(find_blocks(model, example_inputs))
        hits = [b for b in found if any(fnmatch.fnmatchcase(b, g) for g in self.blocks)]
        if not hits:
            raise ConfigError(
                f"{source}: drop.blocks: {self.to_dict()['blocks']!r} matches no droppable "
                f"block (residual blocks in a Sequential, layers in a ModuleList); "
                f"found: {', '.join(found) or 'none'}"
            )
        return hits


_GLOBAL_KEYS = {
    "distill": ("alpha", "temperature", "feature_weight"),
    "finetune": ("lambda", "epochs", "lr", "scope"),
}


@dataclass(frozen=True)
class PruneUnit:
    """Layers pruned by one ratio: a coupled channel group, or the q/k/v of one attention
    module (whole heads). ``reason`` says why it cannot be pruned, if so."""

    name: str
    layers: tuple[str, ...]
    size: int  # channels, or heads for attention
    kind: str  # "channels" or "heads"
    reason: str | None = None
    grouped: tuple[str, ...] = ()  # grouped convs whose slices must stay equal, "conv (in, 4)"


def prune_units(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], outputs: Iterable[str]
) -> dict[str, PruneUnit]:
    """Layer path -> its prune unit, from the dependency graph traced once on a copy."""
    import copy

    from .heads import attention_modules
    from .prune import graph_of

    graph = graph_of(copy.deepcopy(model), example_inputs, tuple(outputs))
    units: dict[str, PruneUnit] = {}
    for g in graph.groups:
        grouped = tuple(f"{s.layer} ({s.side}, {len(s.slices)})" for s in g.slicings)
        unit = PruneUnit(g.name, g.layers, g.channels, "channels", g.reason, grouped)
        units.update({layer: unit for layer in g.layers})
    for path, attn in attention_modules(model).items():
        unit = PruneUnit(path or "<model>", attn.qkv_paths, attn.heads, "heads")
        units.update({q: unit for q in attn.qkv_paths})
    return units


def _attention_of(units: Mapping[str, PruneUnit]) -> dict[str, str]:
    """Layer path -> attention module path, for the q/k/v Linears of recognised attention."""
    return {p: u.name for p, u in units.items() if u.kind == "heads"}


@dataclass(frozen=True)
class SearchSpace:
    """Global ranges plus layer rules; ``resolve`` applies it to a model.

    >>> SearchSpace.from_dict(load_space("int8").to_dict()) == load_space("int8")
    True
    """

    globals: Mapping[str, Values] = field(default_factory=dict)  # "distill.alpha" -> Values
    rules: tuple[Rule, ...] = ()
    source: str = field(default="<dict>", compare=False)
    drop: DropRule | None = None
    hierarchy: Any = None  # a hierarchy.Hierarchy: global level + per-group offsets

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, values in self.globals.items():
            section, key = name.split(".")
            out.setdefault(section, {})[key] = values.to_dict()
        out["rules"] = [r.to_dict() for r in self.rules]
        if self.drop is not None:
            out["drop"] = self.drop.to_dict()
        if self.hierarchy is not None:
            out["hierarchy"] = self.hierarchy.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> SearchSpace:
        check_keys(source, "", data, _TOP_KEYS)
        glob: dict[str, Values] = {}
        for section, keys in _GLOBAL_KEYS.items():
            given = data.get(section) or {}
            check_keys(source, section, given, keys)
            for key in keys:
                if given.get(key) is not None:
                    name = f"{section}.{key}"
                    glob[name] = Values.parse(given[key], field_name=name, source=source, key=name)
        rules_data = data.get("rules", [])
        if not isinstance(rules_data, list):
            raise ConfigError(f"{source}: rules: must be a list of rules, got {rules_data!r}")
        rules = tuple(
            Rule.from_dict(r, source=source, key=f"rules[{i}]") for i, r in enumerate(rules_data)
        )
        drop_data = data.get("drop")
        drop = None if drop_data is None else DropRule.from_dict(drop_data, source=source)
        hierarchy = None
        if data.get("hierarchy") is not None:
            hierarchy = Hierarchy.from_dict(data["hierarchy"], source=source)
        return cls(globals=glob, rules=rules, source=source, drop=drop, hierarchy=hierarchy)

    def resolve(
        self,
        model: nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        *,
        output_layers: Sequence[str] | None = None,
        supported_bits: Sequence[int] | None = None,
        supported_scopes: Sequence[str] | None = None,
    ) -> ResolvedSpace:
        """Apply the rules to ``model``'s layers.

        Args:
            output_layers: paths never pruned; default: the layers ``list_layers`` flags.
            supported_bits: bit-widths the target runs; a rule offering others is an error.
            supported_scopes: quantization scopes the target runs; others are left out of a
                rule's ``scope`` choices (a rule offering none of them is an error).
        """
        infos = list_layers(model, example_inputs)
        if output_layers is not None:
            outs = set(output_layers)
            infos = [LayerInfo(i.path, i.type, i.shape, i.params, i.path in outs) for i in infos]
        units = prune_units(model, example_inputs, [i.path for i in infos if i.is_output])
        attention = _attention_of(units)
        params: dict[str, tuple[Param, int]] = {}
        fixed: dict[str, Number] = {}

        def add(param: Param, rule_index: int) -> str:
            if param.name in params and params[param.name][0] != param:
                other = params[param.name][1]
                raise ConfigError(
                    f"{self.source}: rules[{rule_index}]: parameter {param.name} is also made by "
                    f"rules[{other}] with different values; use another group name"
                )
            params.setdefault(param.name, (param, rule_index))
            return param.name

        for name, values in self.globals.items():
            if values.is_fixed:
                fixed[name] = values.fixed  # type: ignore[assignment]
            else:
                add(Param.from_values(name, values, integer=FIELDS[name].integer), -1)

        used = [False] * len(self.rules)
        layers: list[LayerSpace] = []
        contexts = {
            i.path: _LayerContext(
                i, attention.get(i.path), units[i.path].name if i.path in units else None
            )
            for i in infos
        }
        rule_of = {
            p: next((k for k, r in enumerate(self.rules) if r.matches(ctx)), None)
            for p, ctx in contexts.items()
        }
        for info in infos:
            ctx = contexts[info.path]
            index = rule_of[info.path]
            unit = units.get(info.path)
            if index is None:
                layers.append(
                    LayerSpace(
                        *_info_fields(info),
                        None,
                        None,
                        prune_param=None,
                        bits_param=None,
                        prune_group=unit.name if unit else None,
                    )
                )
                continue
            rule, used[index] = self.rules[index], True
            group = rule.group_name(ctx)
            if group is None:
                raise ConfigError(
                    f"{self.source}: rules[{index}].group: {rule.group!r} has no value for "
                    f"layer {info.path} (is it the q/k/v of a recognised attention module?)"
                )
            self._check_bits(rule, index, supported_bits)
            prune_param = bits_param = sparsity_param = None
            prune, bits, sparsity = 0.0, 32, None
            note = self._unit_note(info, unit)
            spec = self._unit_spec(unit, contexts, rule_of) if note is None else None
            if spec is not None:
                leader_rule, leader_ctx, values = spec
                if values.is_fixed:
                    prune = float(values.fixed)  # type: ignore[arg-type]
                else:
                    name = leader_rule.group_name(leader_ctx) if leader_rule.group else None
                    p = Param.from_values(f"prune.{name or unit.name}", values, integer=False)
                    prune_param = add(p, rule_of[leader_ctx.layer.path])
            if rule.bits is not None:
                if rule.bits.is_fixed:
                    bits = int(rule.bits.fixed)  # type: ignore[arg-type]
                else:
                    bits_param = add(
                        Param.from_values(f"bits.{group}", rule.bits, integer=True), index
                    )
            if rule.sparsity is not None and rule.sparsity.is_fixed:
                sparsity = float(rule.sparsity.fixed)  # type: ignore[arg-type]
            elif rule.sparsity is not None:
                p = Param.from_values(f"sparsity.{group}", rule.sparsity, integer=False)
                sparsity_param = add(p, index)
            scope_values = _offered_scopes(rule, index, supported_scopes, self.source)
            scope_param, scope = None, None
            if scope_values is not None and scope_values.is_fixed:
                scope = str(scope_values.fixed)
            elif scope_values is not None:
                p = Param.from_values(f"scope.{group}", scope_values, integer=False)
                scope_param = add(p, index)
            layers.append(
                LayerSpace(
                    *_info_fields(info),
                    rule=index,
                    group=group if rule.group is not None else None,
                    prune_param=prune_param,
                    bits_param=bits_param,
                    prune=prune,
                    bits=bits,
                    prune_group=unit.name if unit else None,
                    prune_note=note,
                    sparsity_param=sparsity_param,
                    sparsity=sparsity,
                    scope_param=scope_param,
                    scope=scope,
                )
            )
        for index, rule in enumerate(self.rules):
            if not used[index] and not rule.optional:
                shown = ", ".join(i.path for i in infos[:12]) + (" ..." if len(infos) > 12 else "")
                raise ConfigError(
                    f"{self.source}: {rule.label(index)}: matches no layer of the model "
                    f"(an earlier rule may take them; add optional: true to allow); "
                    f"layers are: {shown}"
                )
        dropped: list[str] = []
        if self.drop is not None:
            for block in self.drop.blocks_of(model, example_inputs, self.source):
                if len(self.drop.choices) > 1:
                    add(Param(f"drop.{block}", "categorical", choices=self.drop.choices), -1)
                elif self.drop.choices == ("drop",):
                    dropped.append(block)
        resolved = ResolvedSpace(
            source=self.source,
            params=tuple(p for p, _ in params.values()),
            layers=tuple(layers),
            fixed=fixed,
            units=tuple(dict.fromkeys(units.values())),
            dropped=tuple(dropped),
        )
        if self.hierarchy is not None:
            return HierarchicalSpace.build(resolved, self.hierarchy)
        return resolved

    @staticmethod
    def _unit_note(info: LayerInfo, unit: PruneUnit | None) -> str | None:
        if info.is_output:
            return "output layer"
        if unit is None:
            return "not in the traced graph"
        return unit.reason

    def _unit_spec(
        self,
        unit: PruneUnit | None,
        contexts: Mapping[str, _LayerContext],
        rule_of: Mapping[str, int | None],
    ) -> tuple[Rule, _LayerContext, Values] | None:
        """The prune values of a unit: its first layer's rule; every member must agree."""
        assert unit is not None
        members = [m for m in unit.layers if m in contexts]
        specs = [
            (m, self.rules[k].prune if k is not None else None)
            for m in members
            for k in [rule_of[m]]
        ]
        first, values = specs[0]
        for other, v in specs[1:]:
            if v != values:
                raise ConfigError(
                    f"{self.source}: layers {first} and {other} are coupled (prune group "
                    f"{unit.name}) and take one ratio, but their rules give different prune "
                    "values; make the rules agree on these layers"
                )
        if values is None:
            return None
        index = rule_of[first]
        assert index is not None
        return self.rules[index], contexts[first], values

    def _check_bits(self, rule: Rule, index: int, supported: Sequence[int] | None) -> None:
        if supported is None or rule.bits is None:
            return
        offered = (rule.bits.fixed,) if rule.bits.is_fixed else rule.bits.choices or ()
        for b in offered:
            if b not in supported:
                raise ConfigError(
                    f"{self.source}: rules[{index}].bits: {b} bits cannot be run by the target "
                    f"(supported: {', '.join(map(str, supported))}); remove it from the choices"
                )


def _offered_scopes(
    rule: Rule, index: int, supported: Sequence[str] | None, source: str
) -> Values | None:
    """A rule's scope values restricted to what the target runs (a target does not offer a
    scope it cannot run)."""
    if rule.scope is None or supported is None:
        return rule.scope
    asked = (rule.scope.fixed,) if rule.scope.is_fixed else rule.scope.choices or ()
    kept = tuple(s for s in asked if s in supported)
    if not kept:
        raise ConfigError(
            f"{source}: rules[{index}].scope: {', '.join(map(str, asked))} cannot be run by the "
            f"target (it runs: {', '.join(supported)})"
        )
    return Values(fixed=kept[0]) if len(kept) == 1 else Values(choices=kept)


def _info_fields(info: LayerInfo) -> tuple[str, str, tuple[int, ...], int, bool]:
    return info.path, info.type, info.shape, info.params, info.is_output


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A preset from ``search_spaces/`` by name (``"default"``) or a YAML file path.

    >>> load_space("grouped").rules[0].group
    'prefix:1'
    """
    data, source = read_preset(name_or_path, "search_spaces")
    return SearchSpace.from_dict(data, source=source)


# -- the two-level space (``hierarchy`` section); see autocompress/hierarchy.py -------------
GLOBAL_PRUNE = "global.prune"
GLOBAL_BITS = "global.bits"
_HIERARCHY_KEYS = ("prune_offsets", "bits_offsets")


@dataclass(frozen=True)
class Hierarchy:
    """The offsets each group may take from the global level (0 must be one of them)."""

    prune_offsets: tuple[float, ...] = (-0.2, -0.1, 0.0, 0.1, 0.2)
    bits_offsets: tuple[int, ...] = (-1, 0, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"prune_offsets": list(self.prune_offsets), "bits_offsets": list(self.bits_offsets)}

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> Hierarchy:
        if data is True:
            return cls()
        check_keys(source, "hierarchy", data, _HIERARCHY_KEYS)

        def offsets(key: str, default: tuple[Number, ...], integer: bool) -> tuple[Any, ...]:
            raw = data.get(key, list(default))
            if not isinstance(raw, list) or not raw:
                raise ConfigError(f"{source}: hierarchy.{key}: must be a non-empty list of numbers")
            values = [to_number(source, f"hierarchy.{key}", v) for v in raw]
            if integer and not all(float(v).is_integer() for v in values):
                raise ConfigError(f"{source}: hierarchy.{key}: steps must be whole numbers")
            if 0 not in values:
                raise ConfigError(
                    f"{source}: hierarchy.{key}: must contain 0 (the uniform policy); got {raw!r}"
                )
            cast = int if integer else float
            return tuple(sorted({cast(v) for v in values}))

        return cls(
            prune_offsets=offsets("prune_offsets", cls.prune_offsets, False),
            bits_offsets=offsets("bits_offsets", cls.bits_offsets, True),
        )


def _choices(p: Param) -> tuple[Number, ...]:
    if p.choices is not None:
        return tuple(sorted(p.choices))
    assert p.low is not None and p.high is not None
    step = p.step or 0.1
    n = int(round((p.high - p.low) / step))
    return tuple(round(p.low + k * step, 12) for k in range(n + 1))


@dataclass(frozen=True)
class HierarchicalSpace(ResolvedSpace):
    """A resolved space searched through a global level and per-group offsets.

    ``params`` are what the sampler sees; ``base_params`` the per-group parameters of the
    underlying space, which the offsets are turned into."""

    base_params: tuple[Param, ...] = ()
    hierarchy: Hierarchy = Hierarchy()

    @classmethod
    def build(cls, base: ResolvedSpace, hierarchy: Hierarchy) -> ResolvedSpace:
        prune = [p for p in base.params if p.name.startswith("prune.")]
        bits = [p for p in base.params if p.name.startswith("bits.")]
        if not prune and not bits:
            return base
        params = [p for p in base.params if not p.name.startswith(("prune.", "bits."))]
        if prune:
            levels = sorted({v for p in prune for v in _choices(p)})
            params.append(Param(name=GLOBAL_PRUNE, kind="categorical", choices=tuple(levels)))
            for p in prune:
                params.append(
                    Param(
                        name=f"offset.{p.name}", kind="categorical", choices=hierarchy.prune_offsets
                    )
                )
        if bits:
            levels = sorted({v for p in bits for v in _choices(p)})
            params.append(Param(name=GLOBAL_BITS, kind="categorical", choices=tuple(levels)))
            for p in bits:
                params.append(
                    Param(
                        name=f"offset.{p.name}", kind="categorical", choices=hierarchy.bits_offsets
                    )
                )
        return cls(
            source=base.source,
            params=tuple(params),
            layers=base.layers,
            fixed=base.fixed,
            units=base.units,
            dropped=base.dropped,
            base_params=base.params,
            hierarchy=hierarchy,
        )

    def param(self, name: str) -> Param:
        for p in (*self.params, *self.base_params):
            if p.name == name:
                return p
        raise KeyError(name)

    def base_values(self, params: Mapping[str, Any]) -> dict[str, Number]:
        """Per-group values of the underlying space for sampled level/offset values."""
        out: dict[str, Number] = {}
        for p in self.base_params:
            if p.name.startswith("prune."):
                if GLOBAL_PRUNE not in params:
                    continue
                ratio = params[GLOBAL_PRUNE] + params.get(f"offset.{p.name}", 0.0)
                out[p.name] = p.nearest(max(ratio, 0.0))
            elif p.name.startswith("bits."):
                if GLOBAL_BITS not in params:
                    continue
                choices = _choices(p)
                start = choices.index(p.nearest(params[GLOBAL_BITS]))
                step = int(params.get(f"offset.{p.name}", 0))
                out[p.name] = choices[min(max(start + step, 0), len(choices) - 1)]
            elif p.name in params:
                out[p.name] = params[p.name]
        return out

    def policy_from_params(self, params: Mapping[str, Any]) -> Policy:
        return super().policy_from_params(self.base_values(params))

    def params_for_policy(self, kind: str) -> dict[str, Number]:
        """A uniform baseline: the global level at its ratio and bits, every offset 0."""
        base = baseline_spec(kind)
        flat = ResolvedSpace(
            source=self.source,
            params=self.base_params,
            layers=self.layers,
            fixed=self.fixed,
            units=self.units,
            dropped=self.dropped,
        ).params_for_policy(kind)
        out: dict[str, Number] = {}
        for p in self.params:
            if p.name == GLOBAL_PRUNE:
                out[p.name] = p.nearest(base.prune)
            elif p.name == GLOBAL_BITS:
                out[p.name] = p.nearest(base.bits)
            elif p.name.startswith("offset."):
                out[p.name] = p.nearest(0)
            else:
                out[p.name] = flat[p.name]
        return out
