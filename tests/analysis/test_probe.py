"""Groups probed once per model (issue 22, must-haves 2 and 3): a group whose pruning breaks the
shapes (a hard-coded reshape width) or maps a later layer's columns wrongly (a time-major
permute + flatten) is left out of spaces, kept by policies and named with the layer at fault."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from _support.models import TimeMajor, hard_coded_width_task, time_major_task
from _support.study_inputs import QUICK_API
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from autocompress import MeasureSettings, Policy, compress
from autocompress.analysis.groups import graph_of
from autocompress.analysis.probe import probe_groups
from autocompress.api import search
from autocompress.errors import PolicyError
from autocompress.pipeline._compress import resolve_policy
from autocompress.reporting.inspect import describe
from autocompress.study.space import load_space
from autocompress.targets import get_target
from autocompress.techniques.prune import prune_

FAST = MeasureSettings(warmup=1, repeats=20)


class ChannelMajor(TimeMajor):
    """The same layers flattened channel-major: the pruner follows it."""

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        return self.fc(F.relu(self.bn2(self.conv2(x))).flatten(1))


@functools.cache
def _time_major():
    return time_major_task()


@pytest.fixture(scope="module")
def time_major():
    return _time_major()


@pytest.fixture(scope="module")
def hard_coded():
    return hard_coded_width_task(epochs=0)


def test_unprobed_pruning_through_a_permute_is_silently_wrong(time_major):
    """What the probe guards against: torch-pruning removes fc's columns channel-major."""
    student = copy.deepcopy(time_major.model)
    graph = graph_of(student, time_major.example_inputs, ["fc"])
    index = next(i for i, g in enumerate(graph.groups) if "conv2" in g.layers)
    tp_group = graph.tp_groups[index]
    tp_group.prune(idxs=[tp_group[0].idxs[i] for i in range(4)])  # conv2 channels 0-3
    kept = torch.arange(8)[4:]
    teacher_fc = time_major.model.fc.weight.detach().reshape(4, 6, 8, 6)  # (out, F, C, T)
    right = teacher_fc[:, :, kept].reshape(4, -1)
    assert student.fc.weight.shape == right.shape
    assert not torch.equal(student.fc.weight.detach(), right)


def test_a_time_major_flatten_is_refused_by_name(time_major, tmp_path):
    failed = probe_groups(time_major.model, time_major.example_inputs, ["fc"])
    assert set(failed) == {"conv2"}
    assert "removes the wrong input columns of 'fc' (Linear)" in failed["conv2"]
    twin = ChannelMajor()
    twin.load_state_dict(time_major.model.state_dict())
    assert probe_groups(twin.eval(), time_major.example_inputs, ["fc"]) == {}
    policy = Policy.from_dict({"prune": {"default": 0.5}, "quant": {"default": 8}})
    result = compress(time_major, policy, out_dir=tmp_path, settings=FAST)
    conv2, conv1 = result.metrics["layers"]["conv2"], result.metrics["layers"]["conv1"]
    assert conv2["channels_kept"] == conv2["channels_original"] == 8
    assert "wrong input columns of 'fc'" in conv2["prune_note"]
    assert conv1["channels_kept"] == 4


@settings(max_examples=8, deadline=None, derandomize=True)
@given(ratio=st.floats(0.05, 0.9), importance=st.sampled_from(["taylor", "magnitude"]))
def test_the_pruned_model_is_the_teacher_restricted_to_the_kept_channels(ratio, importance):
    """Unfine-tuned, float, any ratio: the student equals the teacher whose removed channels
    carry 0 (conv2's group is refused; conv1's is pruned through a channel-major path)."""
    time_major = _time_major()
    policy = Policy(prune_default=ratio)
    resolved = resolve_policy(time_major, policy, get_target("torch"))
    student = copy.deepcopy(time_major.model)
    taken = prune_(
        student,
        time_major,
        resolved.prune,
        protected=resolved.protected,
        batches=1,
        importance=importance,
    )
    assert taken["conv2"]["prune_group_ratio"] == 0.0 and student.conv2.out_channels == 8
    teacher = copy.deepcopy(time_major.model)
    rows = teacher.conv1.weight.detach()
    kept = [next(c for c in range(8) if torch.equal(rows[c], r)) for r in student.conv1.weight]
    removed = [c for c in range(8) if c not in kept]
    assert student.conv2.weight.shape[1] == 8 - len(removed)
    teacher.bn1.weight.data[removed] = 0.0
    teacher.bn1.bias.data[removed] = 0.0  # relu(0) = 0: the removed channels carry nothing
    x = torch.cat([b[0] for b in time_major.val_loader])
    with torch.no_grad():
        assert torch.allclose(student.eval()(x), teacher.eval()(x), atol=1e-5)


def test_a_hard_coded_width_is_left_out_of_spaces_and_named(hard_coded, tmp_path):
    text = describe(hard_coded, "default", width=240)
    assert "not pruned (group conv2: pruning it alone breaks the shapes" in text
    assert "after 'bn2' (BatchNorm2d)" in text
    space = load_space("default").resolve(hard_coded.model, hard_coded.example_inputs)
    layer = next(entry for entry in space.layers if entry.path == "conv2")
    assert layer.prune_param is None and "breaks the shapes" in (layer.prune_note or "")
    assert "prune.conv1" in space.param_names
    with pytest.raises(PolicyError, match=r"prune.layers\['conv2'\]: group conv2: pruning"):
        compress(hard_coded, Policy.from_dict({"prune": {"layers": {"conv2": 0.5}}}))
    result = search(
        hard_coded, n_trials=6, seed=0, epochs=0, out=tmp_path / "run", name="hc", **QUICK_API
    )
    assert [r["state"] for r in result.trials if r["state"] == "failed"] == []


def test_a_pruned_model_that_does_not_run_names_the_group_at_fault():
    """Past the probe (here: it probed another model), the error names the culprit group."""
    from _support import faulty_tasks
    from _support.models import MLP

    from autocompress import Task
    from autocompress.errors import TaskError

    bad = faulty_tasks.untraceable()
    other = Task(
        model=MLP(),
        train_loader=bad.train_loader,
        val_loader=bad.val_loader,
        example_inputs=bad.example_inputs,
    )
    student = copy.deepcopy(bad.model)
    with pytest.raises(TaskError) as caught:
        prune_(student, other, {"fc1": 0.5}, protected=("head",), importance="magnitude")
    message = str(caught.value)
    assert "module 'head' (Linear)" in message
    assert "pruning group(s) fc1 could not follow the shapes" in message
    assert "\n" not in message


def test_the_probe_runs_once_per_model_structure(time_major):
    """A copy of the teacher (as a Ray worker unpickles it) reuses the answer: its groups are
    not traced again."""
    import autocompress.analysis.probe as probe

    first = probe_groups(time_major.model, time_major.example_inputs, ["fc"])
    entries = len(probe._CACHE)
    copied = copy.deepcopy(time_major.model)
    assert probe_groups(copied, time_major.example_inputs, ["fc"]) == first
    assert len(probe._CACHE) == entries
