"""Export a trial's deployable model from a run directory (re-materialized when not kept)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from autocompress.errors import ConfigError
from autocompress.measure.metrics import METRICS, comparable
from autocompress.measure.timing import threads
from autocompress.pipeline._compress import MeasureSettings, compress, load_artifact
from autocompress.pipeline.options import CompressOptions
from autocompress.policy import Policy
from autocompress.study._polish_plan import with_polish
from autocompress.study.config import SearchConfig
from autocompress.study.objectives import load_objectives
from autocompress.study.records import TrialState
from autocompress.study.rundir import RunDir
from autocompress.targets import TARGETS, export_formats
from autocompress.task import load_task

# short names ``--by`` also takes for two registered metrics
PICK_ALIASES = {"size": "size_bytes", "latency": "latency_ms"}


def pick_choices() -> tuple[str, ...]:
    """What ``--by`` takes: the short names, then every registered metric."""
    return (*PICK_ALIASES, *METRICS)


def pick_trial(
    run_dir: str | Path, *, max_accuracy_drop: float, by: str = "size", target: str | None = None
) -> int:
    """The best Pareto point by ``by`` (a registered metric, in its direction: the smallest,
    the fastest, ...) within ``max_accuracy_drop`` of the teacher's accuracy; with ``target``
    (a several-target search), from that target's front against its teacher on that runtime."""
    name = PICK_ALIASES.get(by, by)
    if name not in METRICS:
        raise ConfigError(f"--by {by!r}: choose from {', '.join(pick_choices())}")
    path = Path(run_dir) / "pareto.json"
    if not path.exists():
        raise ConfigError(f"{run_dir} has no pareto.json; run a search first")
    doc = RunDir(run_dir).read_pareto()
    if target is not None and target in (doc.get("fronts") or {}):
        doc = {"teacher": doc["teacher"]["targets"][target], "trials": doc["fronts"][target]}
    teacher = doc["teacher"]["accuracy"]
    ok = [t for t in doc["trials"] if teacher - t["metrics"]["accuracy"] <= max_accuracy_drop]
    if not ok:
        raise ConfigError(
            f"no Pareto point of {run_dir} is within {max_accuracy_drop} of the teacher's "
            f"accuracy {teacher:.4f}; raise --max-accuracy-drop"
        )
    measured = [t for t in ok if comparable(t, name, doc["teacher"]) is not None]
    if not measured:
        raise ConfigError(f"--by {by}: no Pareto point of {run_dir} within the bound has {name}")
    sign = 1.0 if METRICS[name].direction == "minimize" else -1.0
    # timings on the run teacher's scale (a cluster's nodes compared by their ratios)
    best = min(measured, key=lambda t: sign * (comparable(t, name, doc["teacher"]) or 0.0))
    return best["number"]


def export_trial(
    run_dir: str | Path,
    number: int,
    out: str | Path,
    *,
    fmt: str = "torch",
    target: str | None = None,
) -> dict[str, Any]:
    """Write the deployable model of trial ``number`` with its policy.json and metrics.json.

    A model the search did not keep is rebuilt from its recorded policy and seed (pruning and
    fine-tuning are deterministic) and measured again; the fresh metrics are written. With
    ``fmt="onnx"`` the ONNX file is measured by ONNX Runtime (its bytes, its latency, the task
    metric computed with it, the teacher exported and timed the same way) and those figures
    go to ``metrics.onnx.json``, returned. A search on the ``onnxruntime`` target already
    holds its ``model.onnx`` (int8 kernels, measured in the search): ``fmt="onnx"`` copies it.
    ``target``: a search measured on several targets exports that target's artifact (see
    :func:`_export_on`); None or the objective target: as above.
    """
    rd = RunDir(run_dir)
    config = SearchConfig.from_dict(rd.read_config(), source=str(rd.path / "config.yaml"))
    # a polished trial exports its polished artifact (trials/N/polish/) and figures
    records = {r["number"]: r for r in with_polish(rd.records(), rd.polishes())}
    if number not in records:
        raise ConfigError(f"{run_dir}: no trial {number} in trials.jsonl")
    record = records[number]
    if record["state"] != TrialState.COMPLETE:
        raise ConfigError(f"{run_dir}: trial {number} is {record['state']}, not complete")
    if target is not None and target not in config.all_targets:
        raise ConfigError(
            f"{run_dir}: --target {target!r}: the search measured target(s) "
            f"{', '.join(config.all_targets)}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    options = CompressOptions.from_config(config)  # latency settings: read below, when measuring
    if target is not None and target != config.target:
        return _export_on(rd, config, options, record, target, out, fmt)
    target = options.target
    native = target.native_format  # the format its own artifact is copied under
    if fmt not in export_formats():
        raise ConfigError(f"--format {fmt!r}: choose from {', '.join(export_formats())}")
    if fmt != native and fmt not in target.export_conversions:
        owner = next((t.name for t in TARGETS.values() if t.native_format == fmt), None)
        if owner is not None:
            raise ConfigError(
                f"{run_dir}: --format {fmt} copies the artifact of a search on target "
                f"{owner!r}; this search ran on target {target.name!r}: export it with "
                f"--format {native}"
            )
        raise ConfigError(
            f"{run_dir}: the search ran on target {target.name!r}, whose artifact is "
            f"{target.artifact_name}; export it with --format {native}"
        )
    kept = _kept(rd, record)
    if (kept / target.artifact_name).exists():
        files = [f.name for f in target.files(kept / target.artifact_name) if f.exists()]
        for name in (*files, "policy.json", "metrics.json"):
            shutil.copy2(kept / name, out / name)
        if fmt == native:
            return json.loads((out / "metrics.json").read_text())
    if ":" not in config.task:
        raise ConfigError(
            f"{run_dir}: trial {number}'s model was not kept and the search's task was given from "
            "Python, not as file.py:function; rebuild it with autocompress.compress(task, policy)"
        )
    task = load_task(config.task)
    options = options.replace(
        settings=MeasureSettings.from_latency(load_objectives(config.objectives).latency)
    )
    settings = options.settings
    if (out / target.artifact_name).exists():
        deployed = load_artifact(out / target.artifact_name, task.model)
        metrics = json.loads((out / "metrics.json").read_text())
    else:
        options = _as_trained(options, config, record)
        with threads(settings.threads):
            result = compress(
                task, Policy.from_dict(record["policy"]), options=options, out_dir=out
            )
        deployed, metrics = result.model, result.metrics
    if fmt != native:  # a torch-target model exported to float ONNX and measured by ORT
        from autocompress.targets.onnx import export_measured

        metrics = export_measured(task, deployed, metrics, out, settings=settings)
    return metrics


def _kept(rd: RunDir, record: dict[str, Any]) -> Path:
    """Where the search kept the trial's artifact: its polished one when it was polished."""
    number = record["number"]
    return rd.polish_dir(number) if record.get("polished") else rd.trial_dir(number)


def _as_trained(
    options: CompressOptions, config: SearchConfig, record: dict[str, Any]
) -> CompressOptions:
    """As in the search: bit-identical re-materialization, on the device it trained on."""
    trained = (record.get("metrics") or {}).get("trained_on") or {}
    return options.replace(
        seed=record.get("seed", config.seed + record["number"]),
        device=trained.get("device", "cpu"),
        precision=trained.get("precision") or "fp32",
    )


def _export_on(
    rd: RunDir,
    config: SearchConfig,
    options: CompressOptions,
    record: dict[str, Any],
    target: str,
    out: Path,
    fmt: str,
) -> dict[str, Any]:
    """Trial ``record``'s artifact on the extra target ``target``: the one the search kept in
    ``trials/N/<target>/``, else the trial rebuilt (fine-tuned as the search did, for the
    objective target) and converted for ``target``; with its policy.json and metrics.json."""
    number, tgt = record["number"], options.for_target(target).target
    entry = ((record.get("metrics") or {}).get("targets") or {}).get(target) or {}
    if "error" in entry:
        raise ConfigError(f"{rd.path}: trial {number} failed on target {target}: {entry['error']}")
    if fmt not in ("torch", tgt.native_format):
        raise ConfigError(
            f"{rd.path}: --target {target} exports that target's artifact: --format "
            f"{tgt.native_format}"
        )
    kept = _kept(rd, record) / target
    if not (kept / tgt.artifact_name).exists():
        if ":" not in config.task:
            raise ConfigError(
                f"{rd.path}: trial {number}'s model was not kept and the search's task was "
                "given from Python; rebuild it with autocompress.compress(task, policy)"
            )
        task = load_task(config.task)
        settings = MeasureSettings.from_latency(load_objectives(config.objectives).latency)
        options = _as_trained(options, config, record).replace(
            settings=settings, targets={target: options.targets[target]}
        )
        kept = out / "rebuilt"
        with threads(settings.threads):
            compress(task, Policy.from_dict(record["policy"]), options=options, out_dir=kept)
        kept = kept / target
    files = [f.name for f in tgt.files(kept / tgt.artifact_name) if f.exists()]
    for name in (*files, "policy.json", "metrics.json"):
        shutil.copy2(kept / name, out / name)
    shutil.rmtree(out / "rebuilt", ignore_errors=True)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["artifact"] = tgt.artifact_name  # beside metrics.json here
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
