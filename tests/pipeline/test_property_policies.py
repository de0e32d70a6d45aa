"""Property tests (hypothesis) over random policies and random search-space files: valid ones
compress a tiny MLP (0 epochs), invalid ones are rejected with our error types, and none ends
in any other exception."""

from __future__ import annotations

import math
import warnings

import optuna
import pytest
from _support.models import mlp_task
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autocompress.errors import AutoCompressError
from autocompress.pipeline._compress import MeasureSettings, compress
from autocompress.policy import SUPPORTED_BITS, Policy
from autocompress.study.space import SearchSpace

pytestmark = pytest.mark.faults

TASK = mlp_task(epochs=1)
FAST = MeasureSettings(warmup=1, repeats=20)
PROFILE = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
RATIO = st.floats(0.0, 0.8, allow_nan=False)
PRUNE_KEYS = st.sampled_from(["net.0", "net.2", "net.*", "net.[02]"])
QUANT_KEYS = st.sampled_from(["net.0", "net.2", "net.4", "net.*"])


@st.composite
def valid_policies(draw) -> dict:
    return {
        "distill": {
            "alpha": draw(st.floats(0.0, 1.0)),
            "temperature": draw(st.floats(0.5, 10.0)),
        },
        "prune": {
            "default": draw(RATIO),
            "layers": draw(st.dictionaries(PRUNE_KEYS, RATIO, max_size=2)),
        },
        "quant": {
            "default": draw(st.sampled_from(SUPPORTED_BITS)),
            "layers": draw(st.dictionaries(QUANT_KEYS, st.sampled_from(SUPPORTED_BITS))),
        },
        "finetune": {"lambda": draw(st.floats(0.0, 0.1)), "epochs": 0, "lr": 1e-3},
    }


# each mutation makes a valid policy invalid in one place
MUTATIONS = {
    "prune ratio 1.0": lambda p: p["prune"].update(default=1.0),
    "negative prune ratio": lambda p: p["prune"].update(default=-0.1),
    "NaN prune ratio": lambda p: p["prune"].update(default=math.nan),
    "prune ratio as text": lambda p: p["prune"].update(default="0.3"),
    "5 bits": lambda p: p["quant"].update(default=5),
    "bits as text": lambda p: p["quant"].update(default="8"),
    "bits true": lambda p: p["quant"].update(default=True),
    "layer bits 7": lambda p: p["quant"]["layers"].update({"net.0": 7}),
    "glob matching no layer": lambda p: p["prune"]["layers"].update({"decoder.*": 0.2}),
    "unknown layer": lambda p: p["quant"]["layers"].update({"net.9": 8}),
    "pruning the output layer": lambda p: p["prune"]["layers"].update({"net.4": 0.5}),
    "alpha 2": lambda p: p["distill"].update(alpha=2.0),
    "temperature 0": lambda p: p["distill"].update(temperature=0.0),
    "negative epochs": lambda p: p["finetune"].update(epochs=-1),
    "epochs 1.5": lambda p: p["finetune"].update(epochs=1.5),
    "lr as text": lambda p: p["finetune"].update(lr="fast"),
    "negative lambda": lambda p: p["finetune"].update({"lambda": -1.0}),
    "unknown top key": lambda p: p.update(prunning={}),
    "unknown section key": lambda p: p["quant"].update(deafult=8),
    "section not a mapping": lambda p: p.update(distill=[0.5]),
}


def _compress(data: dict) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compress(TASK, Policy.from_dict(data), importance="magnitude", settings=FAST).metrics


@PROFILE
@given(valid_policies())
def test_valid_policies_compress(data):
    metrics = _compress(data)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["size_bytes"] > 0 and metrics["latency_ms"] > 0
    for path, layer in metrics["layers"].items():
        assert layer["bits"] in SUPPORTED_BITS, path


def _rejected(mutate, data: dict, run) -> None:
    """``data`` made invalid by ``mutate`` is refused by ``run`` with one of our errors."""
    mutate(data)
    with pytest.raises(AutoCompressError):
        run(data)


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@settings(max_examples=3, deadline=None, derandomize=True)
@given(data=valid_policies())
def test_invalid_policies_are_rejected_with_our_errors(mutation, data):
    _rejected(MUTATIONS[mutation], data, _compress)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["prune", "quant", "distill", "finetune", "default", "layers", "alpha"])
            | st.text(max_size=5),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(JSON)
def test_any_json_is_a_policy_or_our_error(data):
    try:
        policy = Policy.from_dict(data)
    except AutoCompressError:
        return
    assert Policy.from_dict(policy.to_dict()) == policy  # what was accepted round-trips


# -- search-space files ----------------------------------------------------------------------
@st.composite
def valid_spaces(draw) -> dict:
    low = draw(st.sampled_from([0.0, 0.1, 0.2]))
    rule = {
        "type": ["Linear"],
        "prune": {"low": low, "high": draw(st.sampled_from([0.3, 0.5, 0.7])), "step": 0.1},
        "bits": {
            "choices": draw(
                st.lists(st.sampled_from([4, 8, 16, 32]), min_size=1, max_size=3, unique=True)
            )
        },
    }
    space = {"rules": [rule], "finetune": {"epochs": 0}}
    if draw(st.booleans()):
        space["distill"] = {"alpha": [0.0, 1.0], "temperature": [1.0, 8.0]}
    if draw(st.booleans()):
        # a first rule takes its layers: a specific rule goes before the general one
        space["rules"].insert(0, {"match": "net.0", "prune": 0.0, "bits": {"choices": [8]}})
    return space


# each mutation makes a valid space invalid in one place; rules[-1] is the Linear rule (a
# specific rule may have been put before it, its prune a plain number)
SPACE_MUTATIONS = {
    "low above high": lambda s: s["rules"][-1]["prune"].update(low=0.9, high=0.2),
    "prune high 1.0": lambda s: s["rules"][-1]["prune"].update(high=1.0),
    "bits 5": lambda s: s["rules"][-1]["bits"].update(choices=[5, 8]),
    "empty choices": lambda s: s["rules"][-1]["bits"].update(choices=[]),
    "unknown rule key": lambda s: s["rules"][-1].update(prun=0.1),
    "unknown top key": lambda s: s.update(rulez=[]),
    "unknown type": lambda s: s["rules"].append({"type": ["Conv9d"], "prune": 0.1}),
    "glob matching no layer": lambda s: s["rules"].append({"match": "decoder.*", "prune": 0.1}),
    "rules not a list": lambda s: s.update(rules={"type": "Linear"}),
    "step as text": lambda s: s["rules"][-1]["prune"].update(step="small"),
    "alpha range upside down": lambda s: s.update(distill={"alpha": [1.0, 0.0]}),
}


def _resolve_and_compress(data: dict, seed: int) -> dict:
    space = SearchSpace.from_dict(data, source="space.yaml").resolve(
        TASK.model, TASK.example_inputs, supported_bits=SUPPORTED_BITS
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = space.suggest(study.ask())
    return _compress(policy.to_dict())


@settings(max_examples=8, deadline=None, derandomize=True)
@given(valid_spaces(), st.integers(0, 1000))
def test_valid_spaces_resolve_and_their_policies_compress(data, seed):
    metrics = _resolve_and_compress(data, seed)
    assert metrics["size_bytes"] > 0


@pytest.mark.parametrize("mutation", sorted(SPACE_MUTATIONS))
@settings(max_examples=2, deadline=None, derandomize=True)
@given(data=valid_spaces())
def test_invalid_spaces_are_rejected_with_our_errors(mutation, data):
    _rejected(SPACE_MUTATIONS[mutation], data, lambda space: _resolve_and_compress(space, 0))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(JSON)
def test_any_data_is_a_space_or_our_error(data):
    try:
        space = SearchSpace.from_dict(data, source="space.yaml")
        space.resolve(TASK.model, TASK.example_inputs, supported_bits=SUPPORTED_BITS)
    except AutoCompressError:
        return
