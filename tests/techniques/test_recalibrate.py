"""BatchNorm statistics after structural change and fine-tuning (issue 22, must-have 1)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from _support.models import converted_bn_task
from torch import nn

from autocompress import MeasureSettings, Policy, compress
from autocompress.techniques.recalibrate import recalibrate_bn_, stuck_norms, tracked_norms

FAST = MeasureSettings(warmup=1, repeats=20)


@pytest.fixture(scope="module")
def converted():
    return converted_bn_task()


def test_momentum_zero_norms_recover_after_pruning_and_int8(converted, tmp_path):
    """30 % pruning + int8, one epoch: without recalibration the student kept the teacher's
    running statistics (momentum 0) and lost about 50 points."""
    teacher = converted.evaluate(converted.model)
    assert teacher > 0.85
    policy = Policy.from_dict(
        {"prune": {"default": 0.3}, "quant": {"default": 8}, "finetune": {"epochs": 1}}
    )
    result = compress(converted, policy, out_dir=tmp_path, settings=FAST)
    assert result.metrics["accuracy"] >= teacher - 0.15, (result.metrics["accuracy"], teacher)
    record = json.loads((tmp_path / "metrics.json").read_text())["bn_recalibrated"]
    norms = len(tracked_norms(converted.model))
    assert record["layers"] == norms
    assert record["batches"] > 0
    assert "channels pruned" in record["reason"]
    assert f"{norms} norm(s) with momentum 0" in record["reason"]
    # the student keeps the converted model's momentum
    assert all(m.momentum == 0 for m in result.model.modules() if isinstance(m, nn.BatchNorm2d))


def test_nothing_changed_nothing_recalibrated(converted, tmp_path):
    result = compress(converted, Policy.from_dict({"quant": {"default": 8}}), settings=FAST)
    assert "bn_recalibrated" not in result.metrics


def test_statistics_are_the_exact_average_over_the_batches():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3)
    model = nn.Sequential(conv, nn.BatchNorm2d(4, momentum=0.0), nn.Dropout(0.5), nn.ReLU())
    model.train()
    batches = [torch.randn(8, 1, 6, 6) for _ in range(3)]
    record = recalibrate_bn_(model, batches, reason="test")
    assert record == {"layers": 1, "batches": 3, "reason": "test"}
    with torch.no_grad():
        feats = torch.cat([conv(x) for x in batches])  # (N, C, H, W), equal batch sizes
    bn = model[1]
    per_batch_var = torch.stack(
        [conv(x).detach().var(dim=(0, 2, 3), unbiased=True) for x in batches]
    )
    assert torch.allclose(bn.running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, per_batch_var.mean(dim=0), atol=1e-5)
    assert bn.momentum == 0.0
    assert all(m.training for m in model.modules())  # modes restored


def test_no_batches_or_untracked_norms_leave_statistics_alone():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.BatchNorm1d(4, affine=False))
    model[1].running_mean.fill_(3.0)
    model[2].track_running_stats = False
    model[2].running_mean = None
    model[2].running_var = None
    assert recalibrate_bn_(model, [], reason="none") is None
    assert float(model[1].running_mean[0]) == 3.0
    assert list(tracked_norms(model)) == ["1"]
    model[1].momentum = None
    assert "momentum None" in stuck_norms(model)["1"]
    record = recalibrate_bn_(copy.deepcopy(model), [torch.randn(4, 4)], reason="x")
    assert record is not None and record["layers"] == 1
