"""``Task(distill_loss=...)``: built-ins for logits, sigmoid multi-label outputs, regression and
embeddings, or a callable; a temperature dimension only where a KL term uses it (issue 22,
must-have 4)."""

from __future__ import annotations

import json

import pytest
import torch
from _support.models import mlp_task, multilabel_task
from _support.study_inputs import QUICK_API
from torch.nn import functional as F

from autocompress import MeasureSettings, Policy, compress
from autocompress.api import search
from autocompress.errors import TaskError
from autocompress.reporting.inspect import describe
from autocompress.study.space import load_space
from autocompress.task import check_task
from autocompress.techniques.distill import DistillLoss, kd_loss, unused_globals

FAST = MeasureSettings(warmup=1, repeats=20)


@pytest.fixture(scope="module")
def tagger():
    return multilabel_task()


def _kd(task, student, teacher, temperature=3.0):
    """The distillation term alone (alpha 0, no features)."""
    loss = DistillLoss(task, alpha=0.0, temperature=temperature)
    targets = torch.zeros(len(student), dtype=torch.long)  # the task term weighs 0
    return loss(student, teacher, targets, {}, {})


def test_each_built_in_is_its_formula():
    task = mlp_task(epochs=0)
    torch.manual_seed(0)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    expected = {
        None: kd_loss(s, t, 3.0),
        "kl": kd_loss(s, t, 3.0),
        "bce-logits": F.binary_cross_entropy_with_logits(s, torch.sigmoid(t)),
        "mse": F.mse_loss(s, t),
        "cosine": (1 - F.cosine_similarity(s, t, dim=1)).mean(),
    }
    for name, value in expected.items():
        task.distill_loss = name
        assert torch.allclose(_kd(task, s, t), value), name
    task.distill_loss = "bce"
    ps, pt = torch.sigmoid(s), torch.sigmoid(t)
    assert torch.allclose(_kd(task, ps, pt), F.binary_cross_entropy(ps, pt))
    seen = []
    task.distill_loss = lambda student, teacher: seen.append((student, teacher)) or s.sum() * 0
    assert float(_kd(task, s, t)) == 0.0
    assert seen[0][0] is s and seen[0][1] is t


def test_an_unknown_or_wrong_distill_loss_is_refused():
    base = mlp_task(epochs=0)
    fields = dict(
        model=base.model,
        train_loader=base.train_loader,
        val_loader=base.val_loader,
        example_inputs=base.example_inputs,
    )
    with pytest.raises(TaskError, match="'kld' is not a built-in; choose from kl, bce"):
        type(base)(**fields, distill_loss="kld")
    with pytest.raises(TaskError, match="a built-in name or a callable"):
        type(base)(**fields, distill_loss=3)
    logits = type(base)(**fields, distill_loss="bce")  # an MLP's outputs are logits
    with pytest.raises(TaskError, match=r"'bce' takes sigmoid outputs .* use 'bce-logits'"):
        check_task(logits)
    check_task(type(base)(**fields, distill_loss="bce-logits"))


def test_a_sigmoid_multi_label_model_compresses_with_bce_distillation(tagger, tmp_path):
    teacher = tagger.evaluate(tagger.model)
    assert teacher > 0.75
    policy = Policy.from_dict(
        {
            "prune": {"default": 0.3},
            "quant": {"default": 8},
            "finetune": {"epochs": 1},
            "distill": {"alpha": 0.0},  # distillation only: the BCE term does all the work
        }
    )
    result = compress(tagger, policy, out_dir=tmp_path, settings=FAST)
    accuracy = json.loads((tmp_path / "metrics.json").read_text())["accuracy"]
    assert accuracy == result.metrics["accuracy"] == tagger.evaluate(result.model)
    assert accuracy >= teacher - 0.1, (accuracy, teacher)


def _globals(space) -> set[str]:
    return {n for n in space.param_names if n.startswith(("distill.", "finetune."))}


def test_the_space_leaves_out_the_temperature_without_a_kl_term(tagger, tmp_path):
    space = load_space("default")
    with_kl = space.resolve(mlp_task(epochs=0).model, mlp_task(epochs=0).example_inputs)
    assert "distill.temperature" in with_kl.param_names
    why = unused_globals(tagger)
    assert "uses no temperature" in why["distill.temperature"]
    resolved = space.resolve(tagger.model, tagger.example_inputs, left_out=why)
    assert "distill.temperature" not in resolved.param_names
    assert _globals(resolved) == _globals(with_kl) - {"distill.temperature"}
    text = describe(tagger, "default", width=200)
    assert "distill.temperature: left out (the task's distillation ('bce') uses no" in text
    result = search(
        tagger, n_trials=2, seed=0, epochs=0, out=tmp_path / "run", name="tagger", **QUICK_API
    )
    for record in result.trials:
        assert not any("temperature" in name for name in record["params"]), record["params"]
