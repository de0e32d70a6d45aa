"""The sampler and scheduler registries: which Optuna sampler proposes policies, and which Ray
Tune scheduler stops trials early, by name.

A config names a sampler as ``sampler: tpe`` or with options, ``sampler: {name: nsga2,
population_size: 16}``; the options are the factory's keyword-only parameters, checked here
(one line naming ``sampler.<option>``). A sampler factory is called as ``factory(seed, startup,
**options)`` (``startup``: the trials a model-based sampler takes before modelling the front:
the measured start when there is one) and imports Optuna only when called; a scheduler factory
as ``factory(epochs, metric=..., time_attr=...)`` and imports Ray only when called. Adding one
is ``register_sampler(name, factory)`` / ``register_scheduler(name, factory)``.

>>> sorted(SAMPLERS)
['nsga2', 'random', 'tpe']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "SAMPLERS",
    "SCHEDULERS",
    "build_sampler",
    "make_ray_scheduler",
    "register_sampler",
    "register_scheduler",
    "sampler_name",
    "sampler_problem",
    "scheduler_problem",
]

SamplerFactory = Callable[..., Any]  # (seed, startup, **options) -> optuna BaseSampler
SchedulerFactory = Callable[..., Any]  # (epochs, *, metric, time_attr) -> Tune scheduler

SAMPLERS: dict[str, SamplerFactory] = {}
SCHEDULERS: dict[str, SchedulerFactory] = {}


def register_sampler(name: str, factory: SamplerFactory) -> SamplerFactory:
    """Make ``sampler: name`` build ``factory(seed, startup, **options)``."""
    SAMPLERS[name] = factory
    return factory


def register_scheduler(name: str, factory: SchedulerFactory) -> SchedulerFactory:
    """Make ``scheduler: name`` (ray backend) build ``factory(epochs, metric=, time_attr=)``."""
    SCHEDULERS[name] = factory
    return factory


# -- built-in samplers (names and behaviour as before the registry) ---------------------------


def _tpe(
    seed: int | None, startup: int = 10, *, multivariate: bool = True, constant_liar: bool = False
) -> Any:
    import optuna

    return optuna.samplers.TPESampler(
        multivariate=multivariate, seed=seed, n_startup_trials=startup, constant_liar=constant_liar
    )


def _nsga2(
    seed: int | None,
    startup: int | None = None,
    *,
    population_size: int = 8,
    mutation_prob: float | None = None,
    crossover_prob: float = 0.9,
) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(
        seed=seed,
        population_size=population_size,
        mutation_prob=mutation_prob,
        crossover_prob=crossover_prob,
    )


def _random(seed: int | None, startup: int | None = None) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


register_sampler("tpe", _tpe)
register_sampler("nsga2", _nsga2)
register_sampler("random", _random)


def _split(value: Any) -> tuple[Any, dict[str, Any]]:
    """(name, options) of ``tpe`` or ``{name: tpe, ...}``."""
    if isinstance(value, Mapping):
        return value.get("name"), {k: v for k, v in value.items() if k != "name"}
    return value, {}


def sampler_name(value: Any) -> str:
    """The sampler's name, whichever way the config wrote it."""
    return str(_split(value)[0])


def options_of(factory: Callable[..., Any]) -> tuple[str, ...]:
    """The options a factory takes: its keyword-only parameters."""
    params = inspect.signature(factory).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def sampler_problem(value: Any) -> str | None:
    """What is wrong with a config's ``sampler`` value, or None."""
    if isinstance(value, Mapping) and not all(isinstance(k, str) for k in value):
        return "must be a sampler name or a mapping {name: ..., <option>: ...}"
    name, options = _split(value)
    if isinstance(value, Mapping) and "name" not in value:
        return f"needs sampler.name, one of {', '.join(SAMPLERS)}"
    if not isinstance(name, str) or name not in SAMPLERS:
        return f"is not one of {', '.join(SAMPLERS)}"
    known = options_of(SAMPLERS[name])
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = ", ".join(known) or "no options"
        return f"has unknown option sampler.{unknown[0]}; {name} takes {takes}"
    return None


def build_sampler(value: Any, *, seed: int | None, startup: int) -> Any:
    """The Optuna sampler a config's ``sampler`` names; a value its factory refuses is one line
    naming the sampler's options."""
    from autocompress.errors import ConfigError

    problem = sampler_problem(value)
    if problem:
        raise ConfigError(f"sampler: {value!r} {problem}")
    name, options = _split(value)
    try:
        return SAMPLERS[name](seed, startup, **options)
    except (TypeError, ValueError) as exc:
        shown = ", ".join(f"sampler.{k}={v!r}" for k, v in options.items())
        raise ConfigError(f"sampler {name}: {shown or 'no options'}: {exc}") from None


# -- built-in schedulers (ray backend) --------------------------------------------------------


def _ray(kind: str) -> SchedulerFactory:
    """A built-in Ray Tune scheduler, built by the ray backend (the one module importing Ray)."""

    def factory(epochs: int, *, metric: str, time_attr: str) -> Any:
        from autocompress.study.backends.ray._schedulers import builtin_scheduler

        return builtin_scheduler(kind, epochs, metric=metric, time_attr=time_attr)

    return factory


register_scheduler("auto", _ray("auto"))  # ASHA when trials report >= 2 epochs, else FIFO
register_scheduler("asha", _ray("asha"))
register_scheduler("none", _ray("none"))  # FIFO: no early stopping


def scheduler_problem(value: Any) -> str | None:
    return None if value in SCHEDULERS else f"is not one of {', '.join(SCHEDULERS)}"


def make_ray_scheduler(name: str, epochs: int, *, metric: str, time_attr: str) -> Any:
    return SCHEDULERS[name](epochs, metric=metric, time_attr=time_attr)
