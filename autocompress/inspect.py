"""``autocompress inspect``: what a search space makes of a model, one row per layer.

>>> print(describe(task, "grouped"))  # doctest: +SKIP
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from .space import LayerSpace, Param, ResolvedSpace, SearchSpace, load_space
from .task import Task

_LAYER_PREFIXES = ("prune.", "bits.", "sparsity.", "drop.")


@dataclass(frozen=True)
class Row:
    path: str
    type: str
    shape: str
    params: int
    prune: str
    bits: str
    sparsity: str = ""


def _values(param: Param) -> str:
    if param.choices is not None:
        return "{" + ", ".join(c if isinstance(c, str) else f"{c:g}" for c in param.choices) + "}"
    step = f" step {param.step:g}" if param.step is not None else ""
    log = " log" if param.kind == "log-float" else ""
    return f"[{param.low:g}, {param.high:g}]{step}{log}"


def _cell(name: str | None, fixed: float, space: ResolvedSpace) -> str:
    if name is None:
        return f"{fixed:g} (fixed)"
    return f"{name} {_values(space.param(name))}"


def rows(space: ResolvedSpace) -> list[Row]:
    """One row per layer: its size and what the space searches for it."""

    def prune(layer: LayerSpace) -> str:
        if layer.is_output:
            return "output layer: not pruned"
        if layer.rule is None:
            return "no rule: not pruned"
        return _cell(layer.prune_param, layer.prune, space)

    def bits(layer: LayerSpace) -> str:
        if layer.rule is None:
            return "no rule: 32 (float)"
        return _cell(layer.bits_param, layer.bits, space)

    return [
        Row(
            path=layer.path,
            type=layer.type,
            shape="x".join(map(str, layer.shape)),
            params=layer.params,
            prune=prune(layer),
            bits=bits(layer),
            sparsity=_cell(layer.sparsity_param, layer.sparsity or 0.0, space)
            if layer.sparsity_param or layer.sparsity is not None
            else "",
        )
        for layer in space.layers
    ]


def describe(task: Task, space: SearchSpace | str | Path, *, width: int = 140) -> str:
    """The resolved space for ``task``'s model as a text table, globals and dimension last."""
    from rich.console import Console
    from rich.table import Table

    if not isinstance(space, SearchSpace):
        space = load_space(space)
    resolved = space.resolve(task.model, task.example_inputs, output_layers=task.output_layers)
    table = Table(title=f"search space {resolved.source} on {task.name}")
    layer_rows = rows(resolved)
    sparse = any(row.sparsity for row in layer_rows)  # the weight strategy's column, when used
    for column, justify in [
        ("layer", "left"),
        ("type", "left"),
        ("shape", "left"),
        ("params", "right"),
        ("prune", "left"),
        ("bits", "left"),
    ] + [("sparsity", "left")] * sparse:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in layer_rows:
        cells = [row.path, row.type, row.shape, f"{row.params:,}", row.prune, row.bits]
        table.add_row(*cells, *[row.sparsity] * sparse)

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    console.print(table)
    for p in resolved.params:
        if not p.name.startswith(_LAYER_PREFIXES):
            console.print(f"{p.name}: {_values(p)}")
    for p in resolved.params:
        if p.name.startswith("drop."):
            console.print(f"{p.name}: {_values(p)} (drop: the block becomes its identity path)")
    for block in resolved.dropped:
        console.print(f"drop.{block}: drop (fixed)")
    for name, value in resolved.fixed.items():
        console.print(f"{name}: {value:g} (fixed)")
    layer_params = sum(p.name.startswith(_LAYER_PREFIXES) for p in resolved.params)
    console.print(
        f"dimension: {resolved.dimension} ({layer_params} layer parameters, "
        f"{resolved.dimension - layer_params} global)"
    )
    return buffer.getvalue()
