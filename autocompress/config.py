"""The search config (``search.yaml``): what to search, how, and where to write."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

SAMPLERS = ("tpe", "nsga2", "random")
BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class SearchConfig:
    """A search, as written in YAML. Paths in it are relative to the config file's folder."""

    name: str
    task: str
    search_space: str = "default"
    objectives: str = "accuracy-size-latency"
    target: str = "torch"
    trials: int = 24
    sampler: str = "tpe"
    seed: int = 0
    backend: str = "ray"
    baselines: tuple[str, ...] = ("identity", "int8", "prune30-int8")
    importance: str = "taylor"
    epochs: int | None = None  # overrides the space's finetune.epochs when set
    keep_models: str = "pareto"  # "pareto" or "all"
    report_every: int = 5
    tracking: bool = True
    tracking_uri: str | None = None
    experiment: str | None = None
    address: str | None = None
    max_concurrent: int | None = None
    scheduler: str = "auto"  # "auto" (ASHA when epochs >= 2), "asha" or "none"
    out: str | None = None
    base_dir: str = field(default=".", compare=False)

    def __post_init__(self) -> None:
        where = f"config {self.name!r}"
        if self.sampler not in SAMPLERS:
            raise ConfigError(
                f"{where}: sampler: {self.sampler!r}; choose from {', '.join(SAMPLERS)}"
            )
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"{where}: backend: {self.backend!r}; choose from {', '.join(BACKENDS)}"
            )
        if not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(f"{where}: trials: {self.trials!r} must be a positive integer")
        if self.keep_models not in ("pareto", "all"):
            raise ConfigError(f"{where}: keep_models: {self.keep_models!r}; choose pareto or all")
        if self.scheduler not in ("auto", "asha", "none"):
            raise ConfigError(f"{where}: scheduler: {self.scheduler!r}; choose auto, asha or none")
        if self.importance not in ("taylor", "magnitude"):
            raise ConfigError(
                f"{where}: importance: {self.importance!r}; choose taylor or magnitude"
            )
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 0):
            raise ConfigError(f"{where}: epochs: {self.epochs!r} must be an integer >= 0")

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["baselines"] = list(self.baselines)
        data.pop("base_dir")
        return data

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, source: str = "<dict>", base_dir: str = "."
    ) -> SearchConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a search config must be a mapping of keys to values")
        allowed = {f.name for f in fields(cls)} - {"base_dir"}
        for key in data:
            if key not in allowed:
                raise ConfigError(
                    f"{source}: unknown key {key!r}; allowed: {', '.join(sorted(allowed))}"
                )
        for key in ("name", "task"):
            if key not in data:
                raise ConfigError(f"{source}: missing required key {key!r}")
        data = dict(data)
        if "baselines" in data:
            data["baselines"] = tuple(data["baselines"] or ())
        try:
            return cls(**data, base_dir=base_dir)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_dict(data, source=str(path), base_dir=str(path.parent))

    def resolved(self) -> SearchConfig:
        """Relative file paths (task file, space/objective YAML) made absolute from base_dir."""

        def absolute(value: str) -> str:
            path, sep, rest = value.partition(":") if value.count(":") == 1 else (value, "", "")
            if path.endswith((".py", ".yaml", ".yml")) and not Path(path).is_absolute():
                candidate = Path(self.base_dir) / path
                if candidate.exists():
                    return str(candidate.resolve()) + sep + rest
            return value

        return replace(
            self,
            task=absolute(self.task),
            search_space=absolute(self.search_space),
            objectives=absolute(self.objectives),
        )

    def with_overrides(self, **overrides: Any) -> SearchConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
