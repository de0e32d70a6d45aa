"""``autocompress inspect``: what a search space makes of a model, one row per layer.

>>> print(describe(task, "grouped"))  # doctest: +SKIP
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocompress.analysis.layers import prunable_type
from autocompress.pipeline.options import CompressOptions
from autocompress.study.space import LayerSpace, Param, ResolvedSpace, SearchSpace, load_space
from autocompress.targets import Target
from autocompress.task import Task
from autocompress.techniques.strategies import STRATEGIES


def _layer_prefixes() -> tuple[str, ...]:
    """Prefixes of per-layer (and per-block) parameters: bits, scope and every strategy's."""
    return ("bits.", "scope.", *(s.space_prefix for s in STRATEGIES.values()))


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
        if not prunable_type(layer.type):
            return "embedding table: bits only"
        if layer.rule is None:
            return "no rule: not pruned"
        if layer.prune_note is not None:
            return f"not pruned ({layer.prune_note})"
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


def group_lines(space: ResolvedSpace) -> list[str]:
    """One line per coupled prune group: its layers, width and what the space does with it."""
    params = {layer.prune_group: layer.prune_param for layer in space.layers if layer.prune_param}
    lines = [f"prune groups ({len(space.units)}; layers in one group lose the same channels):"]
    for unit in space.units:
        if unit.reason is not None:
            what = f"not pruned ({unit.reason})"
        else:
            what = params.get(unit.name) or "fixed"
        grouped = f", equal slices of {', '.join(unit.grouped)}" if unit.grouped else ""
        lines.append(
            f"  {unit.name}: {len(unit.layers)} layer(s), {unit.size} {unit.kind}{grouped} -> {what}"
        )
    return lines


def _offered(layer: LayerSpace, space: ResolvedSpace) -> list[int]:
    if layer.rule is None:
        return [32]
    if layer.bits_param is None:
        return [int(layer.bits)]
    param = space.param(layer.bits_param)
    return [int(c) for c in param.choices] if param.choices is not None else [int(layer.bits)]


def modes(task: Task, space: ResolvedSpace, tgt: Target) -> dict[str, str]:
    """Per layer, each offered bit-width with the mode ``tgt`` runs it in."""
    out = {}
    for layer in space.layers:
        module = task.model.get_submodule(layer.path)
        parent_path = layer.path.rpartition(".")[0]
        parent = task.model.get_submodule(parent_path) if parent_path else task.model
        out[layer.path] = ", ".join(
            f"{b}: {tgt.mode(module, b, parent)}" for b in _offered(layer, space)
        )
        if layer.scope_param or layer.scope:
            scope = _cell(layer.scope_param, 0, space) if layer.scope_param else layer.scope
            out[layer.path] += f"; scope {scope}"
    return out


def strategy_lines(space: ResolvedSpace, tgt: Target) -> list[str]:
    """The strategy dimensions (quantization scope, fine-tuning scope, feature weight) with
    what each choice means on ``tgt``."""
    from autocompress.techniques.scope import FEATURE_MEANING, FINETUNE_MEANING

    target = tgt.name
    lines = []
    scope_params = [p for p in space.params if p.name.startswith("scope.")]
    fixed_scopes = sorted({layer.scope for layer in space.layers if layer.scope})
    if scope_params or fixed_scopes:
        shown = ", ".join(p.name for p in scope_params) or f"fixed {', '.join(fixed_scopes)}"
        lines.append(f"quantization scope per layer ({shown}) on {target}:")
        lines += [f"  {s}: {meaning}" for s, meaning in tgt.quant_scopes.items()]
    names = {p.name: p for p in space.params}
    if "finetune.scope" in names or "finetune.scope" in space.fixed:
        offered = names["finetune.scope"].choices if "finetune.scope" in names else None
        choices = offered or (space.fixed["finetune.scope"],)
        lines.append("finetune.scope:")
        lines += [f"  {c}: {FINETUNE_MEANING[str(c)]}" for c in choices]
    if "distill.feature_weight" in names or "distill.feature_weight" in space.fixed:
        lines.append(f"distill.feature_weight: {FEATURE_MEANING}")
    return lines


def describe(
    task: Task,
    space: SearchSpace | str | Path,
    *,
    target: str = "torch",
    width: int = 160,
    target_options: Mapping[str, Any] | None = None,
) -> str:
    """The resolved space for ``task``'s model on ``target`` as a text table, globals and
    dimension last (then what the target's options resolve to on this machine)."""
    from rich.console import Console
    from rich.table import Table

    from autocompress.techniques.distill import unused_globals

    if not isinstance(space, SearchSpace):
        space = load_space(space)
    tgt = CompressOptions.of(target=target, target_options=target_options).target
    resolved = space.resolve(
        task.model,
        task.example_inputs,
        output_layers=task.output_layers,
        supported_bits=tgt.bits,
        supported_scopes=tuple(tgt.quant_scopes),
        left_out=unused_globals(task),
    )
    by_layer = modes(task, resolved, tgt)
    table = Table(title=f"search space {resolved.source} on {task.name}, target {target}")
    layer_rows = rows(resolved)
    sparse = any(row.sparsity for row in layer_rows)  # the weight strategy's column, when used
    for column, justify in [
        ("layer", "left"),
        ("type", "left"),
        ("shape", "left"),
        ("params", "right"),
        ("prune", "left"),
        ("bits", "left"),
        (f"mode on {target}", "left"),
    ] + [("sparsity", "left")] * sparse:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in layer_rows:
        cells = [row.path, row.type, row.shape, f"{row.params:,}", row.prune, row.bits]
        table.add_row(*cells, by_layer[row.path], *[row.sparsity] * sparse)

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    console.print(table)
    for line in group_lines(resolved):
        console.print(line)
    from autocompress.techniques.drop import block_stages, find_blocks

    blocks = find_blocks(task.model, task.example_inputs)
    console.print(
        f"droppable blocks ({len(blocks)}; a policy's drop.blocks or a space's drop: takes them): "
        + (", ".join(blocks) or "none")
    )
    stages = resolved.stages or block_stages(task.model, task.example_inputs, blocks)
    if stages:
        console.print(
            f"stages ({len(stages)}; blocks sharing a parent and an input shape, in drop order: "
            "least relative residual change ||block(x) - x|| / ||x|| first; global.depth = D "
            "drops the first D of each):"
        )
    for stage in stages:
        console.print(
            f"  {stage.name}: "
            + ", ".join(f"{b} ({c:.2f})" for b, c in zip(stage.blocks, stage.change, strict=True))
        )
    for p in resolved.params:
        if not p.name.startswith(_layer_prefixes()):
            console.print(f"{p.name}: {_values(p)}")
    for p in resolved.params:
        if p.name.startswith("drop."):
            console.print(f"{p.name}: {_values(p)} (drop: the block becomes its identity path)")
    for block in resolved.dropped:
        console.print(f"drop.{block}: drop (fixed)")
    for name, value in resolved.fixed.items():
        shown = value if isinstance(value, str) else f"{value:g}"
        console.print(f"{name}: {shown} (fixed)")
    for name, why in resolved.left_out.items():
        console.print(f"{name}: left out ({why})")
    for line in strategy_lines(resolved, tgt):
        console.print(line)
    for line in tgt.describe():
        console.print(f"{target}: {line}")
    layer_params = sum(p.name.startswith(_layer_prefixes()) for p in resolved.params)
    console.print(
        f"dimension: {resolved.dimension} ({layer_params} layer parameters, "
        f"{resolved.dimension - layer_params} global)"
    )
    return buffer.getvalue()
