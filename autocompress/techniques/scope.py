"""Strategy scopes: which layers quantize their activations, which parameters fine-tuning
trains, and which layers feature distillation matches when the task names none.

Quantization scope per layer (``quant.scope``): ``weight`` or ``weight+activation``. A target
lists the scopes it runs in ``quant_scopes`` (scope -> what it means there); a policy asking a
target for a scope it does not offer is a :class:`PolicyError`.

Fine-tuning scope (``finetune.scope``), a registry of module selectors:

- ``full``: every parameter;
- ``pruned-only``: the layers the policy changed (pruned or fed by a pruned layer, quantized,
  sparsified), plus their normalization layers: "structure" fine-tuning;
- ``head``: the output layers (the last layer(s));
- ``norm-and-head``: every normalization layer plus the head (parameter-efficient).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from autocompress.errors import PolicyError
from autocompress.policy import FINETUNE_SCOPES, QUANT_SCOPES, Policy, QuantScope

_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd)
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)

FINETUNE_MEANING = {
    "full": "every parameter trains",
    "pruned-only": "only the layers the policy changed (pruned, quantized, sparsified) train",
    "head": "only the output layer(s) train",
    "norm-and-head": "normalization layers plus the output layer(s) train",
}
FEATURE_MEANING = "weight of the MSE on stage outputs added to L_KD (0: logits only)"


# -- quantization scope ----------------------------------------------------------------------


def resolve_quant_scopes(
    policy: Policy, paths: Iterable[str], target: Any
) -> tuple[dict[str, str], set[str]]:
    """Per layer, the scope asked for (the target's default where the policy sets none), and
    the layers whose scope the policy set explicitly. Errors name the policy key."""
    offered: Mapping[str, str] = target.quant_scopes
    default: str = target.default_scope
    name = target.name
    paths = list(paths)
    for key in policy.quant_scope_layers:
        if key not in paths:
            raise PolicyError(
                f"policy key quant.scope.layers[{key!r}]: no such layer; layers: "
                f"{', '.join(paths[:12])}"
            )
    asked = {"quant.scope.default": policy.quant_scope_default} | {
        f"quant.scope.layers[{k!r}]": v for k, v in policy.quant_scope_layers.items()
    }
    for key, scope in asked.items():
        if scope is not None and scope not in offered:
            raise PolicyError(
                f"policy key {key} = {scope!r}: target {name!r} does not run it "
                f"(offers: {', '.join(offered)}); use one of those or another target"
            )
    explicit = set(policy.quant_scope_layers)
    if policy.quant_scope_default is not None:
        explicit = set(paths)
    scopes = {
        p: policy.quant_scope_layers.get(p, policy.quant_scope_default or default) for p in paths
    }
    return scopes, explicit


def with_activations(scopes: Mapping[str, str] | None, layers: Iterable[str]) -> list[str]:
    """The ``layers`` whose scope quantizes activations (all of them when ``scopes`` is None)."""
    if scopes is None:
        return list(layers)
    return [
        p
        for p in layers
        if scopes.get(p, QuantScope.WEIGHT_ACTIVATION) == QuantScope.WEIGHT_ACTIVATION
    ]


# -- fine-tuning scope -----------------------------------------------------------------------

Selector = Callable[[nn.Module, Collection[str], Collection[str]], set[str]]


def _norms(model: nn.Module) -> set[str]:
    return {p for p, m in model.named_modules() if isinstance(m, NORMS)}


def _norms_after(model: nn.Module, layers: Collection[str]) -> set[str]:
    """BatchNorms that directly follow a changed conv (they fold into it on export)."""
    from autocompress.techniques.fold import foldable_pairs

    return {bn for bn, conv in foldable_pairs(model).items() if conv in layers}


FINETUNE_SELECTORS: dict[str, Selector] = {
    "full": lambda model, changed, head: {p for p, _ in model.named_modules()},
    "pruned-only": lambda model, changed, head: set(changed) | _norms_after(model, changed),
    "head": lambda model, changed, head: set(head),
    "norm-and-head": lambda model, changed, head: _norms(model) | set(head),
}
assert set(FINETUNE_SELECTORS) == set(FINETUNE_SCOPES) == set(FINETUNE_MEANING)


def trainable_modules(
    model: nn.Module, scope: str, *, changed: Collection[str], head: Collection[str]
) -> set[str]:
    """Module paths whose own parameters train under ``scope``."""
    return FINETUNE_SELECTORS[scope](model, changed, head)


def select_parameters(model: nn.Module, modules: Collection[str]) -> list[nn.Parameter]:
    """The parameters directly owned by ``modules`` (parametrized weights: their originals)."""
    wanted = set(modules)
    out: list[nn.Parameter] = []
    for path, mod in model.named_modules():
        owner = path.removesuffix(".parametrizations.weight")
        if owner in wanted or path in wanted:
            out += [p for p in mod.parameters(recurse=False)]
    return list({id(p): p for p in out}.values())


def trained_count(params: Sequence[torch.Tensor]) -> int:
    """Parameters fine-tuning updates, counted on the student as it trains: before BatchNorm
    folding, so the scale and shift of a BatchNorm that trains count, and are later folded into
    its conv's weight and bias."""
    return sum(p.numel() for p in params)


def changed_layers(
    structure: Mapping[str, object], bits: Mapping[str, int], sparse: Collection[str]
) -> set[str]:
    """Layers the policy changed: pruned structure, quantized, or sparsified."""
    return set(structure) | {p for p, b in bits.items() if b < 32} | set(sparse)


# -- feature distillation ------------------------------------------------------------------


def auto_feature_layers(model: nn.Module, example_inputs: tuple, head: Collection[str]) -> tuple:
    """Each top-level stage's output, in call order: the top-level children (descending through
    a lone wrapper) that hold a Conv or Linear, return a tensor, and do not contain the head."""
    root, prefix = model, ""
    while len(children := list(root.named_children())) == 1:
        name, root = children[0]
        prefix = f"{prefix}{name}."
    order: list[str] = []
    hooks = []
    for name, child in root.named_children():
        path = prefix + name
        has_params = any(isinstance(m, _WEIGHTED) for m in child.modules())
        holds_head = any(h == path or h.startswith(path + ".") for h in head)
        if has_params and not holds_head:
            hooks.append(
                child.register_forward_hook(
                    lambda m, i, o, p=path: (
                        order.append(p)
                        if isinstance(o, torch.Tensor) and o.dim() >= 2 and p not in order
                        else None
                    )
                )
            )
    try:
        with torch.inference_mode():
            model.eval()
            model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return tuple(order)


__all__ = [
    "FINETUNE_SELECTORS",
    "QUANT_SCOPES",
    "QuantScope",
    "auto_feature_layers",
    "changed_layers",
    "resolve_quant_scopes",
    "select_parameters",
    "trainable_modules",
]


class Freeze:
    """Stop gradients for every parameter not in ``trained``; norm layers outside
    ``modules`` keep their running statistics (``fix_norms`` after each ``train()``).
    Calling the object restores ``requires_grad``."""

    def __init__(
        self, model: nn.Module, trained: Sequence[torch.Tensor], modules: Collection[str] | None
    ) -> None:
        keep = {id(p) for p in trained}
        self._was = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in self._was:
            p.requires_grad_(id(p) in keep)
        self._fixed = (
            []
            if modules is None
            else [
                m
                for path, m in model.named_modules()
                if isinstance(m, NORMS) and path not in modules
            ]
        )

    def fix_norms(self) -> None:
        for m in self._fixed:
            m.eval()

    def __call__(self) -> None:
        for p, flag in self._was:
            p.requires_grad_(flag)
