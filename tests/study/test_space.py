from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from _support.models import cnn_task, encoder_task, mlp_task
from _support.study_inputs import ask_enqueued, check_file_error, check_preset, write_yaml
from torch import nn
from torch.nn import functional as F

from autocompress.errors import ConfigError
from autocompress.pipeline._compress import resolve_policy
from autocompress.policy import SUPPORTED_BITS, Policy
from autocompress.study.space import load_space
from autocompress.targets import get_target

PRESETS = ["default", "grouped", "int8", "transformer"]
GLOBALS = {"distill.alpha", "distill.temperature", "finetune.lambda"}
LINEAR = "rules:\n  - type: Linear\n"  # a rule for the broken files to break


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """torchvision's resnet18 layout (4 stages x 2 basic blocks), narrow for speed."""

    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        widths = [width, 2 * width, 4 * width, 8 * width]
        c_in = width
        for i, w in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            setattr(
                self, f"layer{i}", nn.Sequential(BasicBlock(c_in, w, stride), BasicBlock(w, w, 1))
            )
            c_in = w
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def cnn():
    return cnn_task(epochs=0)


@pytest.fixture(scope="module")
def encoder():
    return encoder_task(epochs=0)


def _write(tmp_path: Path, text: str) -> str:
    return write_yaml(tmp_path, "space.yaml", text)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_round_trip(name):
    space = check_preset(load_space, "search_spaces", name)
    assert (
        load_space(Path(__file__).resolve().parents[2] / "search_spaces" / f"{name}.yaml") == space
    )


def test_default_gives_each_coupled_group_one_parameter(cnn):
    resolved = load_space("default").resolve(cnn.model, cnn.example_inputs)
    layers = {layer.path: layer for layer in resolved.layers}
    assert "fc" in layers and layers["fc"].is_output
    assert layers["fc"].prune_param is None and layers["fc"].bits_param == "bits.fc"
    # the residual add ties the stem, layer1.conv2 and the depthwise conv that follows them
    stage1 = "prune.stem+layer1.conv2+dw"
    assert {layers[p].prune_param for p in ("stem", "layer1.conv2", "dw")} == {stage1}
    assert layers["merge"].prune_param == layers["layer2.conv2"].prune_param
    units = [u for u in resolved.units if u.reason is None]
    prune_names = [n for n in resolved.param_names if n.startswith("prune.")]
    assert prune_names == [f"prune.{u.name}" for u in units]  # one per group, module order
    for path, layer in layers.items():
        assert layer.bits_param == f"bits.{path}"
        if path != "fc":
            assert layer.prune_param == f"prune.{layer.prune_group}"
    names = resolved.param_names
    assert len(names) == len(set(names))
    # per layer: bits and quantization scope; globals: GLOBALS plus finetune.scope and
    # distill.feature_weight
    assert resolved.dimension == len(units) + 2 * len(layers) + len(GLOBALS) + 2
    assert resolved.param(stage1).kind == "float"
    assert resolved.param(stage1).step == pytest.approx(0.1)
    assert resolved.param("bits.stem").choices == (4, 8, 16, 32)
    assert resolved.param("finetune.lambda").kind == "log-float"


def test_rules_disagreeing_inside_a_group_are_an_error(tmp_path, cnn):
    path = _write(
        tmp_path,
        """
rules:
  - match: "layer*"
    prune: {choices: [0.0, 0.5]}
  - type: "Conv*"
    prune: 0.2
""",
    )
    with pytest.raises(ConfigError, match=r"stem and layer1.conv2 are coupled .*stem\+"):
        load_space(path).resolve(cnn.model, cnn.example_inputs)


def test_grouped_keeps_resnet18_small():
    model = ResNet18()
    resolved = load_space("grouped").resolve(model, (torch.randn(1, 3, 32, 32),))
    layer_params = [n for n in resolved.param_names if n not in GLOBALS]
    assert len(resolved.layers) == 21  # 1 stem + 16 block convs + 3 downsamples + fc
    assert len(layer_params) <= 16
    assert set(layer_params) == {
        *(f"prune.{g}" for g in ("conv1", "layer1", "layer2", "layer3", "layer4")),
        *(f"bits.{g}" for g in ("conv1", "layer1", "layer2", "layer3", "layer4", "fc")),
    }
    by_path = {layer.path: layer for layer in resolved.layers}
    assert by_path["layer3.0.downsample.0"].prune_param == "prune.layer3"
    assert by_path["layer3.1.conv2"].bits_param == "bits.layer3"


@pytest.mark.parametrize(
    ("name", "make_task"),
    [
        ("default", cnn_task),
        ("grouped", cnn_task),
        ("int8", mlp_task),
        ("transformer", encoder_task),
    ],
)
def test_suggest_gives_policies_the_target_accepts(name, make_task):
    task = make_task(epochs=0)
    resolved = load_space(name).resolve(task.model, task.example_inputs)
    study = optuna.create_study(
        directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=0)
    )
    paths = {layer.path for layer in resolved.layers}
    for _ in range(5):
        trial = study.ask()
        policy = resolved.suggest(trial)
        assert set(trial.params) == set(resolved.param_names)
        assert Policy.from_dict(policy.to_dict()) == policy
        assert policy.prune_default == 0.0 and policy.quant_default == 32
        assert set(policy.quant_layers) == paths
        assert set(policy.prune_layers) <= paths
        assert all(b in SUPPORTED_BITS for b in policy.quant_layers.values())
        resolved_policy = resolve_policy(task, policy, get_target("torch"))
        assert resolved_policy.prune == {
            p: policy.prune_layers.get(p, 0.0) for p in resolved_policy.prune
        }
        study.tell(trial, 0.0)


def test_policy_from_params_defaults_and_values(cnn):
    resolved = load_space("default").resolve(cnn.model, cnn.example_inputs)
    policy = resolved.policy_from_params({"prune.layer1.conv1": 0.5, "bits.fc": 8})
    assert policy.prune_layers["layer1.conv1"] == 0.5
    assert policy.prune_layers["stem"] == 0.0
    assert "fc" not in policy.prune_layers
    assert policy.quant_layers["fc"] == 8 and policy.quant_layers["stem"] == 32
    assert policy.finetune.epochs == 2 and policy.finetune.lr == 1e-3  # fixed by the preset


@pytest.mark.parametrize("kind", ["identity", "int8", "prune30-int8"])
@pytest.mark.parametrize("name", ["default", "int8", "transformer"])
def test_baselines_are_members_of_the_space(kind, name, encoder):
    resolved = load_space(name).resolve(encoder.model, encoder.example_inputs)
    params = resolved.params_for_policy(kind)
    assert set(params) == set(resolved.param_names)
    for p in resolved.params:
        assert p.contains(params[p.name]), (p, params[p.name])
    trial, policy = ask_enqueued(resolved, params, seed=1)
    assert trial.params == params
    bits = set(policy.quant_layers.values())
    assert bits == ({32} if kind == "identity" else {8})
    prunes = {p: r for p, r in policy.prune_layers.items()}
    if kind == "prune30-int8" and name != "int8":
        assert prunes["layers.0.fc1"] == pytest.approx(0.3)
    if kind == "identity":
        assert set(prunes.values()) == {0.0}
        assert policy.distill.alpha == 1.0


def test_transformer_ties_qkv_per_attention_module(encoder):
    resolved = load_space("transformer").resolve(encoder.model, encoder.example_inputs)
    by_path = {layer.path: layer for layer in resolved.layers}
    for i in (0, 1):
        qkv = [by_path[f"layers.{i}.attn.{n}"] for n in "qkv"]
        assert {layer.prune_param for layer in qkv} == {f"prune.layers.{i}.attn"}
        assert by_path[f"layers.{i}.attn.proj"].prune_param is None
        assert by_path[f"layers.{i}.fc2"].prune_param is None
        assert by_path[f"layers.{i}.fc1"].prune_param == f"prune.layers.{i}.fc1"
    assert all(resolved.param(n).choices == (8, 32) for n in resolved.param_names if "bits" in n)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    policy = resolved.suggest(study.ask())
    ratios = {policy.prune_layers[f"layers.0.attn.{n}"] for n in "qkv"}
    assert len(ratios) == 1


def test_literal_group_and_type_glob(tmp_path, cnn):
    path = _write(
        tmp_path,
        """
rules:
  - match: ["layer*", "stem", "dw", "merge"]
    group: blocks
    prune: {choices: [0.0, 0.5]}
    bits: 8
  - type: "Conv*"
    prune: 0.2
""",
    )
    resolved = load_space(path).resolve(cnn.model, cnn.example_inputs)
    assert resolved.param_names == ["prune.blocks"]
    by_path = {layer.path: layer for layer in resolved.layers}
    assert by_path["layer2.conv2"].bits == 8 and by_path["layer2.conv2"].bits_param is None
    assert by_path["pw"].prune == 0.2 and by_path["pw"].rule == 1
    assert by_path["fc"].rule is None
    policy = resolved.policy_from_params({"prune.blocks": 0.5})
    assert policy.prune_layers == {p: 0.2 if p == "pw" else 0.5 for p in by_path if p != "fc"}
    assert policy.distill.alpha == 1.0 and policy.finetune.epochs == 0  # Policy defaults


def test_supported_bits_check(cnn):
    with pytest.raises(ConfigError, match=r"search_spaces/default.yaml: rules\[0\].bits: 4 bits"):
        load_space("default").resolve(cnn.model, cnn.example_inputs, supported_bits=(8, 32))


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (
            LINEAR + "    bits: {choices: [4, 5]}\n",
            "rules[0].bits.choices",
            "5 is not a supported bit-width (choose from 2, 3, 4, 8, 16, 32)",
        ),
        (
            LINEAR + "  - type: Conv2d\n  - bits: 5\n",
            "rules[2].bits",
            "5 is not a supported bit-width",
        ),
        (
            LINEAR + "    prune: {low: 0.0, high: 1.0}\n",
            "rules[0].prune.high",
            "outside [0.0, 1.0)",
        ),
        (
            LINEAR + "    prune: {low: 0.5, high: 0.1}\n",
            "rules[0].prune",
            "low 0.5 is above high 0.1",
        ),
        (LINEAR + "    prunes: 0.5\n", "rules[0].prunes", "unknown key"),
        (LINEAR + "    group: 'prefix:x'\n", "rules[0].group", "prefix:N"),
        (LINEAR + "    group: '{stage}'\n", "rules[0].group", "unknown template field {stage}"),
        ("rules:\n  - role: head\n", "rules[0].role", "unknown role"),
        ("rules:\n  - match: 3\n", "rules[0].match", "must be a string or a list"),
        ("distill:\n  alpha: [0.0, 2.0]\n", "distill.alpha.high", "outside [0.0, 1.0]"),
        ("distill:\n  beta: 1\n", "distill.beta", "unknown key"),
        ("finetune:\n  lambda: {low: 0.0, high: 0.1}\n", "finetune.lambda", "log range"),
        ("finetune:\n  epochs: 1.5\n", "finetune.epochs", "must be an integer"),
        ("finetune:\n  epochs: [1, 2, 3]\n", "finetune.epochs", "a range is [low, high]"),
        ("search:\n  x: 1\n", "search", "unknown key"),
        ("rules: {type: Linear}\n", "rules", "must be a list"),
    ],
)
def test_errors_name_file_key_and_value(tmp_path, text, key, message):
    check_file_error(load_space, _write(tmp_path, text), key, message)


def test_rule_matching_no_layer_is_an_error_at_resolve(tmp_path, cnn):
    path = _write(tmp_path, "rules:\n  - type: Linear\n  - match: '*attn*'\n    prune: 0.1\n")
    space = load_space(path)
    with pytest.raises(ConfigError, match=r"rules\[1\] \(match \['\*attn\*'\]\): matches no layer"):
        space.resolve(cnn.model, cnn.example_inputs)
    optional = _write(tmp_path, "rules:\n  - match: '*attn*'\n    optional: true\n")
    assert load_space(optional).resolve(cnn.model, cnn.example_inputs).dimension == 0


def test_transformer_space_needs_attention(cnn):
    with pytest.raises(ConfigError, match=r"transformer.yaml: rules\[0\] \(role qkv\)"):
        load_space("transformer").resolve(cnn.model, cnn.example_inputs)


def test_conflicting_group_parameters_are_an_error(tmp_path, cnn):
    path = _write(
        tmp_path,
        "rules:\n"
        "  - match: 'layer1.*'\n    group: g\n    bits: {choices: [8, 32]}\n"
        "  - match: 'layer2.*'\n    group: g\n    bits: {choices: [4, 32]}\n",
    )
    with pytest.raises(
        ConfigError, match=r"rules\[1\]: parameter bits.g is also made by rules\[0\]"
    ):
        load_space(path).resolve(cnn.model, cnn.example_inputs)


def test_unknown_preset_and_bad_file(tmp_path):
    with pytest.raises(
        ConfigError, match="unknown search_spaces preset 'nope'; presets: .*default"
    ):
        load_space("nope")
    with pytest.raises(ConfigError, match="cannot read"):
        load_space(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_space(_write(tmp_path, "- 1\n"))


def test_inspect_describes_every_layer(encoder):
    from autocompress.reporting.inspect import describe

    text = describe(encoder, "transformer")
    assert "search_spaces/transformer.yaml" in text
    assert "prune.layers.0.attn {0, 0.25, 0.5}" in text
    assert "output layer: not pruned" in text
    assert "finetune.lambda: [1e-06, 0.01] log" in text
    assert "dimension: 17 (14 layer parameters, 3 global)" in text
