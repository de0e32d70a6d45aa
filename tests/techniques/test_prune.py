"""Structured pruning on the model families: outputs protected, grouped convs kept legal,
heads removed whole, frozen teachers, and records that say what was done."""

from __future__ import annotations

import copy

import pytest
import torch
from _support.models import (
    BertClassifier,
    GroupedConcatCNN,
    TwoHeads,
    bert_task,
    frozen_teacher_task,
    grouped_concat_task,
    mha_task,
)

from autocompress import MeasureSettings, Policy, compress, load_artifact, measure_teacher
from autocompress.analysis.layers import output_layers
from autocompress.pipeline._compress import resolve_policy
from autocompress.reporting.inspect import describe
from autocompress.study.space import load_space
from autocompress.targets import get_target
from autocompress.techniques.prune import prune_, prune_records
from autocompress.unpack import SplitMultiheadAttention

FAST = MeasureSettings(warmup=1, repeats=20)


def _prune(task, policy: Policy):
    resolved = resolve_policy(task, policy, get_target("torch"))
    student = copy.deepcopy(task.model)
    groups = prune_(student, task, resolved.prune, protected=resolved.protected, batches=1)
    return student, prune_records(task.model, student, resolved.prune, groups)


def test_every_layer_feeding_an_output_is_protected():
    assert output_layers(TwoHeads(), (torch.randn(1, 1, 12, 12),)) == {"head", "aux.2"}
    assert output_layers(GroupedConcatCNN(), (torch.randn(1, 1, 12, 12),)) == {"fc"}
    bert = BertClassifier().bert  # returns hidden states: every residual writer feeds them
    outs = output_layers(bert, (torch.randint(0, 100, (1, 8)),))
    assert outs == {
        f"encoder.layer.{i}.{m}.dense" for i in range(2) for m in ("attention.output", "output")
    }


def test_frozen_teacher_compresses_with_taylor_importance(tmp_path):
    task = frozen_teacher_task()
    policy = Policy.from_dict({"prune": {"default": 0.5}})
    result = compress(
        task, policy, out_dir=tmp_path, settings=FAST, baseline=None
    )  # the older keyword of teacher= still works
    assert result.metrics["layers"]["res.conv1"]["channels_kept"] == 8
    assert not any(p.requires_grad for p in task.model.parameters())  # teacher untouched
    assert result.metrics["params"] < result.metrics["teacher"]["params"]


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_grouped_convs_keep_equal_slices(ratio):
    task = grouped_concat_task(epochs=0)
    student, records = _prune(task, Policy(prune_default=ratio))
    for name in ("grouped", "res2.conv2"):
        conv = student.get_submodule(name)
        assert conv.in_channels % conv.groups == 0 and conv.out_channels % conv.groups == 0
    # the grouped conv, the 1x1 branch and the residual after the concatenation are one group
    assert len({records[p]["prune_group"] for p in ("grouped", "point", "res2.conv2")}) == 1
    student(*task.example_inputs)


def test_bert_heads_and_ffn_neurons(tmp_path):
    task = bert_task()
    policy = Policy.from_dict(
        {"prune": {"layers": {"*.attention.self.query": 0.5, "*.intermediate.dense": 0.5}}}
    )
    baseline = measure_teacher(task, settings=FAST)
    result = compress(task, policy, out_dir=tmp_path, settings=FAST, teacher=baseline)
    for model in (result.model, load_artifact(tmp_path, task.model)):
        attn = model.bert.encoder.layer[0].attention.self
        assert attn.num_attention_heads == 2 and attn.all_head_size == 16
        assert model.bert.encoder.layer[1].attention.output.dense.in_features == 16
    layers = result.metrics["layers"]
    for qkv in ("query", "key", "value"):
        rec = layers[f"bert.encoder.layer.0.attention.self.{qkv}"]
        assert rec["prune"] == 0.5 and rec["prune_group_ratio"] == 0.5  # k/v follow q's heads
    assert layers["bert.encoder.layer.1.intermediate.dense"]["channels_kept"] == 32
    assert layers["bert.encoder.layer.0.attention.self.key"]["prune_requested"] == 0.0


def test_bert_space_has_one_parameter_per_attention_module():
    task = bert_task(epochs=0)
    space = load_space("default").resolve(task.model, task.example_inputs)
    names = [n for n in space.param_names if n.startswith("prune.")]
    heads = [n for n in names if n.endswith("attention.self")]
    assert heads == [f"prune.bert.encoder.layer.{i}.attention.self" for i in range(2)]
    assert not any(n.endswith((".query", ".key", ".value")) for n in names)
    assert "prune.bert.encoder.layer.0.intermediate.dense" in names


def test_multihead_attention_is_unpacked_and_loses_whole_heads():
    task = mha_task(epochs=0)
    assert isinstance(task.model.attn, SplitMultiheadAttention) and not task.packed_attention
    student, records = _prune(task, Policy(prune_default=0.5))
    assert student.attn.num_heads == 2  # 4 heads, half removed
    for path in ("attn.q", "attn.k", "attn.v"):
        assert records[path]["channels_kept"] == 8 and records[path]["prune_group"] == "attn"
    assert student.attn.out_proj.in_features == 8
    assert records["fc1"]["channels_kept"] == 16
    student(*task.example_inputs)
    space = load_space("default").resolve(task.model, task.example_inputs)
    assert "prune.attn" in space.param_names
    for bits in (8, 4):  # the unpacked projections are Linears each target quantizes
        resolved = resolve_policy(task, Policy(quant_default=bits), get_target("torch"))
        assert {resolved.bits[p] for p in ("attn.q", "attn.k", "attn.v", "attn.out_proj")} == {bits}


def test_multihead_attention_that_cannot_be_unpacked_records_unpruned_heads():
    task = mha_task(epochs=0, add_bias_kv=True)  # bias_k/bias_v: no exact unpacked equivalent
    assert "add_bias_kv" in task.packed_attention["attn"]
    student, records = _prune(task, Policy(prune_default=0.5))
    assert "not pruned" in records["attn.out_proj"]["heads"]
    assert records["attn.out_proj"]["prune"] == 0.0
    assert records["fc1"]["channels_kept"] == 16
    assert isinstance(student.attn, torch.nn.MultiheadAttention)
    student(*task.example_inputs)
    space = load_space("default").resolve(task.model, task.example_inputs)
    by_path = {layer.path: layer for layer in space.layers}
    assert by_path["embed"].prune_param is None
    assert "MultiheadAttention" in by_path["embed"].prune_note


def test_a_group_takes_the_largest_ratio_its_members_ask_for():
    task = grouped_concat_task(epochs=0)
    _, records = _prune(task, Policy(prune_layers={"stem.0": 0.25, "res.conv2": 0.5}))
    for path in ("stem.0", "res.conv2", "dw"):
        assert records[path]["prune_group"] == "stem.0+res.conv2+dw"
        assert records[path]["prune_group_ratio"] == 0.5
        assert records[path]["channels_kept"] == 8
    assert records["stem.0"]["prune_requested"] == 0.25


def test_inspect_lists_the_prune_groups():
    text = describe(grouped_concat_task(epochs=0), "default", width=200)
    assert "prune groups (6;" in text
    assert "grouped+point+res2.conv2: 3 layer(s), 48 channels, equal slices of" in text
    assert "fc: 1 layer(s), 10 channels -> not pruned (fc: output layer)" in text


class _Box:
    def __init__(self, logits):
        self.logits = logits


class _BoxedOutput(torch.nn.Module):
    """Returns an object torch-pruning's tracer cannot walk (not a tensor, tuple or dict)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 8)
        self.b = torch.nn.Linear(8, 2)

    def forward(self, x):
        return _Box(self.b(torch.relu(self.a(x))))


def test_an_untraceable_model_is_one_line_and_keeps_bits(tmp_path):
    from autocompress import Task
    from autocompress.analysis.groups import GraphError
    from autocompress.study.space.units import prune_units

    x = torch.randn(64, 4)
    batches = [(x[i : i + 16], (x[i : i + 16, 0] > 0).long()) for i in range(0, 64, 16)]
    task = Task(
        model=_BoxedOutput(),
        train_loader=batches,
        val_loader=batches,
        example_inputs=(x[:1],),
        output_fn=lambda out: out.logits,
    )
    with pytest.raises(GraphError, match=r"cannot trace _BoxedOutput's .*bits and block dropping"):
        _prune(task, Policy(prune_default=0.5))
    _, records = _prune(task, Policy(prune_default=0.0))  # nothing to prune: no graph needed
    assert records["a"]["channels_kept"] == 8
    units = prune_units(task.model, task.example_inputs, ())
    assert units["a"].reason and "cannot trace" in units["a"].reason
    policy = Policy.from_dict({"quant": {"default": 8}, "finetune": {"epochs": 0}})
    metrics = compress(task, policy, out_dir=tmp_path).metrics  # bits still apply
    assert metrics["layers"]["a"]["bits"] == 8
