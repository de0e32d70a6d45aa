"""Strategy fields: quantization scope, fine-tuning scope, feature-distillation weight."""

from __future__ import annotations

import copy

import pytest
import torch
from _support.models import cnn_task, mlp_task

from autocompress.errors import PolicyError
from autocompress.pipeline._compress import compress
from autocompress.policy import Policy
from autocompress.study.space import load_space
from autocompress.targets import get_target
from autocompress.techniques.distill import TeacherCache
from autocompress.techniques.finetune import finetune_
from autocompress.techniques.scope import (
    auto_feature_layers,
    resolve_quant_scopes,
    select_parameters,
    trainable_modules,
)


@pytest.fixture(scope="module")
def mlp():
    return mlp_task(n=128, epochs=2)


def test_strategy_fields_round_trip():
    data = {
        "distill": {"alpha": 0.5, "temperature": 2.0, "feature_weight": 0.3},
        "quant": {
            "default": 8,
            "layers": {},
            "scope": {"default": "weight", "layers": {"fc": "weight+activation"}},
        },
        "finetune": {"lambda": 0.0, "epochs": 1, "lr": 0.001, "scope": "norm-and-head"},
    }
    policy = Policy.from_dict(data)
    assert Policy.from_json(policy.to_json()) == policy
    assert policy.to_dict()["quant"]["scope"] == data["quant"]["scope"]
    assert policy.finetune.scope == "norm-and-head" and policy.distill.feature_weight == 0.3
    old = Policy.from_dict({"quant": {"default": 8}})  # old policies stay valid and unchanged
    assert "scope" not in old.to_dict()["quant"] and "scope" not in old.to_dict()["finetune"]
    assert old.finetune.scope == "full" and old.distill.feature_weight is None


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"finetune": {"scope": "bias"}}, "finetune.scope"),
        ({"quant": {"scope": {"default": "int8"}}}, "quant.scope.default"),
        ({"quant": {"scope": {"layers": {"fc": "act"}}}}, "quant.scope.layers['fc']"),
        ({"quant": {"scope": {"mode": "weight"}}}, "quant.scope.mode"),
        ({"distill": {"feature_weight": -1}}, "distill.feature_weight"),
    ],
)
def test_strategy_fields_validate(data, key):
    with pytest.raises(PolicyError, match=key.replace("[", r"\[").replace("]", r"\]")):
        Policy.from_dict(data)


def test_a_target_refuses_a_scope_it_cannot_run():
    policy = Policy.from_dict({"quant": {"default": 8, "scope": {"default": "weight+activation"}}})
    with pytest.raises(PolicyError, match="target 'torch' does not run it"):
        resolve_quant_scopes(policy, ["fc"], get_target("torch"))
    scopes, explicit = resolve_quant_scopes(policy, ["fc"], get_target("onnxruntime"))
    assert scopes == {"fc": "weight+activation"} and explicit == {"fc"}
    default, explicit = resolve_quant_scopes(Policy(), ["fc"], get_target("onnxruntime"))
    assert default == {"fc": "weight+activation"} and not explicit


def test_space_offers_only_the_targets_scopes(mlp):
    space = load_space("default")
    assert load_space("default").from_dict(space.to_dict()) == space

    def resolve(target: str):
        tgt = get_target(target)
        return space.resolve(
            mlp.model,
            mlp.example_inputs,
            supported_bits=tgt.bits,
            supported_scopes=tuple(tgt.quant_scopes),
        )

    on_torch, on_ort = resolve("torch"), resolve("onnxruntime")
    assert not [n for n in on_torch.param_names if n.startswith("scope.")]
    assert {layer.scope for layer in on_torch.layers} == {"weight"}
    scope_params = [n for n in on_ort.param_names if n.startswith("scope.")]
    assert len(scope_params) == 3
    assert {"finetune.scope", "distill.feature_weight"} <= set(on_ort.param_names)
    params = {n: on_ort.param(n).choices[-1] for n in on_ort.param_names if on_ort.param(n).choices}
    params.update({n: 0.0 for n in on_ort.param_names if n not in params})
    policy = on_ort.policy_from_params(params)
    assert policy.quant_scope_layers == {"net.0": "weight", "net.2": "weight", "net.4": "weight"}
    assert policy.finetune.scope == "norm-and-head" and policy.distill.feature_weight == 1.0
    baseline = on_ort.policy_from_params(on_ort.params_for_policy("int8"))
    assert set(baseline.quant_scope_layers.values()) == {"weight+activation"}
    assert baseline.finetune.scope == "full"


@pytest.mark.parametrize(
    ("scope", "modules"),
    [("full", None), ("head", {"net.4"}), ("pruned-only", {"net.0"}), ("norm-and-head", {"net.4"})],
)
def test_only_the_scopes_parameters_train(mlp, scope, modules):
    student = copy.deepcopy(mlp.model)
    train = trainable_modules(student, scope, changed={"net.0"}, head={"net.4"})
    params = select_parameters(student, train)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    policy = Policy.from_dict({"finetune": {"epochs": 1, "lr": 1e-2, "scope": scope}})
    finetune_(student, mlp, policy, {}, train_modules=train)
    moved = {
        n.rpartition(".")[0] for n, p in student.named_parameters() if not torch.equal(p, before[n])
    }
    expected = modules or {"net.0", "net.2", "net.4"}
    assert moved == expected
    assert sum(p.numel() for p in params) == sum(
        p.numel() for n, p in student.named_parameters() if n.rpartition(".")[0] in expected
    )
    assert all(p.requires_grad for p in student.parameters())  # restored afterwards


def test_compress_records_trained_params(mlp, tmp_path):
    policy = Policy.from_dict({"quant": {"default": 8}, "finetune": {"epochs": 1, "scope": "head"}})
    metrics = compress(mlp, policy, out_dir=tmp_path).metrics
    assert metrics["finetune_scope"] == "head"
    assert metrics["trained_params"] == 64 * 10 + 10  # the output Linear
    assert {rec["scope"] for rec in metrics["layers"].values()} == {"weight"}


def test_feature_weight_changes_training(mlp):
    layers = auto_feature_layers(mlp.model, mlp.example_inputs, {"net.4"})
    assert layers == ("net.0", "net.2")  # each stage's output, the head left out
    results = []
    for weight in (0.0, 1.0):
        student = copy.deepcopy(mlp.model)
        torch.nn.init.normal_(student.net[0].weight)  # differ from the teacher's features
        policy = Policy.from_dict(
            {"distill": {"alpha": 0.5, "feature_weight": weight}, "finetune": {"epochs": 1}}
        )
        cache = TeacherCache(mlp)  # names no features: the trial taps its own
        finetune_(student, mlp, policy, {}, teacher_cache=cache, feature_layers=layers)
        results.append(student.net[0].weight.detach().clone())
    assert not torch.allclose(results[0], results[1])


def test_full_int8_runs_integers_from_input_to_output(tmp_path):
    task = cnn_task(width=8, n=128, epochs=1)
    space = load_space("full-int8").resolve(
        task.model, task.example_inputs, supported_scopes=("weight", "weight+activation")
    )
    params = {n: 0.0 for n in space.param_names if n.startswith("prune.")}
    params.update({"distill.alpha": 1.0, "distill.temperature": 4.0, "finetune.lambda": 0.0})
    policy = space.policy_from_params(params)
    assert set(policy.quant_scope_layers.values()) == {"weight+activation"}
    full = compress(task, policy, target="onnxruntime", out_dir=tmp_path / "full").metrics
    graph = full["graph"]
    assert graph["input"] == "QuantizeLinear" and graph["output"] == "DequantizeLinear"
    assert graph["integer_ops"]["QLinearConv"] == 8 and "QGemm" in graph["integer_ops"]
    assert graph["float_islands"] == []
    assert {r["scope_achieved"] for r in full["layers"].values()} == {"weight+activation"}
    weight_only = Policy.from_dict({"quant": {"default": 8, "scope": {"default": "weight"}}})
    w = compress(task, weight_only, target="onnxruntime", out_dir=tmp_path / "w").metrics
    islands = {i["op"] for i in w["graph"]["float_islands"]}
    assert {"Gemm"} <= islands and any("Conv" in op for op in islands)
    assert w["graph"]["integer_ops"] == {}


def test_inspect_shows_each_strategy_choice_on_the_target(mlp):
    from autocompress.reporting.inspect import describe

    on_ort = describe(mlp, "default", target="onnxruntime", width=240)
    assert "scope.net.0 {weight+activation, weight}" in on_ort
    assert "  weight+activation: static uint8 activation scales" in on_ort
    assert "  head: only the output layer(s) train" in on_ort
    assert "distill.feature_weight: weight of the MSE" in on_ort
    on_torch = describe(mlp, "default", target="torch", width=240)
    assert (
        "weight+activation" not in on_torch and "  weight: 8-bit Linear: dynamic int8" in on_torch
    )
