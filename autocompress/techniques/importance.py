"""Importance criteria: how much each weight matters, one registry for every pruning granularity.

A criterion scores a weight tensor element by element: ``criterion(weight, grad)`` returns
non-negative scores of ``weight``'s shape (``grad`` is the weight's gradient summed over a few
training batches, or ``None`` when the criterion does not declare ``needs_grad`` or the weight
got none). The techniques reduce these scores by summing: unit pruning over each output row
or input column of every member of a coupled group (``prune``), head pruning over each head's
q/k/v rows (``_heads``), weight pruning not at all (``sparsify``). So one criterion object
serves channels, neurons, heads and single weights alike.

Built-ins: ``taylor`` (first-order Taylor ``|w·g|``, ``|w|`` where no gradient reached the
weight; the default) and ``magnitude`` (``|w|``). A plug-in registers a name; a criterion
object (an ``Importance`` or any callable ``(weight, grad) -> scores``, with an optional
``needs_grad`` attribute, like a Torch-Pruning importance object) can be passed from Python
wherever a name is accepted (``compress(..., importance=obj)``):

>>> @register_importance("squared")
... def squared(weight, grad):
...     return weight.detach() ** 2
>>> get_importance("squared").needs_grad
False
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import torch

from autocompress.errors import ConfigError


class Importance:
    """The base type of a criterion: subclass it, set ``needs_grad``, implement ``__call__``.

    ``needs_grad = True``: the pruners collect gradients of the task loss before scoring and
    pass them as ``grad`` (``None`` for a weight no gradient reached)."""

    name: str = ""
    needs_grad: bool = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<importance {self.name or type(self).__name__}>"


class _Callable(Importance):
    """A plain function or a foreign criterion object, seen through the base type."""

    def __init__(self, fn: Callable[..., torch.Tensor], name: str, needs_grad: bool) -> None:
        self.fn, self.name, self.needs_grad = fn, name, needs_grad

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return self.fn(weight, grad)


class Taylor(Importance):
    """First-order Taylor ``|w·g|``; ``|w|`` for a weight without a gradient."""

    name, needs_grad = "taylor", True

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        w = weight.detach()
        return (w * grad).abs() if grad is not None else w.abs()


class Magnitude(Importance):
    """``|w|`` (gradients are not read)."""

    name = "magnitude"

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return weight.detach().abs()


_REGISTRY: dict[str, Importance] = {"taylor": Taylor(), "magnitude": Magnitude()}
_BUILT_IN = frozenset(_REGISTRY)
IMPORTANCES: Mapping[str, Importance] = MappingProxyType(_REGISTRY)  # name -> criterion

T = TypeVar("T")


def _as_importance(obj: Any, name: str) -> Importance:
    if isinstance(obj, Importance):
        return obj
    if isinstance(obj, type):
        return _as_importance(obj(), name)
    if not callable(obj):
        raise ConfigError(
            f"importance {obj!r}: must be a registered name ({', '.join(sorted(_REGISTRY))}) "
            "or a callable (weight, grad) -> scores"
        )
    label = name or getattr(obj, "name", "") or getattr(obj, "__name__", type(obj).__name__)
    return _Callable(obj, str(label), bool(getattr(obj, "needs_grad", False)))


def register_importance(name: str, criterion: Any = None, *, needs_grad: bool | None = None) -> Any:
    """Register ``criterion`` under ``name``; without ``criterion``, a decorator.

    ``criterion``: an ``Importance``, an ``Importance`` subclass (instantiated without
    arguments) or a callable ``(weight, grad) -> scores``; ``needs_grad`` overrides what it
    declares. Registering a plug-in name again replaces it; built-in names are refused."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"importance name {name!r}: must be a non-empty string")
    if name in _BUILT_IN:
        raise ConfigError(
            f"importance {name!r} is built in; register the criterion under a new name"
        )

    def register(obj: T) -> T:
        crit = _as_importance(obj, name)
        if needs_grad is not None:
            crit = _Callable(crit, name, needs_grad)
        crit.name = crit.name or name
        _REGISTRY[name] = crit
        return obj

    return register if criterion is None else register(criterion)


def unregister_importance(name: str) -> None:
    """Remove a plug-in criterion (built-ins stay)."""
    if name in _BUILT_IN:
        raise ConfigError(f"importance {name!r} is built in and cannot be removed")
    _REGISTRY.pop(name, None)


def get_importance(importance: str | Any) -> Importance:
    """The criterion for a registered name, or ``importance`` itself seen as a criterion.

    An unknown name is one line naming it and the known names."""
    if isinstance(importance, str):
        if importance not in _REGISTRY:
            raise ConfigError(
                f"unknown pruning importance {importance!r}; choose from "
                f"{', '.join(sorted(_REGISTRY))}"
            )
        return _REGISTRY[importance]
    return _as_importance(importance, "")


def check_importance(importance: str | Any) -> str | Any:
    """``importance`` unchanged when it names a registered criterion or is one (else one
    line: the name and the known names)."""
    get_importance(importance)
    return importance


def importance_name(importance: str | Any) -> str:
    """How records and messages name a criterion: its registered or declared name."""
    return importance if isinstance(importance, str) else get_importance(importance).name


__all__ = [
    "IMPORTANCES",
    "Importance",
    "Magnitude",
    "Taylor",
    "check_importance",
    "get_importance",
    "importance_name",
    "register_importance",
    "unregister_importance",
]
