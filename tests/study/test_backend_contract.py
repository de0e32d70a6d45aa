"""The backend registry: every registered backend loads and runs a search through the same
session loop, and each backend validates its own keys (another backend's key is one line)."""

from __future__ import annotations

import pytest

from autocompress.errors import ConfigError
from autocompress.study.backends import (
    BACKENDS,
    Backend,
    foreign_keys,
    get_backend,
    register_backend,
)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_has_a_run_entry_point(name):
    backend = get_backend(name)
    assert backend.name == name
    assert callable(backend.load().run)


# (backend, another backend owning a key, that key): every backend against every other's keys
FOREIGN = [
    (name, other.name, key)
    for name in sorted(BACKENDS)
    for other in BACKENDS.values()
    if other.name != name
    for key in other.keys
]
VALUES = {"address": "auto", "max_concurrent": 2, "resources_per_trial": {"cpu": 1}}


def test_some_backend_owns_keys():
    assert FOREIGN, "no backend owns a key: the foreign-key check below checks nothing"


@pytest.mark.parametrize(("name", "owner", "key"), FOREIGN)
def test_another_backends_key_is_refused_in_one_line(name, owner, key, make_config):
    with pytest.raises(ConfigError) as err:
        make_config(backend=name, **{key: VALUES[key]})
    text = str(err.value)
    assert "\n" not in text and f"{key}: only the {owner} backend reads it" in text


def test_an_unknown_backend_names_the_registered_ones(make_config):
    with pytest.raises(ConfigError, match="backend: 'slurm'.*is not one of local, ray"):
        make_config(backend="slurm")
    with pytest.raises(ConfigError, match="choose from local, ray"):
        get_backend("slurm")


def test_a_registered_backend_runs_a_search_and_owns_its_keys(make_config, tmp_path):
    """A toy backend (the local loop under another name, owning no key) is accepted by the
    config, runs a real 2-trial search, and the ray backend's keys are refused on it."""
    from autocompress import api

    register_backend(Backend("toy", "autocompress.study.backends.local"))
    try:
        config = make_config(backend="toy", trials=2)
        result = api.run_search(config)
        assert [r["number"] for r in result.trials] == [0, 1]
        assert all(r["state"] in ("complete", "infeasible") for r in result.trials)
        assert foreign_keys("toy", {"address": "auto"}) == [("address", "ray")]
        with pytest.raises(ConfigError, match="only the ray backend reads it"):
            make_config(backend="toy", address="auto")
    finally:
        BACKENDS.pop("toy")
