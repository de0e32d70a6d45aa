"""Our rows in the compression table: a finished search's best point within the accuracy
budget, and a hand-written policy applied with ``compress`` (no search)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from _common import ROOT
from _peers import Contender, Session

from autocompress import compress
from autocompress.errors import AutoCompressError
from autocompress.policy import load_policy
from autocompress.reporting import export_trial, pick_trial
from autocompress.study.config import SearchConfig
from autocompress.study.rundir import RunDir
from autocompress.targets import TARGETS, get_target
from autocompress.task import Task


def _note(notes: list[str], text: str) -> None:
    print(f"note: {text}", flush=True)
    notes.append(text)


def search_point(
    task: Task,
    max_drop: float,
    target: str,
    run_dir: Path,
    work: Path,
    *,
    by: str,
    notes: list[str],
) -> Contender | None:
    """The run's best Pareto point within the budget, exported; None (with a note) if absent."""
    if target not in TARGETS:
        _note(notes, f"target {target!r} is not registered in this build: its row is skipped")
        return None
    if not (run_dir / "pareto.json").exists():
        _note(notes, f"{run_dir}: no finished search for target {target!r} (no pareto.json)")
        return None
    config = SearchConfig.from_dict(RunDir(run_dir).read_config(), source=str(run_dir))
    if target not in config.all_targets:
        measured = ", ".join(config.all_targets)
        _note(notes, f"{run_dir} is a search on target(s) {measured}, not {target!r}: skipped")
        return None
    several = target if len(config.all_targets) > 1 else None  # that target's own front
    try:
        number = pick_trial(run_dir, max_accuracy_drop=max_drop, by=by, target=several)
    except AutoCompressError as exc:
        _note(notes, f"{target}: {exc}")
        return None
    out = work / f"trial-{target}-{number}"
    tgt = get_target(target)
    recorded = export_trial(run_dir, number, out, fmt=tgt.native_format, target=several)
    artifact = out / tgt.artifact_name
    info = {
        "run_dir": str(run_dir),
        "trial": number,
        "policy": json.loads((out / "policy.json").read_text()),
        "recorded": {k: recorded.get(k) for k in _RECORDED},
    }
    return Contender(
        f"search {target} trial #{number}", *_deployed(task, target, artifact), "search", info
    )


_RECORDED = ("accuracy", "size_bytes", "latency_ms")


def _deployed(task: Task, target: str, artifact: Path) -> tuple[str, torch.nn.Module, Path]:
    """Runtime (the target's name), model and artifact of a ``target`` artifact (ORT: a
    ``Session`` like the teacher's, so its ops are recorded too)."""
    if target == "onnxruntime":
        return "onnxruntime", Session(artifact), artifact
    return target, get_target(target).load(artifact, task.model), artifact


def policy_point(
    task: Task,
    target: str,
    policy_file: Path,
    work: Path,
    *,
    notes: list[str],
    teacher: dict[str, Any] | None = None,
) -> Contender | None:
    """A hand-written policy applied with ``compress`` on ``target`` (no search); ``teacher``:
    the teacher's figures on ``target`` (measured by ``compress`` when not given)."""
    if target not in TARGETS:
        _note(notes, f"target {target!r} is not registered in this build: its row is skipped")
        return None
    policy = load_policy(policy_file)
    out = work / f"policy-{policy_file.stem}-{target}"
    print(f"compress {policy_file.name} on {target}", flush=True)
    result = compress(task, policy, out_dir=out, target=target, teacher=teacher)
    modes: dict[str, int] = {}
    for rec in result.metrics["layers"].values():
        key = " ".join(str(rec[k]) for k in ("mode", "op") if rec.get(k))
        modes[key] = modes.get(key, 0) + 1
    info = {
        "policy_file": str(
            policy_file.relative_to(ROOT) if policy_file.is_relative_to(ROOT) else policy_file
        ),
        "policy": policy.to_dict(),
        "layer_modes": modes,
        "recorded": {k: result.metrics.get(k) for k in _RECORDED},
    }
    name = f"ours: {policy_file.stem} policy on {target}"
    return Contender(name, *_deployed(task, target, result.artifact), "policy", info)
