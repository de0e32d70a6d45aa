"""One options object per trial (``CompressOptions``) and one hooks object (``TrialHooks``).

The options are built once from a config (or from ``compress``'s keyword arguments), survive
pickling for Ray without their resolved target, and reach the search's trials and ``export``
with the same target options; the target is resolved in one place only.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import pickle
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from _support.models import mlp_task
from conftest import local_config
from onnx import numpy_helper
from torch import nn

from autocompress import Policy, compress
from autocompress.device import CPU, Training
from autocompress.errors import AutoCompressError, ConfigError
from autocompress.measure.timing import MeasureSettings
from autocompress.pipeline import CompressOptions, StopTrial, TrialHooks
from autocompress.study.config import SearchConfig
from autocompress.study.objectives import load_objectives
from autocompress.targets import get_target

PACKAGE = Path(__file__).resolve().parents[2] / "autocompress"
ORT_OPTIONS = {"reduce_range": True, "linear": "dynamic"}
QUICK = MeasureSettings(repeats=20, warmup=2)


def _ort_config(out: Path, **overrides) -> SearchConfig:
    return local_config(
        out,
        target="onnxruntime",
        target_options=dict(ORT_OPTIONS),
        objectives="accuracy-macs",
        trials=1,
        starts=["int8"],
        epochs=0,
        **overrides,
    )


# -- (a) from a config, and through pickle ------------------------------------------------------
def test_options_come_from_the_config_once(tmp_path):
    config = _ort_config(
        tmp_path / "run",
        importance="magnitude",
        seed=7,
        trial_timeout_s=30,
        device="cpu",
        finetune={"precision": "bf16"},
    )
    objectives = load_objectives(config.objectives)
    options = CompressOptions.from_config(config, objectives=objectives)
    assert (options.target_name, options.target_options) == ("onnxruntime", ORT_OPTIONS)
    assert (options.importance, options.seed, options.timeout_s) == ("magnitude", 7, 30)
    assert (options.device, options.precision) == ("cpu", "bf16")
    assert options.settings == MeasureSettings.from_latency(objectives.latency)
    assert options.settings.repeats == 20 and options.settings.batch_size == 1
    assert options.target == get_target("onnxruntime", **ORT_OPTIONS)
    assert options.training == Training.resolve("cpu", precision="bf16")
    # resolved once: a copy for another trial keeps it unless the target's fields change
    assert options.target is options.target
    assert options.replace(seed=8).target is options.target
    assert options.replace(target_options={"linear": "static"}).target.linear == "static"
    assert options.replace(device="cpu", precision="fp32").training.precision == "fp32"
    config.target_options["linear"] = "static"  # the options hold their own copy
    assert options.target_options["linear"] == "dynamic"


def test_options_pickle_without_their_resolved_target_and_device():
    options = CompressOptions.of(
        target="onnxruntime", target_options=ORT_OPTIONS, seed=3, settings=QUICK
    )
    assert options.target.linear == "dynamic" and options.training.device.type in ("cpu", "cuda")
    back = pickle.loads(pickle.dumps(options))
    assert back == options and hash(back) == hash(options)
    # a Ray worker resolves the target and ``device: auto`` for its own machine
    assert "target" not in back.__dict__ and "training" not in back.__dict__
    assert back.device == "auto" and back.target == options.target
    ray_cloudpickle = pytest.importorskip("ray.cloudpickle")
    assert ray_cloudpickle.loads(ray_cloudpickle.dumps(options)) == options


def test_of_takes_compress_keywords_and_their_defaults():
    assert CompressOptions.of() == CompressOptions()
    fields = {f.name for f in dataclasses.fields(CompressOptions)}
    named = set(inspect.signature(CompressOptions.of).parameters)
    # every field can be set by name (``target`` names target_name, ``training`` the device
    # and precision): a new option added to the dataclass alone fails here
    assert fields == (named - {"target", "training"}) | {"target_name", "device", "precision"}
    given = CompressOptions.of(training=CPU)
    assert given.training is CPU and (given.device, given.precision) == ("cpu", "fp32")
    merged = CompressOptions.merged(given, seed=None, importance="magnitude")
    assert (merged.seed, merged.importance, merged.training) == (0, "magnitude", CPU)


def test_a_bad_target_option_fails_on_resolution_in_one_line(tmp_path):
    options = CompressOptions.of(target="onnxruntime", target_options={"nope": 1})
    with pytest.raises(AutoCompressError, match="target 'onnxruntime' has no option 'nope'"):
        options.check()
    with pytest.raises(ConfigError, match="target_options: target 'onnxruntime' has no option"):
        local_config(tmp_path, target="onnxruntime", target_options={"nope": 1})


# -- hooks ---------------------------------------------------------------------------------------
def test_compress_calls_the_hooks_object(tmp_path):
    task = mlp_task()
    stages: list[str] = []
    structures: list[dict] = []
    epochs: list[tuple[int, type]] = []
    hooks = TrialHooks(
        on_stage=stages.append,
        on_structure=structures.append,
        on_epoch=lambda epoch, model: epochs.append((epoch, type(model))),
    )
    policy = Policy.from_dict({"prune": {"default": 0.25}, "finetune": {"epochs": 1}})
    options = CompressOptions.of(settings=QUICK, training="cpu")
    result = compress(task, policy, options=options, hooks=hooks, out_dir=tmp_path / "a")
    assert stages[:2] == ["measure teacher", "prune"] and stages[-2:] == ["convert", "measure"]
    assert "fine-tune epoch 1/1" in stages and "measure structure" in stages
    assert epochs and epochs[0][0] == 0 and issubclass(epochs[0][1], nn.Module)
    assert structures[0]["size_bytes"] > 0
    assert result.metrics["trained_on"]["device"] == "cpu"
    # the loose keyword arguments still work, and change the options object they are given with
    again = compress(task, policy, options=options, seed=1, out_dir=tmp_path / "b", on_stage=None)
    assert again.metrics["target"] == "torch"

    def stop(cost: dict) -> None:
        raise StopTrial("too big")

    with pytest.raises(StopTrial, match="too big"):
        compress(task, policy, options=options, hooks=hooks.replace(on_structure=stop))


# -- (b) a search's trials and its export get the same target options ----------------------------
def _codes(artifact: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(artifact))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_trials_and_export_run_with_the_configs_target_options(tmp_path):
    from autocompress.api import run_search
    from autocompress.reporting.export import export_trial

    config = _ort_config(tmp_path / "run")
    (trial,) = run_search(config).trials
    assert trial["state"] == "complete", trial["error"]
    ort = get_target("onnxruntime")
    kept = tmp_path / "run" / "trials" / "0" / "model.onnx"
    header = ort.read_meta(kept)
    assert (header["reduce_range"], header["linear"]) == (True, "dynamic")
    linears = [p for p, r in trial["metrics"]["layers"].items() if r.get("bits") == 8]
    assert linears
    for path in linears:
        rec = trial["metrics"]["layers"][path]
        assert rec["weight_range"] == 7 and rec["op"] == "DynamicQuantizeMatMul"

    copied = export_trial(tmp_path / "run", 0, tmp_path / "copied", fmt="onnx")
    assert copied["layers"] == trial["metrics"]["layers"]

    # not kept: export re-materializes it, with the search's options (7-bit, dynamic Linear)
    shutil.rmtree(tmp_path / "run" / "trials" / "0")
    rebuilt = export_trial(tmp_path / "run", 0, tmp_path / "rebuilt", fmt="onnx")
    header = ort.read_meta(tmp_path / "rebuilt" / "model.onnx")
    assert (header["reduce_range"], header["linear"]) == (True, "dynamic")
    for path in linears:
        assert rebuilt["layers"][path]["op"] == "DynamicQuantizeMatMul"
        assert rebuilt["layers"][path]["weight_range"] == 7
    want, got = (
        _codes(tmp_path / "copied" / "model.onnx"),
        _codes(tmp_path / "rebuilt" / "model.onnx"),
    )
    assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)


# -- (c) the target is resolved in one place -----------------------------------------------------
# where ``get_target(`` may be called: the options object resolves a target with its options
# (once per options object and process); ``load_artifact`` loads a file by the target its header
# names (loading reads everything else from the header)
ALLOWED = {
    ("autocompress.pipeline.options", "CompressOptions.target"): "the one resolution",
    ("autocompress.pipeline._artifact", "load_artifact"): "an artifact's recorded target",
}


def get_target_calls(source: str, module: str) -> set[tuple[str, str]]:
    """(module, enclosing def) of every ``get_target(...)`` call in ``source``."""
    found: set[tuple[str, str]] = set()

    def visit(node: ast.AST, where: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            here = where
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                here = [*where, child.name]
            if isinstance(child, ast.Call):
                func = child.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name == "get_target":
                    found.add((module, ".".join(where) or "<module>"))
            visit(child, here)

    visit(ast.parse(source), [])
    return found


def test_the_call_finder_finds_calls():
    source = "def f():\n    return targets.get_target('torch')\nclass A:\n    x = get_target('x')\n"
    assert get_target_calls(source, "m") == {("m", "f"), ("m", "A")}


def test_get_target_is_called_only_where_allowed():
    calls: set[tuple[str, str]] = set()
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        calls |= get_target_calls(path.read_text(), module)
    assert calls == set(ALLOWED), "resolve a target as CompressOptions(...).target"
