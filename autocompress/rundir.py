"""The run directory: resolved config, Optuna storage, trials.jsonl, pareto.json, models.

``trials.jsonl`` is append-only, one JSON object per finished trial, flushed and fsynced
before the sampler is told, so a killed driver loses no finished trial.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

STATES = ("complete", "infeasible", "failed", "pruned")
FORMAT = 1  # of the run directory; read_config refuses any other


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def trials_file(self) -> Path:
        return self.path / "trials.jsonl"

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{(self.path / 'study.db').resolve()}"

    def trial_dir(self, number: int) -> Path:
        return self.path / "trials" / str(number)

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: Mapping[str, Any]) -> None:
        data = {"format": FORMAT, **config}
        (self.path / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        path = self.path / "config.yaml"
        if not path.exists():
            raise ConfigError(f"{self.path} is not a run directory (no config.yaml)")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        found = data.pop("format", None) if isinstance(data, dict) else None
        if found != FORMAT:
            raise ConfigError(
                f"{path}: run directory format {found!r}, this autocompress reads format "
                f"{FORMAT}; use the autocompress version that wrote it or start a new --out"
            )
        return data

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, allow_nan=False, default=str)
        with self.trials_file.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def records(self) -> list[dict[str, Any]]:
        """Finished trials, one per number (a torn last line from a killed writer is skipped)."""
        if not self.trials_file.exists():
            return []
        out: dict[int, dict[str, Any]] = {}
        lines = self.trials_file.read_text().splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:
                    continue
                raise ConfigError(f"{self.trials_file}:{i + 1}: not a JSON trial record") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("number"), int):
                raise ConfigError(f"{self.trials_file}:{i + 1}: a trial record needs a number")
            out.setdefault(rec["number"], rec)
        return [out[n] for n in sorted(out)]

    def write_json(self, name: str, data: Any) -> Path:
        path = self.path / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        tmp.replace(path)
        return path


def read_json(path: Path) -> dict[str, Any]:
    """A run directory's JSON file; a damaged one is a one-line ConfigError naming it."""
    fix = "`autocompress search --resume` on this run directory rewrites it"
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: damaged, not valid JSON ({exc.msg} at line {exc.lineno}); {fix}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: damaged, a JSON {type(data).__name__} not an object; {fix}")
    return data


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    better = False
    for x, y, d in zip(a, b, directions, strict=True):
        if d == "minimize":
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            better = True
    return better


def pareto_records(
    records: Iterable[Mapping[str, Any]], metrics: Sequence[str], directions: Sequence[str]
) -> list[Mapping[str, Any]]:
    """Complete (feasible) records that no other complete record dominates."""
    done = [r for r in records if r["state"] == "complete"]
    vals = [[float(r["metrics"][m]) for m in metrics] for r in done]
    return [
        r
        for r, v in zip(done, vals, strict=True)
        if not any(dominates(w, v, directions) for w in vals if w is not v)
    ]
