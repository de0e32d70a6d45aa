"""A 16-trial search on a CNN we did not write for the search: a grouped 3x3 conv (groups=4)
concatenated with a 1x1 branch, a depthwise block and residual adds (``tests/_support/models.py``'s
``grouped_concat_task``), over the ``default`` space, on the Ray backend.

    .venv/bin/python benchmarks/grouped_search.py [--trials 16] [--epochs 1]

Prints and writes (benchmarks/results/grouped_search.json): trials per state (failed must be
0); for every complete trial, whether each layer record's achieved ratio and kept channels
match the output channels stored in its artifact; and the dimension of the ``default`` space
on the digits ResNet: one prune parameter per layer (before the dependency groups) against one
per coupled group (now).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import RESULTS, ROOT

from autocompress.api import run_search
from autocompress.study.config import SearchConfig
from autocompress.study.space import load_space
from autocompress.targets import get_target
from autocompress.targets.runtimes import read_torch_artifact as read
from autocompress.task import load_task

TASK = f"{ROOT / 'tests' / '_support' / 'models.py'}:grouped_concat_task"


def stored_rows(artifact: Path) -> dict[str, int]:
    """Output channels of each layer as stored in a torch artifact (dense, int8, fp16 or
    packed low-bit weights)."""
    _, tensors = read(artifact)
    rows: dict[str, int] = {}
    for key, t in tensors.items():
        base, _, kind = key.rpartition(".")
        if kind == "weight":
            rows[base] = int(t.shape[0])
        elif kind in ("int8", "fp16") and base.endswith(".weight"):
            rows[base.removesuffix(".weight")] = int(t.shape[0])
        elif kind == "shape" and base.endswith(".weight"):
            rows[base.removesuffix(".weight")] = int(t[0])
    return rows


def check_trial(record: dict[str, Any], artifact: Path) -> list[str]:
    """The records of one trial that disagree with its artifact (empty: all match)."""
    rows = stored_rows(artifact)
    wrong = []
    for path, rec in record["metrics"]["layers"].items():
        if "channels_kept" not in rec:
            continue
        achieved = 1 - rec["channels_kept"] / rec["channels_original"]
        if rows.get(path) != rec["channels_kept"] or abs(achieved - rec["prune"]) > 1e-6:
            wrong.append(f"{path}: record {rec['channels_kept']}, artifact {rows.get(path)}")
    return wrong


def dimension(task_spec: str, space: str = "default") -> dict[str, Any]:
    """Prune parameters of the space on a model: one per prunable layer vs one per group."""
    task = load_task(task_spec)
    resolved = load_space(space).resolve(
        task.model,
        task.example_inputs,
        output_layers=task.output_layers,
        supported_bits=get_target("torch").bits,
    )
    prunable = [layer.path for layer in resolved.layers if layer.prune_param]
    groups = sorted({layer.prune_param for layer in resolved.layers if layer.prune_param})
    return {
        "prunable_layers": len(prunable),
        "prune_parameters_before": len(prunable),
        "prune_parameters_now": len(groups),
        "dimension_now": len(resolved.param_names),
        "dimension_before": len(resolved.param_names) - len(groups) + len(prunable),
        "groups": groups,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--backend", choices=("ray", "local"), default="ray")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="grouped-search-") as tmp:
        config = SearchConfig(
            name="grouped-concat",
            task=TASK,
            search_space="default",
            objectives="accuracy-size-latency",
            trials=args.trials,
            epochs=args.epochs,
            backend=args.backend,
            tracking=False,
            report_every=0,
            keep_models="all",
            out=str(Path(tmp) / "run"),
        )
        result = run_search(config)
        states = collections.Counter(r["state"] for r in result.trials)
        checked, mismatches = 0, {}
        for record in result.trials:
            if record["state"] != "complete":
                continue
            artifact = result.run_dir / "trials" / str(record["number"]) / "model.pt"
            wrong = check_trial(record, artifact)
            checked += 1
            if wrong:
                mismatches[record["number"]] = wrong
        errors = sorted({r["error"] for r in result.trials if r["state"] == "failed"})
    digits = dimension(f"{ROOT / 'examples' / 'digits' / 'task.py'}:build_task")
    document = {
        "command": f"benchmarks/grouped_search.py --trials {args.trials} --epochs {args.epochs}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "backend": args.backend,
        "trials": len(result.trials),
        "states": dict(states),
        "failed_errors": errors,
        "complete_checked_against_artifact": checked,
        "record_artifact_mismatches": mismatches,
        "digits_default_space": digits,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "grouped_search.json").write_text(json.dumps(document, indent=2))
    print(f"trials {len(result.trials)}: {dict(states)}; failed errors: {errors or 'none'}")
    print(
        f"complete trials whose records match the artifact: {checked - len(mismatches)}/{checked}"
    )
    print(
        f"digits ResNet `default` space: prune parameters {digits['prune_parameters_before']} "
        f"(one per layer) -> {digits['prune_parameters_now']} (one per group); dimension "
        f"{digits['dimension_before']} -> {digits['dimension_now']}"
    )


if __name__ == "__main__":
    main()
