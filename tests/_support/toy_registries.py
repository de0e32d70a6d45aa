"""A toy metric and a toy sampler, registered from tests for as long as a test needs them
(``with toy_metric():``): picked up by their families' contract tests and used end to end by
``tests/study/test_toy_plugins.py`` (``docs/extending.md``). A registered metric is measured by
every compression, so neither is left registered for the rest of the suite."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import optuna

from autocompress.measure.metrics import METRICS, Metric, register
from autocompress.study.samplers import SAMPLERS, register_sampler

TOY_METRIC = "weight_count_k"
TOY_SAMPLER = "toy"


def _weights_k(ctx) -> float:
    """Parameters of the deployed module, in thousands."""
    return sum(p.numel() for p in ctx.deployed.parameters()) / 1000


@contextmanager
def toy_metric() -> Iterator[str]:
    """The metric ``weight_count_k`` (parameters of the deployed module / 1000, minimize)."""
    register(
        Metric(
            TOY_METRIC,
            "minimize",
            "k",
            "parameters of the deployed module / 1000",
            label="weights (k)",
            spec=".3f",
            measure=_weights_k,
        )
    )
    try:
        yield TOY_METRIC
    finally:
        METRICS.pop(TOY_METRIC)


class CountingSampler(optuna.samplers.RandomSampler):
    """Optuna's random sampler, counting the values it proposed."""

    calls = 0

    def sample_independent(self, study, trial, param_name, param_distribution):
        CountingSampler.calls += 1
        return super().sample_independent(study, trial, param_name, param_distribution)


def _toy_sampler(seed, startup, *, offset: int = 0):
    return CountingSampler(seed=None if seed is None else seed + offset)


@contextmanager
def toy_sampler() -> Iterator[str]:
    """The sampler ``toy`` (a counting random sampler taking one option, ``offset``)."""
    register_sampler(TOY_SAMPLER, _toy_sampler)
    CountingSampler.calls = 0
    try:
        yield TOY_SAMPLER
    finally:
        SAMPLERS.pop(TOY_SAMPLER)
