"""The teacher-output cache cannot pair cached outputs with the wrong inputs: every hit is
checked against a fingerprint of the batch (issue 12, item 5)."""

from __future__ import annotations

import warnings

import pytest
import torch
from _support.models import mlp_task
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

from autocompress.task import Task
from autocompress.techniques.distill import TeacherCache, fingerprint


@pytest.fixture(scope="module")
def base() -> Task:
    return mlp_task(epochs=1)


class Pairs(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, noise: float = 0.0) -> None:
        self.x, self.y, self.noise = x, y, noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = self.x[i]
        if self.noise:  # random augmentation: a new sample every epoch
            x = x + self.noise * torch.randn_like(x)
        return x, self.y[i]


class ShuffledBatches(Sampler[list[int]]):
    """A custom batch sampler that shuffles: invisible to any type check on the loader."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __iter__(self):
        order = torch.randperm(self.n).tolist()
        return iter([order[i : i + self.size] for i in range(0, self.n, self.size)])

    def __len__(self) -> int:
        return (self.n + self.size - 1) // self.size


def _task(base: Task, loader) -> Task:
    return Task(
        model=base.model,
        train_loader=loader,
        val_loader=base.val_loader,
        example_inputs=base.example_inputs,
    )


def _data(base: Task) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat([b[0] for b in base.train_loader])
    y = torch.cat([b[1] for b in base.train_loader])
    return x, y


def _epochs_match_the_teacher(task: Task, cache: TeacherCache, epochs: int = 3) -> None:
    """Every batch of every epoch gets the teacher's output on that very batch."""
    for _ in range(epochs):
        for index, (inputs, targets) in enumerate(task.train_loader):
            out, _ = cache.get(index, inputs, targets)
            with torch.no_grad():
                assert torch.equal(out, task.model(inputs)), f"batch {index}: a stale output"


def test_a_shuffling_batch_sampler_is_not_cached(base):
    x, y = _data(base)
    sampler = BatchSampler(RandomSampler(range(len(x))), batch_size=32, drop_last=False)
    task = _task(base, DataLoader(Pairs(x, y), batch_sampler=sampler))
    cache = TeacherCache(task)
    assert not cache.cacheable  # the loader's own sampler says Sequential; the batch sampler not
    _epochs_match_the_teacher(task, cache)


def test_a_custom_shuffling_batch_sampler_is_caught_by_fingerprints(base):
    x, y = _data(base)
    torch.manual_seed(0)
    task = _task(base, DataLoader(Pairs(x, y), batch_sampler=ShuffledBatches(len(x), 32)))
    cache = TeacherCache(task)
    assert cache.cacheable
    with pytest.warns(UserWarning, match="your loader is not deterministic") as caught:
        _epochs_match_the_teacher(task, cache)
    assert len([w for w in caught if "not deterministic" in str(w.message)]) == 1  # once
    assert cache.mismatches > 0


def test_random_augmentation_is_caught_by_fingerprints(base):
    x, y = _data(base)
    torch.manual_seed(0)
    task = _task(base, DataLoader(Pairs(x, y, noise=0.1), batch_size=32))
    cache = TeacherCache(task)
    assert cache.cacheable  # sequential order: only the fingerprints can tell
    with pytest.warns(UserWarning, match="not deterministic"):
        _epochs_match_the_teacher(task, cache)
    n = len(task.train_loader)
    assert cache.computed_batches == 3 * n and cache.hits == 0


def test_a_deterministic_loader_hits_without_a_warning(base):
    x, y = _data(base)
    task = _task(base, DataLoader(Pairs(x, y), batch_size=32))
    cache = TeacherCache(task)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _epochs_match_the_teacher(task, cache)
    n = len(task.train_loader)
    assert (cache.computed_batches, cache.hits, cache.mismatches) == (n, 2 * n, 0)


def test_fingerprints_see_a_permutation_within_a_batch_and_a_changed_target():
    x = torch.arange(12.0).reshape(4, 3)
    y = torch.tensor([0, 1, 2, 3])
    assert fingerprint(x, y) == fingerprint(x.clone(), y.clone())
    assert fingerprint(x[[1, 0, 2, 3]], y[[1, 0, 2, 3]]) != fingerprint(x, y)
    assert fingerprint(x, y.flip(0)) != fingerprint(x, y)
    assert fingerprint(x[:3], y[:3]) != fingerprint(x, y)
