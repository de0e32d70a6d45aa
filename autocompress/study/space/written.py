"""The space as written: global ranges, layer rules, ``drop`` and ``hierarchy``, read from YAML.

``SearchSpace.resolve`` applies it to a model: every layer takes the first rule that matches,
coupled layers share one prune parameter, and a rule that matches nothing (or offers a
bit-width or scope the target cannot run) is an error naming the rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.analysis.layers import LayerInfo, list_layers
from autocompress.errors import ConfigError
from autocompress.study.presets import check_keys, read_preset
from autocompress.study.space.hierarchy import HierarchicalSpace, Hierarchy
from autocompress.study.space.resolved import LayerSpace, Param, ResolvedSpace
from autocompress.study.space.rules import DropRule, Rule, _LayerContext
from autocompress.study.space.units import PruneUnit, _attention_of, prune_units
from autocompress.study.space.values import FIELDS, Number, Values, set_parts
from autocompress.techniques.drop import block_stages

_TOP_KEYS = ("distill", "finetune", "rules", "drop", "hierarchy")
_GLOBAL_KEYS = {
    "distill": ("alpha", "temperature", "feature_weight"),
    "finetune": ("lambda", "epochs", "lr", "scope"),
}


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
    hierarchy: Hierarchy | None = None  # a global level + per-group offsets

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, values in self.globals.items():
            section, key = name.split(".")
            out.setdefault(section, {})[key] = values.to_dict()
        out["rules"] = [r.to_dict() for r in self.rules]
        return out | set_parts(self, ("drop", "hierarchy"))

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
        left_out: Mapping[str, str] | None = None,
    ) -> ResolvedSpace:
        """Apply the rules to ``model``'s layers.

        Args:
            output_layers: paths never pruned; default: the layers ``list_layers`` flags.
            supported_bits: bit-widths the target runs; a rule offering others is an error.
            supported_scopes: quantization scopes the target runs; others are left out of a
                rule's ``scope`` choices (a rule offering none of them is an error).
            left_out: global dimensions the task cannot use (name -> why, e.g.
                ``distill.unused_globals(task)``): not searched, recorded with the reason.
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

        left_out = {n: why for n, why in (left_out or {}).items() if n in self.globals}
        for name, values in self.globals.items():
            if name in left_out:
                continue
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
        searched: list[str] = []
        if self.drop is not None:
            for block in self.drop.blocks_of(model, example_inputs, self.source):
                if len(self.drop.choices) > 1:
                    add(Param(f"drop.{block}", "categorical", choices=self.drop.choices), -1)
                    searched.append(block)
                elif self.drop.choices == ("drop",):
                    dropped.append(block)
        resolved = ResolvedSpace(
            source=self.source,
            params=tuple(p for p, _ in params.values()),
            layers=tuple(layers),
            fixed=fixed,
            units=tuple(dict.fromkeys(units.values())),
            dropped=tuple(dropped),
            left_out=left_out,
            stages=block_stages(model, example_inputs, searched) if searched else (),
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
