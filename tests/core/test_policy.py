from __future__ import annotations

import json

import pytest
from _support.models import cnn_task

from autocompress import Policy, load_policy
from autocompress.errors import PolicyError
from autocompress.pipeline._compress import resolve_policy
from autocompress.targets import get_target

EXAMPLE = {
    "distill": {"alpha": 0.5, "temperature": 4.0},
    "prune": {"default": 0.0, "layers": {"layer1.*": 0.5}},
    "quant": {"default": 32, "layers": {"fc": 8}},
    "finetune": {"lambda": 0.0001, "epochs": 1, "lr": 0.001},
}


@pytest.fixture(scope="module")
def task():
    return cnn_task(epochs=0)


def test_json_round_trip_is_lossless():
    policy = Policy.from_dict(EXAMPLE)
    assert policy.to_dict() == EXAMPLE
    assert Policy.from_json(policy.to_json()) == policy
    assert json.loads(policy.to_json()) == EXAMPLE


def test_finetune_steps_round_trip_only_when_set():
    """``finetune.steps`` (the distillation proxy's step limit) is written only when set, so
    a policy written before it reads and writes back unchanged."""
    data = {**EXAMPLE, "finetune": {**EXAMPLE["finetune"], "steps": 40}}
    policy = Policy.from_dict(data)
    assert policy.finetune.steps == 40
    assert policy.to_dict() == data
    assert Policy.from_json(policy.to_json()) == policy
    assert Policy.from_dict(EXAMPLE).finetune.steps is None
    assert "steps" not in Policy.from_dict(EXAMPLE).to_dict()["finetune"]


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"distil": {}}, "distil"),
        ({"prune": {"default": 0.1, "ratio": 0.2}}, "prune.ratio"),
        ({"finetune": {"lamda": 0.1}}, "finetune.lamda"),
        ({"prune": {"default": 1.0}}, "prune.default"),
        ({"prune": {"default": -0.1}}, "prune.default"),
        ({"prune": {"layers": {"fc": 1.5}}}, "prune.layers['fc']"),
        ({"prune": {"layers": 5}}, "prune.layers must be an object"),
        ({"quant": {"layers": ["fc"]}}, "quant.layers must be an object"),
        ({"quant": {"default": 5}}, "quant.default"),
        ({"quant": {"layers": {"stem": 12}}}, "quant.layers['stem']"),
        ({"distill": {"alpha": 2}}, "distill.alpha"),
        ({"finetune": {"epochs": -1}}, "finetune.epochs"),
        ({"finetune": {"steps": 0}}, "finetune.steps"),
        ({"finetune": {"steps": 2.5}}, "finetune.steps"),
    ],
)
def test_bad_policy_names_the_key(data, named):
    with pytest.raises(PolicyError, match=named.replace("[", r"\[").replace("]", r"\]")):
        Policy.from_dict(data)


def test_glob_that_matches_no_layer_is_an_error(task):
    policy = Policy.from_dict({"prune": {"layers": {"features.*": 0.5}}})
    with pytest.raises(PolicyError, match=r"features\.\*.*matches no"):
        resolve_policy(task, policy, get_target("torch"))
    policy = Policy.from_dict({"quant": {"layers": {"head": 8}}})
    with pytest.raises(PolicyError, match="quant.layers.*'head'"):
        resolve_policy(task, policy, get_target("torch"))


def test_output_layer_cannot_be_pruned(task):
    policy = Policy.from_dict({"prune": {"layers": {"fc": 0.5}}})
    with pytest.raises(PolicyError, match="fc is an output layer"):
        resolve_policy(task, policy, get_target("torch"))


def test_bits_the_target_cannot_honour(task):
    from dataclasses import replace

    narrow = replace(get_target("torch"), bits=(8, 32))
    policy = Policy.from_dict({"quant": {"layers": {"stem": 4}}})
    with pytest.raises(PolicyError, match="layer stem: 4 bits cannot be honoured"):
        resolve_policy(task, policy, narrow)


def test_most_specific_key_wins(task):
    policy = Policy.from_dict(
        {
            "prune": {
                "default": 0.1,
                "layers": {"layer*": 0.2, "layer1.*": 0.3, "layer1.conv2": 0.4},
            },
            "quant": {"default": 16, "layers": {"*": 8, "fc": 4}},
        }
    )
    r = resolve_policy(task, policy, get_target("torch"))
    assert r.prune["stem"] == 0.1
    assert r.prune["layer2.conv1"] == 0.2
    assert r.prune["layer1.conv1"] == 0.3
    assert r.prune["layer1.conv2"] == 0.4
    assert "fc" not in r.prune and r.protected == ("fc",)
    assert r.bits["fc"] == 4 and r.bits["stem"] == 8


def test_load_policy_names_the_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"quant": {"default": 7}}')
    with pytest.raises(PolicyError, match=r"p\.json: .*quant\.default"):
        load_policy(path)
    path.write_text("{not json")
    with pytest.raises(PolicyError, match="not valid JSON"):
        load_policy(path)
