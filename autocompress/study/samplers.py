"""The sampler and scheduler registries: which Optuna sampler proposes policies, and which Ray
Tune scheduler stops trials early, by name.

A config names a sampler as ``sampler: tpe`` or with options, ``sampler: {name: nsga2,
population_size: 16}``; the options are the factory's keyword-only parameters, checked here
(one line naming ``sampler.<option>``). A sampler factory is called as ``factory(seed, startup,
**options)`` (``startup``: the trials a model-based sampler takes before modelling the front:
the measured start when there is one) and imports Optuna only when called; a scheduler factory
as ``factory(epochs, metric=..., time_attr=...)`` and imports Ray only when called. Adding one
is ``register_sampler(name, factory)`` / ``register_scheduler(name, factory)``.

A scheduler registered with ``ladder=True`` is not a Tune scheduler but a successive-halving
ladder (:class:`autocompress.study.halving.HalvingSpec`) that the session drives on every
backend: ``scheduler: halving`` or ``{name: halving, rungs: [0, 1, full], eta: 3}``; its options
are the factory's keyword-only parameters besides ``metric`` and ``time_attr``.

>>> sorted(SAMPLERS)
['nsga2', 'random', 'tpe']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from autocompress.study.halving import DEFAULT_ETA, DEFAULT_RUNGS, HalvingSpec

__all__ = [
    "SAMPLERS",
    "SCHEDULERS",
    "build_sampler",
    "halving_spec",
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
LADDERS: set[str] = set()  # schedulers the session drives itself, on every backend


def register_sampler(name: str, factory: SamplerFactory) -> SamplerFactory:
    """Make ``sampler: name`` build ``factory(seed, startup, **options)``."""
    SAMPLERS[name] = factory
    return factory


def register_scheduler(
    name: str, factory: SchedulerFactory, *, ladder: bool = False
) -> SchedulerFactory:
    """Make ``scheduler: name`` (ray backend) build ``factory(epochs, metric=, time_attr=)``;
    ``ladder=True``: the factory returns a halving ladder's spec, run on every backend."""
    SCHEDULERS[name] = factory
    (LADDERS.add if ladder else LADDERS.discard)(name)
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


def _halving(
    epochs: int | None = None,
    *,
    metric: str = "accuracy",
    time_attr: str = "epoch",
    rungs: Any = DEFAULT_RUNGS,
    eta: Any = DEFAULT_ETA,
) -> HalvingSpec:
    """Successive halving over fine-tuning epochs, promoting by non-dominated rank."""
    return HalvingSpec(rungs=rungs, eta=eta)


register_scheduler("halving", _halving, ladder=True)  # local and ray


_TUNE_ARGS = ("metric", "time_attr")


def scheduler_problem(value: Any) -> str | None:
    """What is wrong with a config's ``scheduler`` value, or None."""
    name, options = _split(value)
    if isinstance(value, Mapping) and "name" not in value:
        return f"needs scheduler.name, one of {', '.join(SCHEDULERS)}"
    if not isinstance(name, str) or name not in SCHEDULERS:
        return f"is not one of {', '.join(SCHEDULERS)}"
    known = [o for o in options_of(SCHEDULERS[name]) if o not in _TUNE_ARGS]
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = ", ".join(known) or "no options"
        return f"has unknown option scheduler.{unknown[0]}; {name} takes {takes}"
    if name in LADDERS:
        from autocompress.errors import ConfigError

        try:
            SCHEDULERS[name](None, metric="accuracy", time_attr="epoch", **options)
        except (ConfigError, TypeError, ValueError) as exc:
            return f"has a bad option: {exc}"
    return None


def scheduler_name(value: Any) -> str:
    """The scheduler's name, whichever way the config wrote it."""
    return str(_split(value)[0])


def halving_spec(value: Any) -> Any:
    """The ladder a config's ``scheduler`` names (a ``HalvingSpec``), or None for a Ray Tune
    scheduler (``auto``, ``asha``, ``none``)."""
    name, options = _split(value)
    if name not in LADDERS:
        return None
    return SCHEDULERS[name](None, metric="accuracy", time_attr="epoch", **options)


def make_ray_scheduler(value: Any, epochs: int, *, metric: str, time_attr: str) -> Any:
    """The Tune scheduler of a config's ``scheduler`` (None for a ladder: Tune runs FIFO and the
    session's ladder decides)."""
    name, options = _split(value)
    if name in LADDERS:
        return None
    return SCHEDULERS[name](epochs, metric=metric, time_attr=time_attr, **options)
