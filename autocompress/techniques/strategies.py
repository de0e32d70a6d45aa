"""The pruning strategies, one table: what each asks of a policy, how it is applied and recorded.

A policy prunes with up to three strategies, applied in the table's order (see ``policy``):
``structure`` (whole blocks dropped, ``drop``), ``unit`` (channels, neurons and heads removed,
``prune``) and ``weight`` (single weights zeroed, ``sparsify``). Each ``PruningStrategy`` gives

- ``resolve(task, policy, resolved)``: its request, per layer or block, from the policy
  (``resolved``: the policy resolved against the model, ``pipeline.resolve_policy``);
- ``apply(model, request, run)``: the change, in place, on the student; returns what its
  ``record`` (and later stages) need;
- ``record(metrics, run, request, result)``: its entries in ``metrics.json``;
- ``space_prefix`` and ``neutral``: the prefix of its search-space parameters and the value
  that leaves the model as it is (what the uniform baselines give it);
- ``example(task)``: a policy (as a dict) that uses the strategy on the task's model, and
  ``metric_keys`` / ``layer_keys``: what its records hold (top level / changed layers); the
  contract test (``tests/techniques/test_strategy_contract.py``) runs every registered
  strategy on real models with them.

``compress`` loops over ``STRATEGIES``; the search space and ``inspect`` read the prefixes
from it. A new strategy is one module (its technique) plus one ``register_strategy`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from autocompress.errors import ConfigError
from autocompress.policy import Policy
from autocompress.task import Task
from autocompress.techniques.drop import drop_blocks_, find_blocks, live, resolve_blocks
from autocompress.techniques.importance import Importance
from autocompress.techniques.prune import prune_, prune_records
from autocompress.techniques.sparsify import resolve_sparsity, sparsify_, summary


@dataclass(frozen=True)
class StrategyRun:
    """What every strategy of one ``compress`` call sees."""

    task: Task  # the task (its model: the teacher) on the training device
    student: nn.Module  # changed in place
    importance: str | Importance = "taylor"
    protected: tuple[str, ...] = ()  # the output layers (paths in the teacher)


@dataclass(frozen=True)
class PruningStrategy:
    """One pruning strategy: its request, its change to the student and its records."""

    name: str
    space_prefix: str  # its search-space parameters: "<prefix><group or block>"
    neutral: float | str  # the parameter value that changes nothing
    resolve: Callable[[Task, Policy, Any], Mapping[str, Any]]
    apply: Callable[[nn.Module, Mapping[str, Any], StrategyRun], Any]
    record: Callable[[dict[str, Any], StrategyRun, Mapping[str, Any], Any], None]
    example: Callable[[Task], dict[str, Any]]
    metric_keys: tuple[str, ...] = ()
    layer_keys: tuple[str, ...] = ()


STRATEGIES: dict[str, PruningStrategy] = {}  # name -> strategy, in the order they apply


def register_strategy(strategy: PruningStrategy) -> PruningStrategy:
    """Add ``strategy`` after the registered ones (a name registered again is replaced in place)."""
    taken = {s.space_prefix: s.name for s in STRATEGIES.values() if s.name != strategy.name}
    if strategy.space_prefix in taken:
        raise ConfigError(
            f"pruning strategy {strategy.name!r}: space prefix {strategy.space_prefix!r} is "
            f"taken by {taken[strategy.space_prefix]!r}"
        )
    STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> PruningStrategy:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown pruning strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def strategy_of_param(param: str) -> PruningStrategy | None:
    """The strategy a search-space parameter (``prune.fc1``, ``drop.layers.0``) belongs to."""
    return next((s for s in STRATEGIES.values() if param.startswith(s.space_prefix)), None)


def apply_strategies(run: StrategyRun, requests: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Every strategy applied to ``run.student`` in the table's order; name -> its result."""
    return {
        s.name: s.apply(run.student, requests.get(s.name, {}), run) for s in STRATEGIES.values()
    }


def record_strategies(
    metrics: dict[str, Any],
    run: StrategyRun,
    requests: Mapping[str, Mapping[str, Any]],
    results: Mapping[str, Any],
) -> None:
    for s in STRATEGIES.values():
        s.record(metrics, run, requests.get(s.name, {}), results.get(s.name))


# -- the built-ins: structure, unit, weight --------------------------------------------------


def _resolve_structure(task: Task, policy: Policy, resolved: Any) -> dict[str, str]:
    blocks = find_blocks(task.model, task.example_inputs) if policy.drop_blocks else {}
    return resolve_blocks(policy.drop_blocks, blocks)


def _record_structure(metrics: dict, run: StrategyRun, request: Mapping, result: Any) -> None:
    if request:
        metrics["dropped_blocks"] = list(request)


def _apply_unit(model: nn.Module, request: Mapping[str, float], run: StrategyRun) -> Any:
    return prune_(
        model,
        run.task,
        live(request, model),
        importance=run.importance,
        protected=tuple(live(dict.fromkeys(run.protected), model)),
    )


def _record_unit(metrics: dict, run: StrategyRun, request: Mapping, result: Any) -> None:
    pruned = prune_records(run.task.model, run.student, request, result)
    layers = metrics["layers"]
    for path, rec in layers.items():
        layers[path] = {**pruned.get(path, {}), **rec}


def _apply_weight(model: nn.Module, request: Mapping[str, float], run: StrategyRun) -> Any:
    return sparsify_(model, run.task, live(request, model), importance=run.importance)


def _record_weight(metrics: dict, run: StrategyRun, request: Mapping, result: Any) -> None:
    metrics.update(summary(metrics["layers"], run.student, live(request, run.student)))


register_strategy(
    PruningStrategy(
        name="structure",
        space_prefix="drop.",
        neutral="keep",
        resolve=_resolve_structure,
        apply=lambda model, request, run: drop_blocks_(model, request),
        record=_record_structure,
        example=lambda task: {
            "drop": {"blocks": list(find_blocks(task.model, task.example_inputs))[:1]}
        },
        metric_keys=("dropped_blocks",),
    )
)
register_strategy(
    PruningStrategy(
        name="unit",
        space_prefix="prune.",
        neutral=0.0,
        resolve=lambda task, policy, resolved: resolved.prune,
        apply=_apply_unit,
        record=_record_unit,
        example=lambda task: {"prune": {"default": 0.5}},
        layer_keys=("prune_requested", "prune_group", "prune", "channels_kept"),
    )
)
register_strategy(
    PruningStrategy(
        name="weight",
        space_prefix="sparsity.",
        neutral=0.0,
        resolve=lambda task, policy, resolved: resolve_sparsity(task.model, policy),
        apply=_apply_weight,
        record=_record_weight,
        example=lambda task: {"prune": {"sparsity": {"default": 0.5}}},
        metric_keys=("sparsity", "sparsity_achieved"),
    )
)

__all__ = [
    "STRATEGIES",
    "PruningStrategy",
    "StrategyRun",
    "apply_strategies",
    "get_strategy",
    "record_strategies",
    "register_strategy",
    "strategy_of_param",
]
