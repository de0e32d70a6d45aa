"""The sampler contract, over every registered sampler: it builds with and without options, a real
Optuna study of a few trials completes with it on the local backend, and the config naming it
round-trips. Unknown samplers and options are one line naming the key."""

from __future__ import annotations

import inspect

import optuna
import pytest
from _support.toy_registries import TOY_SAMPLER, toy_sampler
from conftest import local_config

from autocompress.api import run_search
from autocompress.errors import ConfigError
from autocompress.study.config import SearchConfig
from autocompress.study.samplers import SAMPLERS, SCHEDULERS, build_sampler, options_of

NAMES = sorted({*SAMPLERS, TOY_SAMPLER})  # the built-ins and a plug-in registered from a test


@pytest.fixture(scope="module", autouse=True)
def _toy_registered():
    with toy_sampler():
        yield


def test_the_toy_sampler_is_covered():
    assert TOY_SAMPLER in NAMES and TOY_SAMPLER in SAMPLERS


def _options(name: str) -> dict:
    """Each option of the factory set to its default (a value the factory must accept)."""
    params = inspect.signature(SAMPLERS[name]).parameters
    return {k: params[k].default for k in options_of(SAMPLERS[name])}


@pytest.mark.parametrize("name", NAMES)
def test_sampler_builds_with_and_without_options(name):
    plain = build_sampler(name, seed=0, startup=3)
    assert isinstance(plain, optuna.samplers.BaseSampler)
    spelled = build_sampler({"name": name, **_options(name)}, seed=0, startup=3)
    assert type(spelled) is type(plain)


@pytest.mark.parametrize("name", NAMES)
def test_sampler_runs_a_local_search_and_its_config_round_trips(name, tmp_path):
    sampler = {"name": name, **_options(name)} if _options(name) else name
    config = local_config(
        tmp_path / "run", sampler=sampler, trials=2, epochs=0, starts=["identity"]
    )
    again = SearchConfig.from_dict(config.to_dict())
    assert again == config and again.sampler == sampler
    result = run_search(config)
    assert [r["number"] for r in result.trials] == [0, 1]
    assert all(r["state"] in ("complete", "infeasible") for r in result.trials)


def test_nsga2_population_is_an_option():
    sampler = build_sampler({"name": "nsga2", "population_size": 16}, seed=0, startup=10)
    assert sampler._population_size == 16
    assert build_sampler("nsga2", seed=0, startup=10)._population_size == 8  # as before


def test_unknown_sampler_option_is_one_line_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"sampler\.population_sizee.*population_size") as e:
        local_config(tmp_path, sampler={"name": "nsga2", "population_sizee": 16})
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="sampler.*'grid'.*tpe"):
        local_config(tmp_path, sampler={"name": "grid"})
    with pytest.raises(ConfigError, match=r"sampler\.name"):
        local_config(tmp_path, sampler={"population_size": 16})
    with pytest.raises(ConfigError, match=r"sampler\.population_size='many'"):
        build_sampler({"name": "nsga2", "population_size": "many"}, seed=0, startup=1)


def test_schedulers_are_a_registry_the_config_checks(tmp_path):
    assert {"auto", "asha", "none"} <= set(SCHEDULERS)
    cfg = SearchConfig.from_dict({"name": "x", "task": "t.py:f", "scheduler": "asha"})
    assert cfg.scheduler == "asha"
    with pytest.raises(ConfigError, match="scheduler.*'hyperband'.*asha"):
        SearchConfig.from_dict({"name": "x", "task": "t.py:f", "scheduler": "hyperband"})
