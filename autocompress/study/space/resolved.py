"""The resolved space: a space applied to one model, as the sampler sees it.

``Param`` is one searched hyperparameter; ``LayerSpace`` what each layer uses (a parameter or
a fixed value); ``ResolvedSpace`` turns sampled values into a ``Policy`` and places the
uniform start policies (``identity``, ``int8``, ``prune<NN>-int<B>``, ``drop<D>-...``) in the
space.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autocompress.analysis.layers import LayerInfo
from autocompress.errors import ConfigError
from autocompress.policy import SUPPORTED_BITS, Distill, Finetune, Policy, QuantScope
from autocompress.study.space.units import PruneUnit
from autocompress.study.space.values import GLOBAL_DEFAULTS, Number, Values
from autocompress.techniques.drop import Stage
from autocompress.techniques.strategies import strategy_of_param


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
class LayerSpace(LayerInfo):
    """What the space makes of one layer: its prune/bits parameter names or fixed values."""

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
class UniformStart:
    """A uniform policy enqueued before the search: per-layer targets and global values;
    ``depth`` blocks dropped per stage (where the space searches dropping)."""

    prune: float
    bits: int
    globals: Mapping[str, Number] = field(default_factory=dict)
    max_epochs: bool = True
    depth: int = 0


STARTS: dict[str, UniformStart] = {
    "identity": UniformStart(
        prune=0.0,
        bits=32,
        globals={"distill.alpha": 1.0, "finetune.lambda": 0.0, "finetune.epochs": 0},
        max_epochs=False,
    ),
    "int8": UniformStart(prune=0.0, bits=8),
    "prune30-int8": UniformStart(prune=0.3, bits=8),
}
_UNIFORM_NAME = re.compile(r"(?:drop(\d{1,2})-)?(?:prune(\d{1,2})-)?int(\d{1,2})")


def start_spec(kind: str) -> UniformStart:
    """A named start policy, or a uniform one spelled ``int<B>`` / ``prune<NN>-int<B>`` (e.g.
    ``prune50-int4``: 50 % of every prunable layer pruned, every layer at 4 bits), optionally
    behind ``drop<D>-`` (``drop1-prune50-int4``: also the first droppable block of every stage
    dropped, in the space's drop order; ignored where the space does not search dropping)."""
    if kind in STARTS:
        return STARTS[kind]
    found = _UNIFORM_NAME.fullmatch(kind)
    if found is None or int(found.group(3)) not in SUPPORTED_BITS:
        raise ConfigError(
            f"unknown start policy {kind!r}; choose from {', '.join(STARTS)} or spell a uniform "
            f"one [drop<D>-]prune<NN>-int<B> with B in {', '.join(map(str, SUPPORTED_BITS))}"
        )
    return UniformStart(
        prune=int(found.group(2) or 0) / 100,
        bits=int(found.group(3)),
        depth=int(found.group(1) or 0),
    )


# Globals of the training start policies: mid-range distillation, light regularization.
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
    left_out: Mapping[str, str] = field(default_factory=dict)  # globals the task cannot use
    stages: tuple[Stage, ...] = ()  # the searched droppable blocks by stage, in drop order

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

    @property
    def max_depth(self) -> int:
        """The most blocks one stage can drop (0: the space searches no dropping)."""
        return max((len(s.blocks) for s in self.stages), default=0)

    def depth_drops(self, depth: int) -> set[str]:
        """The blocks ``depth`` blocks dropped per stage drop."""
        return {b for s in self.stages for b in s.first(depth)}

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
        """Flat param values of a uniform start policy (``identity``, ``int8``, ``prune30-int8``),
        each snapped to the nearest value the parameter allows."""
        base = start_spec(kind)
        targets = {**_BASELINE_GLOBALS, **base.globals}
        dropped = self.depth_drops(base.depth)
        out: dict[str, Number] = {}
        for p in self.params:
            if p.name.startswith("drop.") and p.name[len("drop.") :] in dropped:
                out[p.name] = "drop"
            elif p.name == "finetune.epochs" and base.max_epochs:
                out[p.name] = max(p.choices) if p.choices else p.nearest(p.high or 0)
            elif p.name.startswith("bits."):
                out[p.name] = p.nearest(base.bits)
            elif p.name.startswith("scope."):  # the target's default: the first choice
                out[p.name] = p.choices[0] if p.choices else str(QuantScope.WEIGHT)
            elif (strategy := strategy_of_param(p.name)) is not None:  # start policies prune units
                out[p.name] = p.nearest(base.prune if strategy.name == "unit" else strategy.neutral)
            else:
                target = targets[p.name] if p.name in targets else GLOBAL_DEFAULTS[p.name]
                out[p.name] = p.nearest(target)
        return out
