"""The ``structure`` pruning strategy: whole residual blocks or transformer layers dropped.

A dropped block is replaced by its identity path (``x + f(x)`` becomes ``x``), as DistilBERT-
style layer dropping does. Which modules are blocks (the documented rule):

- a direct entry of an ``nn.Sequential`` or ``nn.ModuleList`` that holds parameters inside child
  modules (a single Linear or Conv is a layer, not a block);
- whose first input and (first) output have the same shape on the example inputs (read with
  forward hooks);
- an ``nn.Sequential`` entry must also show an identity path when its own ``forward`` is traced
  with torch.fx (children as leaves): the output is an add of the input (possibly behind
  ReLU-like ops, empty ``Sequential`` shortcuts, or a chain of such adds);
- an ``nn.ModuleList`` entry is taken on shape alone: layer stacks of transformer encoders
  (Hugging Face BERT ``encoder.layer[i]``, ``nn.TransformerEncoder.layers``) are residual —
  except ``nn.TransformerEncoder.layers[0]``, which its ``forward`` reads attributes of;
- any other module holding parameterized children (a residual block held as a plain attribute
  of its parent, ``self.block2 = ResBlock(...)``) is a block when its traced ``forward`` shows
  the identity path, as for ``nn.Sequential`` entries.

A block whose output was a tuple (older Hugging Face layers return ``(hidden_states, ...)``)
is replaced by a module returning ``(x,)``. The artifact records ``{path: kind}`` and the
loader replaces the same blocks before filling in the tensors: nothing is pickled.

Depth (``block_stages``): a **stage** is the droppable blocks that share a parent module and an
input shape (a ResNet stage's identity blocks, an encoder's layer stack). Within a stage, blocks
go in **drop order**: the block whose residual branch changes its input least, relative to the
input (``||block(x) - x|| / ||x||`` on the example inputs, the model in eval mode), first; equal
changes, the later block first. "Drop ``d`` blocks per stage" drops the first ``d`` of each.
"""

from __future__ import annotations

import contextlib
import fnmatch
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import fx, nn
from torch.nn import functional as F

from autocompress.errors import AutoCompressError, PolicyError

V = TypeVar("V")
KINDS = ("tensor", "tuple")
_ADDS = {operator.add, operator.iadd, torch.add}
_PASS_FUNCTIONS = {F.relu, torch.relu, F.gelu, F.silu, F.dropout}
_PASS_MODULES = (nn.Identity, nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Dropout)


class DroppedBlock(nn.Module):
    """What a dropped block becomes: its first input, as a tensor or a 1-tuple."""

    def __init__(self, kind: str = "tensor") -> None:
        super().__init__()
        if kind not in KINDS:
            raise AutoCompressError(f"unknown dropped-block kind {kind!r}; one of {KINDS}")
        self.kind = kind

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        x = args[0] if args else next(iter(kwargs.values()))
        return (x,) if self.kind == "tuple" else x


class _Leaves(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _passthrough(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    if node.op == "call_function":
        return node.target in _PASS_FUNCTIONS
    if node.op == "call_method":
        return node.target in ("relu", "relu_")
    if node.op == "call_module":
        mod = modules.get(str(node.target))
        return isinstance(mod, _PASS_MODULES) or (isinstance(mod, nn.Sequential) and not len(mod))
    return False


def _reaches_input(node: Any, x: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    if not isinstance(node, fx.Node):
        return False
    if node is x:
        return True
    is_add = (node.op == "call_function" and node.target in _ADDS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )
    if is_add:
        return any(_reaches_input(a, x, modules) for a in node.args)
    return _passthrough(node, modules) and _reaches_input(node.args[0], x, modules)


def has_identity_path(block: nn.Module) -> bool:
    """True when ``block.forward`` traces to ``x + f(x)`` (see the module docstring)."""
    try:
        graph = _Leaves().trace(block)
    except Exception:
        return False
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    if isinstance(out, tuple | list):
        out = out[0] if out else None
    return bool(placeholders) and _reaches_input(out, placeholders[0], dict(block.named_modules()))


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def find_blocks(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> dict[str, str]:
    """Droppable blocks of ``model`` in module order: ``{path: kind}``."""
    # nn.TransformerEncoder.forward reads layers[0].self_attn (its fast-path checks): kept
    firsts = {
        f"{p}.layers.0" if p else "layers.0"
        for p, m in model.named_modules()
        if isinstance(m, nn.TransformerEncoder)
    }
    candidates: dict[str, tuple[nn.Module, bool]] = {}
    for path, mod in model.named_modules():
        for name, child in mod.named_children():
            inner = [c for c in child.children() if any(True for _ in c.parameters())]
            full = f"{path}.{name}" if path else name
            if (
                inner
                and not isinstance(child, nn.Sequential | nn.ModuleList)
                and full not in firsts
            ):
                # a ModuleList entry on shape alone; anything else shows its identity path
                candidates[f"{path}.{name}" if path else name] = (
                    child,
                    isinstance(mod, nn.ModuleList),
                )
    seen: dict[str, str] = {}

    def hook(path: str):
        def fn(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            x = _first_tensor(args) if args else _first_tensor(tuple(kwargs.values()))
            y = _first_tensor(output)
            if x is not None and y is not None and x.shape == y.shape and path not in seen:
                seen[path] = "tensor" if isinstance(output, torch.Tensor) else "tuple"

        return fn

    with contextlib.ExitStack() as undo:  # the hooks removed, the training mode restored
        for path, (mod, _) in candidates.items():
            undo.enter_context(mod.register_forward_hook(hook(path), with_kwargs=True))
        undo.callback(model.train, model.training)
        model.eval()
        with torch.no_grad():
            model(*example_inputs)
    return {
        path: seen[path]
        for path, (mod, in_list) in candidates.items()
        if path in seen and (in_list or has_identity_path(mod))
    }


@dataclass(frozen=True)
class Stage:
    """Droppable blocks sharing a parent module and an input shape, in drop order, each with
    its relative residual change (``||block(x) - x|| / ||x||``)."""

    name: str
    blocks: tuple[str, ...]
    change: tuple[float, ...]

    def first(self, depth: int) -> tuple[str, ...]:
        """The blocks ``depth`` drops in this stage (all of them when it has fewer)."""
        return self.blocks[: max(depth, 0)]


def block_stages(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], blocks: Iterable[str]
) -> tuple[Stage, ...]:
    """``blocks`` (paths of droppable blocks) grouped into stages, in drop order (see the
    module docstring); stages in module order of their first block."""
    paths = list(blocks)
    seen: dict[str, tuple[tuple[int, ...], float]] = {}

    def hook(path: str):
        def fn(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            x = _first_tensor(args) if args else _first_tensor(tuple(kwargs.values()))
            y = _first_tensor(output)
            if x is None or y is None or path in seen:
                return
            x, y = x.detach().double(), y.detach().double()
            change = float((y - x).norm() / x.norm().clamp_min(1e-12))
            seen[path] = (tuple(x.shape[1:]), round(change, 6))

        return fn

    with contextlib.ExitStack() as undo:  # the hooks removed, the training mode restored
        for path in paths:
            mod = model.get_submodule(path)
            undo.enter_context(mod.register_forward_hook(hook(path), with_kwargs=True))
        undo.callback(model.train, model.training)
        model.eval()
        with torch.no_grad():
            model(*example_inputs)
    grouped: dict[tuple[str, tuple[int, ...]], list[tuple[int, str]]] = {}
    for index, path in enumerate(paths):
        shape, _ = seen.get(path, ((), 0.0))
        grouped.setdefault((path.rpartition(".")[0], shape), []).append((index, path))
    stages: list[Stage] = []
    parents: dict[str, int] = {}
    for (parent, _), members in grouped.items():
        parents[parent] = parents.get(parent, 0) + 1
        name = (parent or "<model>") + (f"#{parents[parent]}" if parents[parent] > 1 else "")
        order = sorted(members, key=lambda m: (seen.get(m[1], ((), 0.0))[1], -m[0]))
        stages.append(
            Stage(
                name=name,
                blocks=tuple(p for _, p in order),
                change=tuple(seen.get(p, ((), 0.0))[1] for _, p in order),
            )
        )
    return tuple(stages)


def resolve_blocks(keys: Iterable[str], blocks: Mapping[str, str]) -> dict[str, str]:
    """The blocks a policy's ``drop.blocks`` (paths or globs) names; errors name the key."""
    chosen: dict[str, str] = {}
    for index, key in enumerate(keys):
        hits = [p for p in blocks if p == key or fnmatch.fnmatchcase(p, key)]
        if not hits:
            shown = ", ".join(list(blocks)[:12]) or "none"
            raise PolicyError(
                f"policy key drop.blocks[{index}] = {key!r} matches no droppable block; "
                f"droppable blocks are: {shown}"
            )
        chosen.update({p: blocks[p] for p in hits})
    return {p: chosen[p] for p in blocks if p in chosen}  # module order, outer blocks first


def drop_blocks_(model: nn.Module, blocks: Mapping[str, str]) -> nn.Module:
    """Replace each ``{path: kind}`` block of ``model`` in place by a ``DroppedBlock``."""
    known = {p for p, _ in model.named_modules()}
    for path in blocks:
        if path not in known:
            raise AutoCompressError(f"dropped block {path!r} is not a module of the model")
        parent_path, _, child = path.rpartition(".")
        try:
            parent = model.get_submodule(parent_path)
            parent.get_submodule(child)
        except AttributeError:
            continue  # inside a block dropped earlier in this loop
        setattr(parent, child, DroppedBlock(blocks[path]))
    return model


def live(values: Mapping[str, V], model: nn.Module) -> dict[str, V]:
    """The entries of a per-layer mapping whose layer is still in ``model`` (not dropped)."""
    paths = {p for p, _ in model.named_modules()}
    return {p: v for p, v in values.items() if p in paths}


__all__ = [
    "DroppedBlock",
    "Stage",
    "block_stages",
    "drop_blocks_",
    "find_blocks",
    "has_identity_path",
    "live",
    "resolve_blocks",
]
