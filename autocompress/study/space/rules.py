"""Rules: which layers (and, in ``drop``, which blocks) a space searches, and how.

A ``Rule`` matches layers by glob on the module path, class name or role and gives their prune
values, bit-widths, sparsity and quantization scope; its ``group`` template ties the layers it
matches into one parameter. ``DropRule`` is the ``drop`` section.
"""

from __future__ import annotations

import fnmatch
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from autocompress.analysis.layers import LayerInfo
from autocompress.errors import ConfigError
from autocompress.study.presets import check_keys
from autocompress.study.space.values import Values, set_parts


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
        return out | set_parts(
            self, ("role", "prune", "bits", "group", "optional", "sparsity", "scope")
        )

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


DROP_CHOICES = ("keep", "drop")


@dataclass(frozen=True)
class DropRule:
    """The ``drop`` section: which droppable blocks are searched (``auto``: all) and how;
    ``optional: true`` lets it match none (the model then gets no drop parameters)."""

    blocks: tuple[str, ...] = ("*",)
    choices: tuple[str, ...] = DROP_CHOICES
    optional: bool = False

    def to_dict(self) -> dict[str, Any]:
        blocks = "auto" if self.blocks == ("*",) else list(self.blocks)
        return {"blocks": blocks, "choices": list(self.choices)} | set_parts(self, ("optional",))

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> DropRule:
        check_keys(source, "drop", data, ("blocks", "choices", "optional"))
        blocks = data.get("blocks", "auto")
        globs = ("*",) if blocks == "auto" else _strings(source, "drop.blocks", blocks)
        choices = _strings(source, "drop.choices", data.get("choices", list(DROP_CHOICES)))
        if not set(choices) <= set(DROP_CHOICES):
            raise ConfigError(f"{source}: drop.choices: {list(choices)}: use keep and/or drop")
        optional = data.get("optional", False)
        if not isinstance(optional, bool):
            raise ConfigError(f"{source}: drop.optional: must be true or false, got {optional!r}")
        return cls(blocks=globs, choices=tuple(dict.fromkeys(choices)), optional=optional)

    def blocks_of(self, model: nn.Module, example_inputs: tuple, source: str) -> list[str]:
        from autocompress.techniques.drop import find_blocks

        found = list(find_blocks(model, example_inputs))
        hits = [b for b in found if any(fnmatch.fnmatchcase(b, g) for g in self.blocks)]
        if not hits and not self.optional:
            raise ConfigError(
                f"{source}: drop.blocks: {self.to_dict()['blocks']!r} matches no droppable "
                f"block (a module whose output is its input plus a residual branch); "
                f"found: {', '.join(found) or 'none'} (add optional: true to allow none)"
            )
        return hits
