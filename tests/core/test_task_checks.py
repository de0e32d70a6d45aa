"""Task inputs checked when the task is used (issue 22, must-have 7)."""

from __future__ import annotations

import pytest
import torch
from _support import faulty_tasks
from _support.models import mlp_task
from torch.nn import functional as F

from autocompress import Policy, compress
from autocompress.errors import TaskError
from autocompress.task import check_loss, check_task


@pytest.fixture()
def task():
    return mlp_task(epochs=0)


def test_compress_refuses_a_model_replaced_after_construction(task):
    task.model = faulty_tasks._WrongWidth()
    with pytest.raises(TaskError, match=r"example_inputs .* module 'head' \(Linear\)"):
        compress(task, Policy.from_dict({"prune": {"default": 0.5}}))


def test_an_empty_training_loader_is_refused_only_when_fine_tuning_needs_it(task):
    task.train_loader = iter(())  # no len(): Task() could not see it was empty
    check_task(task, epochs=0)
    with pytest.raises(TaskError, match=r"train_loader yielded no batch.*2 epoch"):
        compress(task, Policy.from_dict({"finetune": {"epochs": 2}}))


def test_the_default_metric_refuses_float_targets_instead_of_scoring_zero(task):
    faulty_tasks._multi_label(task)
    task.loss = F.binary_cross_entropy_with_logits
    with pytest.raises(TaskError, match="top-1 accuracy.*integer class indices.*float32"):
        task.evaluate(task.model)
    with pytest.raises(TaskError, match="metric"):
        check_task(task, epochs=1)
    task.metric = lambda model, loader: 1.0
    check_task(task, epochs=1)


def test_the_default_loss_takes_class_indices_or_probabilities(task):
    inputs, labels = task.train_loader[0]
    check_loss(task, (inputs, labels))
    check_loss(task, (inputs, F.one_hot(labels, 10).float()))  # rows summing to 1
    with pytest.raises(TaskError, match=r"cross-entropy\) takes class indices"):
        check_loss(task, (inputs, (inputs[:, :10] > 0).float()))
    task.loss = lambda out, y: torch.mean(out[:, 99])
    with pytest.raises(TaskError, match=r"loss \(<lambda>\) fails .*IndexError"):
        check_loss(task, (inputs, labels))


def test_checking_leaves_the_global_rng_alone(task):
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.cat([b[0] for b in task.train_loader])
    y = torch.cat([b[1] for b in task.train_loader])
    task.train_loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    check_task(task, epochs=1)
    assert torch.equal(torch.rand(4), expected)
