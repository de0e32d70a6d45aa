"""Which modules of a model can be pruned and quantized, and how policy keys map onto them.

Layer keys in a policy are module paths (``features.0``) or fnmatch globs (``features.*``).
The most specific key wins: an exact path beats any glob; among globs the one with more
literal (non-wildcard) characters wins; ties go to the key written later.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

QUANTIZABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)

_WILDCARDS = set("*?[]")


@dataclass(frozen=True)
class LayerInfo:
    """One prunable / quantizable module of a model."""

    path: str
    type: str
    shape: tuple[int, ...]
    params: int
    is_output: bool


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


def output_layers(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> set[str]:
    """Paths of the layers that produce the model's output: the last Linear/Conv executed."""
    order: list[str] = []
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, PRUNABLE_TYPES):
            hooks.append(mod.register_forward_hook(lambda m, i, o, n=name: order.append(n)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {order[-1]} if order else set()


def list_layers(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...] | None = None
) -> list[LayerInfo]:
    """Every Linear/Conv layer of ``model`` in module order, the output layer flagged."""
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
    from .errors import PolicyError

    paths = list(paths)
    chosen, unmatched = resolve_keys(layers, paths)
    if unmatched:
        raise PolicyError(
            f"policy key {section}.layers[{unmatched[0]!r}] matches no {section}able layer; "
            f"layers are: {', '.join(paths[:12])}{' ...' if len(paths) > 12 else ''}"
        )
    return {p: layers[chosen[p]] if p in chosen else default for p in paths}
