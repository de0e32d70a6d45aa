from __future__ import annotations

import pytest

from autocompress import Task, load_task
from autocompress.errors import TaskError


def test_load_from_module_and_from_file(tmp_path):
    task = load_task("_support.tasks:mlp")  # package.module:function form (tests/ is on the path)
    assert isinstance(task, Task) and task.spec == "_support.tasks:mlp"
    path = tmp_path / "job.py"
    path.write_text("from _support.tasks import mlp\n\ndef build():\n    return mlp()\n")
    assert isinstance(load_task(f"{path}:build"), Task)
    assert isinstance(load_task("job.py:build", base_dir=tmp_path), Task)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tasks", "must look like"),
        ("nowhere.py:build", "task file nowhere.py does not exist"),
        ("no_such_module_xyz:build", "cannot import task module 'no_such_module_xyz'"),
        ("_support.tasks:missing", "has no function 'missing'"),
        ("_support.models:MLP", "returned MLP, not a Task"),
        ("_support.models:Block", r"Block\(\) raised TypeError"),
    ],
)
def test_bad_task_specs(spec, message):
    with pytest.raises(TaskError, match=message):
        load_task(spec)


def test_task_validates_its_fields():
    from _support.models import MLP

    with pytest.raises(TaskError, match="must be a torch.nn.Module"):
        Task(model="not a model", train_loader=[], val_loader=[], example_inputs=())
    with pytest.raises(TaskError, match="feature_layers names 'nope'"):
        Task(
            model=MLP(), train_loader=[], val_loader=[], example_inputs=(), feature_layers=["nope"]
        )
