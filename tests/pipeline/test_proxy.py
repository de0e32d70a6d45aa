"""The recovery proxy (issue 20, must-have 3): a zero-shot estimate with BatchNorm statistics
recalibrated, a short distillation where there is no BatchNorm, and the search's online guard."""

from __future__ import annotations

import math

import pytest
from _support.models import encoder_task
from torch.optim.optimizer import register_optimizer_step_post_hook

from autocompress import Policy
from autocompress.errors import ConfigError
from autocompress.pipeline.proxy import (
    default_estimator,
    estimate_recovery,
    proxy_trust,
    spearman,
)

PRUNED = Policy.from_dict({"prune": {"default": 0.5}, "quant": {"default": 8}})


def test_zero_shot_recalibrates_batchnorm_and_records_it(cnn):
    """A real CNN with pruned convs: the estimate with recalibrated statistics is not the one
    with the teacher's stale statistics, and the estimate says it recalibrated."""
    assert default_estimator(cnn) == "zero-shot"
    fresh = estimate_recovery(cnn, PRUNED)
    stale = estimate_recovery(cnn, PRUNED, recalibrate=False)
    assert fresh.estimator == stale.estimator == "zero-shot"
    assert fresh.steps == stale.steps == 0
    assert fresh.accuracy != stale.accuracy
    assert "channels pruned" in fresh.bn_recalibrated["reason"]
    assert fresh.bn_recalibrated["layers"] > 0 and fresh.bn_recalibrated["batches"] > 0
    assert stale.bn_recalibrated is None
    assert 0.0 <= fresh.accuracy <= 1.0
    assert fresh.to_dict()["estimator"] == "zero-shot"


def test_distill_runs_exactly_the_steps_asked_for_on_a_model_without_batchnorm():
    """9 steps on 7 batches an epoch: the limit stops the second epoch after 2 batches."""
    task = encoder_task()
    assert len(task.train_loader) == 7
    assert default_estimator(task) == "distill"
    counted = []
    hook = register_optimizer_step_post_hook(lambda *_: counted.append(1))
    try:
        est = estimate_recovery(task, PRUNED, steps=9)
    finally:
        hook.remove()
    assert est.estimator == "distill"
    assert est.steps == 9 == len(counted)
    assert est.bn_recalibrated is None  # no BatchNorm to recalibrate
    assert 0.0 <= est.accuracy <= 1.0


def test_unknown_estimator_and_bad_steps_are_errors(cnn):
    with pytest.raises(ConfigError, match="unknown recovery estimator 'eagle'"):
        estimate_recovery(cnn, PRUNED, estimator="eagle")
    with pytest.raises(ConfigError, match="steps = 0"):
        estimate_recovery(cnn, PRUNED, estimator="distill", steps=0)


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    xs = [0.1, 0.4, 0.4, 0.2, 0.9, 0.5, 0.5, 0.3]
    ys = [0.2, 0.3, 0.5, 0.1, 0.8, 0.8, 0.7, 0.35]
    assert spearman(xs, ys) == pytest.approx(stats.spearmanr(xs, ys).statistic)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # constant: undefined
    assert spearman([1], [1]) is None


def test_trust_needs_a_high_correlation_on_enough_finished_trials():
    good = [(0.1 * i, 0.5 + 0.05 * i) for i in range(6)]
    assert proxy_trust(good).trusted and proxy_trust(good).rho == pytest.approx(1.0)
    assert not proxy_trust(good[:5]).trusted  # 5 pairs: too few whatever the rho
    assert proxy_trust(good[:5]).rho == pytest.approx(1.0)
    shuffled = [(e, a) for (e, _), (_, a) in zip(good, reversed(good), strict=True)]
    assert not proxy_trust(shuffled).trusted and proxy_trust(shuffled).rho == pytest.approx(-1)
    # a failed trial (no accuracy, NaN) is left out, not counted
    with_failures = [*good, (0.9, None), (math.nan, 0.7)]
    assert proxy_trust(with_failures).pairs == 6 and proxy_trust(with_failures).trusted
    # the threshold is inclusive, and configurable
    assert not proxy_trust(good, threshold=1.01).trusted
    assert proxy_trust([], min_pairs=0).rho is None and not proxy_trust([]).trusted
