"""Depth in the default (``refine``) space: ``global.depth`` (blocks dropped per stage, in each
stage's drop order) plus per-block ``offset.drop.<block>``, only where the model has droppable
blocks; a sampled depth policy compresses and reloads with its blocks gone."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
import torch
from _support.models import MLP, ResNet, ResNetish

from autocompress import Task, compress, load_artifact
from autocompress.errors import ConfigError
from autocompress.pipeline._compress import MeasureSettings
from autocompress.reporting.inspect import describe
from autocompress.study._start import space_depths
from autocompress.study.space import GLOBAL_DEPTH, SearchSpace, load_space
from autocompress.techniques.drop import DroppedBlock

QUICK = MeasureSettings(warmup=1, repeats=20)


def _task(model: torch.nn.Module, shape: tuple[int, ...]) -> Task:
    torch.manual_seed(0)
    x = torch.randn(32, *shape)
    batches = [(x[i : i + 16], torch.arange(16) % 10) for i in range(0, 32, 16)]
    return Task(
        model=model.eval(), train_loader=batches, val_loader=batches, example_inputs=(x[:1],)
    )


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return _task(ResNet(), (1, 12, 12))


def _refine(task: Task):
    return load_space("refine").resolve(task.model, task.example_inputs)


def test_refine_searches_depth_per_stage_and_per_block(resnet):
    space = _refine(resnet)
    names = space.param_names
    # layer2.0 changes the shape (a projection shortcut): not droppable
    blocks = ["layer1.0", "layer1.1", "layer2.1"]
    assert space.param(GLOBAL_DEPTH).choices == (0, 1, 2)  # layer1 holds two blocks
    assert [n for n in names if n.startswith("offset.drop.")] == [
        f"offset.drop.{b}" for b in blocks
    ]
    assert space.param("offset.drop.layer1.0").choices == (-1, 0, 1)
    assert not any(n.startswith("drop.") for n in names)  # the per-block choices are lifted
    stages = {s.name: s for s in space.stages}
    assert set(stages) == {"layer1", "layer2"} and stages["layer2"].blocks == ("layer2.1",)
    layer1 = stages["layer1"]
    assert set(layer1.blocks) == {"layer1.0", "layer1.1"}
    assert list(layer1.change) == sorted(layer1.change)  # least residual change goes first
    first = layer1.blocks[0]

    def dropped(params):
        return set(space.policy_from_params(params).drop_blocks)

    uniform = space.params_for_policy("drop1-prune30-int8")
    assert uniform[GLOBAL_DEPTH] == 1 and dropped(uniform) == {first, "layer2.1"}
    assert dropped(space.params_for_policy("drop2-int8")) == set(blocks)
    assert dropped(space.params_for_policy("prune30-int8")) == set()
    # per-block offsets: -1 keeps a block the depth drops, +1 drops one it keeps
    other = layer1.blocks[1]
    moved = {**uniform, f"offset.drop.{first}": -1, f"offset.drop.{other}": 1}
    assert dropped(moved) == {other, "layer2.1"}
    assert space_depths(space) == [0, 1, 2]


def test_a_block_held_as_a_plain_attribute_is_searched_and_listed():
    task = _task(ResNetish(), (1, 12, 12))
    space = _refine(task)
    assert {"offset.drop.layer1", "offset.drop.layer2"} <= set(space.param_names)
    # both under the model itself, but at different widths: two stages of one block
    assert [s.blocks for s in space.stages] == [("layer1",), ("layer2",)]
    assert space.param(GLOBAL_DEPTH).choices == (0, 1)
    text = describe(task, "refine", width=200)
    assert "droppable blocks (2;" in text and "stages (2;" in text
    assert "  <model>: layer1 (" in text and "global.depth: {0, 1}" in text


def test_a_model_without_droppable_blocks_gets_the_old_space():
    task = _task(MLP(), (64,))
    without = load_space("refine").to_dict()
    del without["drop"]
    old = SearchSpace.from_dict(without).resolve(task.model, task.example_inputs)
    new = _refine(task)
    assert new.params == old.params and new.stages == ()
    assert not any("drop" in n or "depth" in n for n in new.param_names)
    assert space_depths(new) == [0]
    # a drop section that is not optional still says it found nothing
    with pytest.raises(ConfigError, match="drop.blocks.*matches no droppable block.*optional"):
        SearchSpace.from_dict({"drop": {"blocks": "auto"}}).resolve(task.model, task.example_inputs)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"hierarchy": {"drop_offsets": [0, 2]}}, "hierarchy.drop_offsets.*-1 .keep."),
        ({"hierarchy": {"drop_offsets": [-1, 1]}}, "hierarchy.drop_offsets: must contain 0"),
        ({"drop": {"optional": "yes"}}, "drop.optional: must be true or false"),
    ],
)
def test_bad_depth_settings_are_config_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_dict(data, source="s.yaml")


def test_a_sampled_depth_policy_compresses_and_reloads_without_its_blocks(resnet, tmp_path):
    space = _refine(resnet)
    first = space.stages[0].blocks[0]
    params = {**space.params_for_policy("drop1-int8"), f"offset.drop.{first}": -1}
    policy = space.suggest(optuna.trial.FixedTrial(params))  # the sampler's path to a policy
    policy = dataclasses.replace(policy, finetune=dataclasses.replace(policy.finetune, epochs=0))
    assert policy.drop_blocks == ("layer2.1",)  # layer1's first kept by its offset
    result = compress(resnet, policy, out_dir=tmp_path, settings=QUICK)
    assert result.metrics["dropped_blocks"] == ["layer2.1"]
    again = load_artifact(result.artifact, resnet.model)
    assert isinstance(again.layer2[1], DroppedBlock)
    assert not isinstance(again.layer1[0], DroppedBlock)
    assert not any(n.startswith("layer2.1.") for n, _ in again.named_parameters())
    x = resnet.val_loader[0][0]
    assert torch.allclose(again(x), result.model(x), atol=1e-5)


def test_the_flat_layerdrop_space_takes_depth_starts_too(resnet):
    space = load_space("layerdrop").resolve(resnet.model, resnet.example_inputs)
    assert GLOBAL_DEPTH not in space.param_names and space_depths(space) == [0, 1, 2]
    params = space.params_for_policy("drop1-int8")
    first = space.stages[0].blocks[0]
    assert set(space.policy_from_params(params).drop_blocks) == {first, "layer2.1"}
