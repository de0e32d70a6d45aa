"""The run directory: the one reader and writer of a search's files.

``config.yaml`` (resolved config), ``identity.json`` (what makes the study this study),
``study.db`` (Optuna), ``trials.jsonl`` (append-only, one JSON object per finished trial,
flushed and fsynced before the sampler is told), ``teacher.json`` (the run's teacher),
``pareto.json``, the report files, and ``trials/<n>/`` with each trial's artifact;
after a polish stage, ``polish.jsonl`` (append-only, one record per polished trial, its
``number`` the trial's) and ``trials/<n>/polish/`` with the polished artifact.

Run directories written before the teacher/starts naming still load: ``baseline.json`` is read
when there is no ``teacher.json``, ``pareto.json``'s ``baseline`` as its ``teacher``, and the
config's and identity's ``baselines`` as ``starts``, a trial record's ``baseline`` (the start
policy's name) as its ``start`` and its metrics' ``baseline`` (the teacher's figures) as their
``teacher``. New files use the new names only.

Every file but ``trials.jsonl`` is written atomically: a fsynced temporary file renamed over
the old one, so a killed driver leaves the old or the new file, never half of one. A torn
last line of ``trials.jsonl`` (a writer killed mid-line) is skipped by :func:`read_jsonl`,
the one reader every module uses.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from autocompress.errors import ConfigError

FORMAT = 1  # of the run directory; read_config refuses any other
IDENTITY_FILE = "identity.json"
TEACHER_FILE = "teacher.json"
LEGACY_TEACHER_FILE = "baseline.json"  # written before the teacher/starts naming
# config keys written by earlier versions -> their name now; still read, never written
LEGACY_KEYS = {"baselines": "starts"}


def _current_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A stored config or identity with its legacy keys under their new names."""
    for old, new in LEGACY_KEYS.items():
        if old in data and new not in data:
            data[new] = data.pop(old)
    return data


def current_record(record: dict[str, Any]) -> dict[str, Any]:
    """A trial record with its legacy keys under their new names (``baseline`` -> ``start``;
    its metrics' ``baseline`` -> ``teacher``), for records written before the rename."""
    if "baseline" in record and "start" not in record:
        record["start"] = record.pop("baseline")
    metrics = record.get("metrics")
    if isinstance(metrics, dict) and "baseline" in metrics and "teacher" not in metrics:
        metrics["teacher"] = metrics.pop("baseline")
    return record


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a fsynced temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file; a torn last line (a writer killed) is skipped."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            if i == len(lines):
                break
            raise ConfigError(f"{path}:{i}: not a JSON trial record ({err.msg})") from None
        if not isinstance(value, dict) or "number" not in value:
            raise ConfigError(f"{path}:{i}: a trial record needs a 'number'")
        out.append(value)
    return out


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

    def exists(self) -> bool:
        return (self.path / "config.yaml").is_file()

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    # -- config and identity -------------------------------------------------------------
    def write_config(self, config: Mapping[str, Any]) -> None:
        data = {"format": FORMAT, **config}
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(data, sort_keys=False))

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
        return _current_keys(data)

    def check_identity(self, identity: Mapping[str, Any]) -> None:
        """Record the study's identity, or raise naming the first key that differs from it.

        Keys absent from the stored identity are added (a search records more as it learns it).
        """
        path = self.path / IDENTITY_FILE
        stored = _current_keys(read_json(path)) if path.is_file() else {}
        for key, value in identity.items():
            if key in stored and stored[key] != _plain(value):
                raise ConfigError(
                    f"{self.path} holds a search with a different {key!r} "
                    f"({stored[key]!r} != {_plain(value)!r}); pass another --out or remove it"
                )
        merged = {**stored, **{k: _plain(v) for k, v in identity.items()}}
        if merged != stored:
            self.create()
            self.write_json(IDENTITY_FILE, merged)

    # -- trials --------------------------------------------------------------------------
    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, allow_nan=False, default=str)
        with self.trials_file.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def records(self) -> list[dict[str, Any]]:
        """Finished trials, one per number, by number (the first record of a number wins)."""
        if not self.trials_file.exists():
            return []
        out: dict[int, dict[str, Any]] = {}
        for rec in read_jsonl(self.trials_file):
            out.setdefault(int(rec["number"]), current_record(rec))
        return [out[n] for n in sorted(out)]

    # -- polishes (``study.polish``) -------------------------------------------------------
    @property
    def polish_file(self) -> Path:
        return self.path / "polish.jsonl"

    def polish_dir(self, number: int) -> Path:
        return self.trial_dir(number) / "polish"

    def append_polish(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, allow_nan=False, default=str)
        with self.polish_file.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def polishes(self) -> dict[int, dict[str, Any]]:
        """Finished polishes by trial number (the latest record of a number: a polish that
        failed is tried again by a resumed search)."""
        out: dict[int, dict[str, Any]] = {}
        if self.polish_file.exists():
            for rec in read_jsonl(self.polish_file):
                out[int(rec["number"])] = rec
        return out

    # -- JSON documents ------------------------------------------------------------------
    def write_json(self, name: str, data: Any) -> Path:
        return atomic_write_text(self.path / name, json.dumps(data, indent=2, default=str))

    def read_json(self, name: str) -> Any:
        return read_json(self.path / name)

    def read_teacher(self) -> dict[str, Any] | None:
        """The run's teacher (``teacher.json``, or an older run's ``baseline.json``)."""
        for name in (TEACHER_FILE, LEGACY_TEACHER_FILE):
            if (self.path / name).is_file():
                return dict(read_json(self.path / name))
        return None

    def write_teacher(self, teacher: Mapping[str, Any]) -> Path:
        return self.write_json(TEACHER_FILE, dict(teacher))

    def read_pareto(self) -> dict[str, Any]:
        path = self.path / "pareto.json"
        if not path.is_file():
            raise ConfigError(
                f"{path} not found; a report needs a run directory written by `autocompress search`"
            )
        doc = read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("trials", []), list):
            raise ConfigError(f"{path}: must be an object with a 'trials' list")
        if "teacher" not in doc and "baseline" in doc:  # written before the teacher naming
            doc["teacher"] = doc.pop("baseline")
        doc["trials"] = [current_record(t) for t in doc.get("trials", [])]
        return doc


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), so stored and new identities compare."""
    return json.loads(json.dumps(value, default=str))


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
