"""Which modules of a model can be pruned and quantized, and how policy keys map onto them.

Layer keys in a policy are module paths (``features.0``) or fnmatch globs (``features.*``).
The most specific key wins: an exact path beats any glob; among globs the one with more
literal (non-wildcard) characters wins; ties go to the key written later.

Embedding tables (``nn.Embedding``) are quantizable but not prunable: they take bits
(per-row codes, see ``embedding``) and no prune or sparsity ratio.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
EMBEDDING_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding,)
QUANTIZABLE_TYPES: tuple[type[nn.Module], ...] = PRUNABLE_TYPES + EMBEDDING_TYPES

_WILDCARDS = set("*?[]")
_EMBEDDING_NAMES = {t.__name__ for t in EMBEDDING_TYPES}


@dataclass(frozen=True)
class LayerInfo:
    """One prunable / quantizable module of a model."""

    path: str
    type: str
    shape: tuple[int, ...]
    params: int
    is_output: bool

    @property
    def prunable(self) -> bool:
        return prunable_type(self.type)


def prunable_type(type_name: str) -> bool:
    """Linear/Conv: channels or neurons can be removed (an embedding table only quantizes)."""
    return type_name not in _EMBEDDING_NAMES


def _literal_len(pattern: str) -> int:
    return sum(1 for ch in pattern if ch not in _WILDCARDS)


def is_glob(key: str) -> bool:
    return any(ch in _WILDCARDS for ch in key)


def resolve_keys(keys: Iterable[str], paths: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Map each path to the most specific key matching it.

    Returns ``(path -> key, keys that matched no path)``.
    """
    keys = list(keys)
    chosen: dict[str, tuple[tuple[int, int, int], str]] = {}
    matched: set[str] = set()
    for path in paths:
        for order, key in enumerate(keys):
            if key == path:
                rank = (1, len(key), order)
            elif is_glob(key) and fnmatch.fnmatchcase(path, key):
                rank = (0, _literal_len(key), order)
            else:
                continue
            matched.add(key)
            if path not in chosen or rank > chosen[path][0]:
                chosen[path] = (rank, key)
    return {p: k for p, (_, k) in chosen.items()}, [k for k in keys if k not in matched]


def _tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in a model output: a tensor, or tuples/lists/dicts of them (ModelOutput)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _tensors(v)]
    return []


def output_layers(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> set[str]:
    """Paths of the layers whose outputs reach the model's outputs with no other Linear/Conv
    in between: every head of a multi-output model, the residual writers of an encoder that
    returns its hidden states. Read from the autograd graph of one forward pass."""
    made_by: dict[Any, str] = {}
    hooks = []

    def record(name: str):
        def hook(mod: nn.Module, inputs: Any, output: Any) -> None:
            for t in _tensors(output):
                if t.grad_fn is not None:
                    made_by[t.grad_fn] = name

        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, PRUNABLE_TYPES):
            hooks.append(mod.register_forward_hook(record(name)))
    frozen = [p for p in model.parameters() if not p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        for p in frozen:
            p.requires_grad_(True)  # a frozen model still needs an autograd graph to walk
        with torch.enable_grad():
            outputs = _tensors(model(*example_inputs))
    finally:
        for h in hooks:
            h.remove()
        for p in frozen:
            p.requires_grad_(False)
        model.train(was_training)
    found: set[str] = set()
    seen: set[Any] = set()
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        if fn in made_by:
            found.add(made_by[fn])
            continue
        stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return found


def list_layers(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...] | None = None
) -> list[LayerInfo]:
    """Every Linear/Conv layer and embedding table of ``model`` in module order, the output
    layer flagged."""
    outputs = output_layers(model, example_inputs) if example_inputs is not None else set()
    infos = []
    for name, mod in model.named_modules():
        if isinstance(mod, QUANTIZABLE_TYPES):
            infos.append(
                LayerInfo(
                    path=name,
                    type=type(mod).__name__,
                    shape=tuple(mod.weight.shape),
                    params=sum(p.numel() for p in mod.parameters(recurse=False)),
                    is_output=name in outputs,
                )
            )
    return infos


def per_layer(
    default: float | int,
    layers: Mapping[str, float | int],
    paths: Iterable[str],
    *,
    section: str,
) -> dict[str, float | int]:
    """Resolve a ``{"default": x, "layers": {key: y}}`` section to a value per path."""
    from autocompress.errors import PolicyError

    paths = list(paths)
    chosen, unmatched = resolve_keys(layers, paths)
    if unmatched:
        raise PolicyError(
            f"policy key {section}.layers[{unmatched[0]!r}] matches no {section}able layer; "
            f"layers are: {', '.join(paths[:12])}{' ...' if len(paths) > 12 else ''}"
        )
    return {p: layers[chosen[p]] if p in chosen else default for p in paths}
