"""A two-level space: one global prune ratio and bit-width, refined by small per-group offsets.

A space with a ``hierarchy`` section is searched as ``global.prune`` and ``global.bits`` (the
"one setting for the whole model" a person tries first) plus, per group, ``offset.prune.<g>``
(added to the global ratio) and ``offset.bits.<g>`` (steps along that group's bit-width
choices). With every offset at 0 a policy is uniform, so the sampler starts from the uniform
front and spends the remaining trials refining it rather than sampling 12 dimensions blind.

    hierarchy:
      prune_offsets: [-0.2, -0.1, 0.0, 0.1, 0.2]
      bits_offsets: [-1, 0, 1]
      drop_offsets: [-1, 0, 1]

Every value still lands on a value its group's rule allows (the nearest one).

Depth: where the space also searches dropping blocks (a ``drop`` section that finds some), the
per-block ``drop.<block>`` choices become ``global.depth`` (blocks dropped per stage, 0 up to
the largest stage; which ones: each stage's drop order, see ``techniques.drop``) plus, per
block, ``offset.drop.<block>``: -1 keeps the block whatever the depth, 0 follows the depth,
+1 drops it. A model without droppable blocks gets no depth parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from autocompress.errors import ConfigError
from autocompress.policy import Policy
from autocompress.study.presets import check_keys, to_number
from autocompress.study.space.resolved import Param, ResolvedSpace, start_spec
from autocompress.study.space.values import Number

GLOBAL_PRUNE = "global.prune"
GLOBAL_BITS = "global.bits"
GLOBAL_DEPTH = "global.depth"
_HIERARCHY_KEYS = ("prune_offsets", "bits_offsets", "drop_offsets")


@dataclass(frozen=True)
class Hierarchy:
    """The offsets each group may take from the global level (0 must be one of them)."""

    prune_offsets: tuple[float, ...] = (-0.2, -0.1, 0.0, 0.1, 0.2)
    bits_offsets: tuple[int, ...] = (-1, 0, 1)
    drop_offsets: tuple[int, ...] = (-1, 0, 1)  # -1 keep, 0 follow global.depth, +1 drop

    def to_dict(self) -> dict[str, Any]:
        return {
            "prune_offsets": list(self.prune_offsets),
            "bits_offsets": list(self.bits_offsets),
            "drop_offsets": list(self.drop_offsets),
        }

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

        drop = offsets("drop_offsets", cls.drop_offsets, True)
        if not set(drop) <= {-1, 0, 1}:
            raise ConfigError(
                f"{source}: hierarchy.drop_offsets: {list(drop)}: use -1 (keep), 0 (follow the "
                "depth) and/or 1 (drop)"
            )
        return cls(
            prune_offsets=offsets("prune_offsets", cls.prune_offsets, False),
            bits_offsets=offsets("bits_offsets", cls.bits_offsets, True),
            drop_offsets=drop,
        )


def _choices(p: Param) -> tuple[Number, ...]:
    if p.choices is not None:
        return tuple(sorted(p.choices))
    assert p.low is not None and p.high is not None
    step = p.step or 0.1
    n = int(round((p.high - p.low) / step))
    return tuple(round(p.low + k * step, 12) for k in range(n + 1))


def _resolved_fields(space: ResolvedSpace, params: tuple[Param, ...]) -> dict[str, Any]:
    """The ``ResolvedSpace`` fields of ``space``, with ``params`` in place of its own."""
    return {**{f.name: getattr(space, f.name) for f in fields(ResolvedSpace)}, "params": params}


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
        searched = {f"drop.{b}" for s in base.stages for b in s.blocks}
        drop = [p for p in base.params if p.name in searched]
        if not prune and not bits and not drop:
            return base
        lifted = {p.name for p in (*prune, *bits, *drop)}
        params = [p for p in base.params if p.name not in lifted]
        for level, group, offsets in (
            (GLOBAL_PRUNE, prune, hierarchy.prune_offsets),
            (GLOBAL_BITS, bits, hierarchy.bits_offsets),
            (GLOBAL_DEPTH, drop, hierarchy.drop_offsets),
        ):
            if not group:
                continue
            if level == GLOBAL_DEPTH:
                levels = list(range(base.max_depth + 1))
            else:
                levels = sorted({v for p in group for v in _choices(p)})
            params.append(Param(name=level, kind="categorical", choices=tuple(levels)))
            if len(offsets) > 1:
                params += [Param(f"offset.{p.name}", "categorical", choices=offsets) for p in group]
        return cls(
            **_resolved_fields(base, tuple(params)), base_params=base.params, hierarchy=hierarchy
        )

    def param(self, name: str) -> Param:
        for p in (*self.params, *self.base_params):
            if p.name == name:
                return p
        raise KeyError(name)

    def base_values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Per-group values of the underlying space for sampled level/offset values."""
        out: dict[str, Any] = {}
        depth = self.depth_drops(int(params[GLOBAL_DEPTH])) if GLOBAL_DEPTH in params else None
        for p in self.base_params:
            if depth is not None and p.name.startswith("drop."):
                step = int(params.get(f"offset.{p.name}", 0))
                drop = step > 0 or (step == 0 and p.name[len("drop.") :] in depth)
                out[p.name] = "drop" if drop else "keep"
            elif p.name.startswith("prune."):
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
        """A uniform start policy: the global level at its ratio and bits, every offset 0."""
        base = start_spec(kind)
        flat = ResolvedSpace(**_resolved_fields(self, self.base_params)).params_for_policy(kind)
        out: dict[str, Number] = {}
        for p in self.params:
            if p.name == GLOBAL_PRUNE:
                out[p.name] = p.nearest(base.prune)
            elif p.name == GLOBAL_BITS:
                out[p.name] = p.nearest(base.bits)
            elif p.name == GLOBAL_DEPTH:
                out[p.name] = p.nearest(base.depth)
            elif p.name.startswith("offset."):
                out[p.name] = p.nearest(0)
            else:
                out[p.name] = flat[p.name]
        return out
