"""The bad-input catalogue: every case through the real CLI, answered with exit code 2 and one
line naming what and where, never a traceback (issue 12, item 6)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from _support import faults
from _support.study_inputs import QUICK_SEARCH_YAML, write_yaml
from typer.testing import CliRunner

from autocompress.cli import app
from autocompress.study.config import SearchConfig

pytestmark = pytest.mark.faults

TESTS = Path(__file__).resolve().parents[1]
MLP = f"{TESTS}/_support/tasks.py:mlp"
FAULTY = f"{TESTS}/_support/faulty_tasks.py"


def answer(args: list[str], *expected: str) -> str:
    """Run the CLI; assert the clean answer (exit 2, one error line holding ``expected``)."""
    result = CliRunner().invoke(app, args)
    err = result.stderr
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    clean = (
        result.exit_code == 2
        and len(lines) == 1
        and err.rstrip().endswith(lines[0])
        and "Traceback" not in result.output
        and all(text in lines[0] for text in expected)
    )
    faults.bad_input(clean=clean)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(lines) == 1, err
    assert err.rstrip().endswith(lines[0]), err  # nothing after the error line
    assert "Traceback" not in result.output
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def write_config(tmp: Path, **keys) -> str:
    data = {
        **QUICK_SEARCH_YAML,
        "name": "bad",
        "task": MLP,
        "backend": "local",
        "tracking": False,
        "trials": 3,
        "epochs": 0,
        "report_every": 0,
        "out": str(tmp / "run"),
        **keys,
    }
    if "baselines" in keys:  # the older name of starts
        data.pop("starts")
    return write_yaml(tmp, "search.yaml", data)


# -- config keys: a wrong value for every key ------------------------------------------------
WRONG_VALUES = {
    "name": 5,
    "task": 3,
    "search_space": [],
    "objectives": 1,
    "target": 7,
    "target_options": ["reduce_range"],
    "trials": 0,
    "sampler": "grid",
    "seed": "x",
    "backend": "slurm",
    "starts": 5,
    "importance": "random",
    "epochs": -1,
    "keep_models": "some",
    "report_every": -1,
    "tracking": "yes",
    "tracking_uri": 5,
    "experiment": [],
    "address": 1,
    "max_concurrent": 0,
    "scheduler": "pbt",
    "out": 5,
    "trial_timeout_s": "10s",
    "fail_fast_after": -2,
    "device": "gpu",
    "finetune": {"precisio": "bf16"},
    "resources_per_trial": {"cpu": -1},
    "budget": "3 weeks",
    "targets": ["torch", "nosuch"],
    "objective_target": 7,
    "polish": {"candidates": 0},
}


def test_the_catalogue_covers_every_config_key():
    assert set(WRONG_VALUES) == {f.name for f in fields(SearchConfig)} - {"base_dir"}


@pytest.mark.parametrize("key", sorted(WRONG_VALUES))
def test_wrong_type_for_a_config_key(tmp_path, key):
    cfg = write_config(tmp_path, **{key: WRONG_VALUES[key]})
    answer(["search", cfg], "search.yaml", f"{key}:")


def test_bad_polish_settings_name_the_key(tmp_path):
    answer(["search", write_config(tmp_path, polish={"candidates": 0})], "polish.candidates")
    answer(["search", write_config(tmp_path, polish={"epoch": 3})], "polish.epoch", "allowed")
    answer(["search", write_config(tmp_path, polish={"schedule": "step"})], "polish.schedule")
    answer(["search", write_config(tmp_path, polish="yes")], "polish:", "mapping")


def test_bad_halving_rungs_or_eta(tmp_path):
    bad_rungs = {"name": "halving", "rungs": [0, "full", 1]}
    answer(
        ["search", write_config(tmp_path, scheduler=bad_rungs)], "search.yaml", "scheduler.rungs"
    )
    bad_eta = {"name": "halving", "eta": 1.5}
    answer(["search", write_config(tmp_path, scheduler=bad_eta)], "search.yaml", "scheduler.eta")


def test_unknown_target_option_in_a_config(tmp_path):
    cfg = write_config(tmp_path, target="onnxruntime", target_options={"reduce_rang": True})
    answer(["search", cfg], "search.yaml", "target_options", "'reduce_rang'")


def test_a_ray_only_key_on_backend_local(tmp_path):
    for key, value in (("max_concurrent", 2), ("resources_per_trial", {"cpu": 1, "gpu": 0.5})):
        cfg = write_config(tmp_path, **{key: value})
        answer(["search", cfg], "search.yaml", f"{key}:", "only the ray backend")


def test_a_device_that_is_not_here(tmp_path):
    base = _json_policy(tmp_path, {"quant": {"default": 8}})
    answer([*base, "--device", "cuda:99"], "device: 'cuda:99'")  # no machine has 100 GPUs
    answer([*base, "--device", "tpu"], "device: 'tpu'", "auto, cpu, cuda or cuda:N")
    answer([*base, "--device", "cpu", "--precision", "fp16"], "finetune.precision", "CUDA")
    answer(["search", write_config(tmp_path), "--device", "cuda:99"], "device: 'cuda:99'")
    answer(["search", write_config(tmp_path), "--precision", "fp8"], "finetune", "fp8")


def test_bad_target_option_on_apply(tmp_path):
    base = _json_policy(tmp_path, {"quant": {"default": 8}})
    answer([*base, "--target", "onnxruntime", "--target-option", "linr=dynamic"], "'linr'")
    answer([*base, "--target", "onnxruntime", "--target-option", "linear=fast"], "linear 'fast'")
    answer([*base, "--target-option", "reduce_range"], "--target-option", "KEY=VALUE")


def test_unknown_baseline_name(tmp_path):
    answer(["search", write_config(tmp_path, baselines=["int5"])], "baselines", "int5")


# -- files that are not what they should be --------------------------------------------------
def _malformed_yaml(tmp: Path) -> list[str]:
    path = tmp / "search.yaml"
    path.write_text("name: [x\ntask: y\n")
    return ["search", str(path)]


def _json_policy(tmp: Path, policy, task: str = MLP) -> list[str]:
    path = tmp / "policy.json"
    path.write_text(policy if isinstance(policy, str) else json.dumps(policy))
    return ["apply", "--task", task, "--policy", str(path), "--out", str(tmp / "out")]


def _apply(faulty: str, policy: dict) -> Callable[[Path], list[str]]:
    """``apply`` of ``policy`` to the faulty task ``faulty``."""
    return lambda tmp: _json_policy(tmp, policy, task=f"{FAULTY}:{faulty}")


def _space(tmp: Path, data) -> list[str]:
    return ["search", write_config(tmp, search_space=write_yaml(tmp, "space.yaml", data))]


def _objectives(tmp: Path, data) -> list[str]:
    return ["search", write_config(tmp, objectives=write_yaml(tmp, "obj.yaml", data))]


def _task(spec: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["search", write_config(tmp, task=spec)]


def _out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "taken").write_text("not a directory")
    return ["search", write_config(tmp, out=str(tmp / "taken"))]


CASES: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]] = {
    "malformed YAML": (_malformed_yaml, ("search.yaml", "not valid YAML", "line")),
    "malformed JSON policy": (lambda t: _json_policy(t, "{"), ("policy.json", "not valid JSON")),
    "unknown config key": (
        lambda t: ["search", write_config(t, trails=3)],
        ("search.yaml", "unknown key 'trails'"),
    ),
    "unknown policy key": (lambda t: _json_policy(t, {"prun": {}}), ("policy.json", "prun")),
    "unknown space key": (lambda t: _space(t, {"rulez": []}), ("space.yaml", "rulez")),
    "unknown objectives key": (
        lambda t: _objectives(t, {"objectives": [], "limits": []}),
        ("obj.yaml", "limits"),
    ),
    "prune ratio out of range": (
        lambda t: _json_policy(t, {"prune": {"default": 1.5}}),
        ("policy.json", "prune.default", "1.5"),
    ),
    "alpha out of range": (
        lambda t: _json_policy(t, {"distill": {"alpha": 2}}),
        ("policy.json", "alpha"),
    ),
    "bits the target does not offer (policy)": (
        lambda t: _json_policy(t, {"quant": {"default": 5}}),
        ("policy.json", "quant.default", "5"),
    ),
    "bits the target does not offer (space)": (
        lambda t: _space(t, {"rules": [{"type": ["Linear"], "bits": {"choices": [5, 8]}}]}),
        ("space.yaml",),
    ),
    "glob matching no layer": (
        lambda t: _json_policy(t, {"prune": {"layers": {"decoder.*": 0.5}}}),
        ("decoder.*", "matches no"),
    ),
    "task file that does not exist": (_task(f"{TESTS}/nope.py:mlp"), ("nope.py", "does not exist")),
    "task function that does not exist": (
        _task(f"{TESTS}/_support/tasks.py:nope"),
        ("no function 'nope'",),
    ),
    "task module that does not exist": (_task("no_such_pkg.tasks:build"), ("no_such_pkg",)),
    "task function returning the wrong type": (
        _task(f"{FAULTY}:not_a_task"),
        ("not_a_task()", "returned dict, not a Task"),
    ),
    "task function raising": (_task(f"{FAULTY}:raises"), ("raises()", "data folder is missing")),
    "model failing on its example inputs": (
        _task(f"{FAULTY}:fails_on_example_inputs"),
        ("faulty_tasks.py", "module 'head' (Linear)", "example_inputs"),
    ),
    "model the pruner cannot trace": (
        _apply("untraceable", {"prune": {"layers": {"fc1": 0.5}}}),
        # probed once per model: a default ratio keeps the group (recorded), a layer asked
        # explicitly is refused naming its group and the module where the shapes break
        ("prune.layers['fc1']", "group fc1", "module 'head'", "set it to 0"),
    ),
    "empty data loader": (_task(f"{FAULTY}:empty_loader"), ("train_loader is empty",)),
    "a layer asked explicitly whose group cannot be pruned": (
        _apply("hard_coded_width", {"prune": {"layers": {"conv2": 0.5}}}),
        ("prune.layers['conv2']", "group conv2", "breaks the shapes", "after 'bn2'"),
    ),
    "model replaced after construction, failing on its example inputs": (
        _task(f"{FAULTY}:model_replaced"),
        ("model_replaced", "module 'head' (Linear)", "example_inputs"),
    ),
    "training loader emptied after construction, epochs > 0 (search)": (
        lambda t: ["search", write_config(t, task=f"{FAULTY}:train_loader_emptied", epochs=1)],
        ("train_loader yielded no batch", "1 epoch"),
    ),
    "training loader emptied after construction, epochs > 0 (apply)": (
        _apply("train_loader_emptied", {"finetune": {"epochs": 1}}),
        ("train_loader yielded no batch", "1 epoch"),
    ),
    "float targets with the default loss and metric": (
        _task(f"{FAULTY}:float_targets"),
        ("float_targets", "loss (default: cross-entropy)", "takes class indices", "float32"),
    ),
    "float targets with the default metric": (
        _task(f"{FAULTY}:float_targets_own_loss"),
        ("metric (default: top-1 accuracy)", "integer class indices", "float32"),
    ),
    "a task loss failing on the data": (
        _task(f"{FAULTY}:loss_fails_on_data"),
        ("loss (binary_cross_entropy_with_logits) fails", "first training batch"),
    ),
    "objective naming an unknown metric": (
        lambda t: _objectives(t, {"objectives": [{"metric": "acuracy", "direction": "maximize"}]}),
        ("obj.yaml", "acuracy"),
    ),
    "constraint no trial met": (
        lambda t: _objectives(
            t,
            {
                "objectives": [
                    {"metric": "accuracy", "direction": "maximize"},
                    {"metric": "size_bytes", "direction": "minimize"},
                ],
                "constraints": [{"metric": "size_bytes", "max_ratio": 0.01}],
            },
        ),
        ("no trial met the constraints", "size_bytes", "run"),
    ),
    "--out that is a file": (_out_is_a_file, ("taken", "is a file")),
    "unknown sampler on the command line": (
        lambda t: ["search", write_config(t), "--sampler", "grid"],
        ("sampler",),
    ),
    "resume with nothing to resume": (
        lambda t: ["search", write_config(t), "--resume"],
        ("--resume", "no search to resume"),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(tmp_path, case):
    build, expected = CASES[case]
    answer(build(tmp_path), *expected)


# -- damaged run directories -----------------------------------------------------------------
@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    from autocompress.api import run_search

    root = tmp_path_factory.mktemp("good")
    cfg = SearchConfig.from_dict(
        yaml.safe_load(Path(write_config(root, report_every=0)).read_text()),
        source="search.yaml",
    )
    run_search(cfg)
    return root / "run"


def _damage(run: Path, kind: str) -> None:
    if kind == "malformed pareto.json":
        (run / "pareto.json").write_text('{"trials": [')
    elif kind == "pareto.json not an object":
        (run / "pareto.json").write_text("[]")
    elif kind == "trials.jsonl damaged mid-file":
        lines = (run / "trials.jsonl").read_text().splitlines()
        lines[0] = lines[0][:25]
        (run / "trials.jsonl").write_text("\n".join(lines) + "\n")
    elif kind == "incompatible version":
        text = (run / "config.yaml").read_text().replace("format: 1", "format: 99")
        (run / "config.yaml").write_text(text)


DAMAGED = {
    ("malformed pareto.json", "report"): ("pareto.json", "damaged"),
    ("malformed pareto.json", "compare"): ("pareto.json", "damaged"),
    ("malformed pareto.json", "export"): ("pareto.json", "damaged"),
    ("pareto.json not an object", "report"): ("pareto.json", "not an object"),
    ("trials.jsonl damaged mid-file", "report"): ("trials.jsonl:1",),
    ("trials.jsonl damaged mid-file", "export"): ("trials.jsonl:1",),
    ("trials.jsonl damaged mid-file", "compare"): ("trials.jsonl:1",),
    ("trials.jsonl damaged mid-file", "resume"): ("trials.jsonl:1",),
    ("incompatible version", "resume"): ("config.yaml", "format 99"),
    ("incompatible version", "export"): ("config.yaml", "format 99"),
    ("incompatible version", "sync"): ("config.yaml", "format 99"),
}


@pytest.mark.parametrize(("kind", "command"), sorted(DAMAGED))
def test_damaged_run_directory(good_run, tmp_path, kind, command):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    _damage(run, kind)
    args = {
        "report": ["report", str(run)],
        "compare": ["compare", str(run), str(good_run), "--out", str(tmp_path / "cmp")],
        "export": ["export", str(run), "--pick", "--out", str(tmp_path / "exp")],
        "resume": ["search", write_config(tmp_path, trials=4), "--resume"],
        "sync": ["sync", str(run), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"],
    }[command]
    if command == "export" and kind != "malformed pareto.json":
        args = ["export", str(run), "--trial", "0", "--out", str(tmp_path / "exp")]
    answer(args, *DAMAGED[kind, command])


def test_a_torn_last_line_is_skipped_not_an_error(good_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    text = (run / "trials.jsonl").read_text()
    (run / "trials.jsonl").write_text(text[: len(text) - 40])  # a killed writer's last line
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
