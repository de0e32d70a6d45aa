"""The search config (``search.yaml``): what to search, how, and where to write."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from autocompress.errors import ConfigError
from autocompress.study._polish_plan import DEFAULT_POLISH, polish_problem
from autocompress.study._several import check_options, objective_of, target_names_problem
from autocompress.study.backends import BACKENDS, foreign_keys
from autocompress.study.presets import load_yaml
from autocompress.study.rundir import LEGACY_KEYS

if TYPE_CHECKING:
    from autocompress.device import Training


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "must be a non-empty string"


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _backend(value: Any) -> str | None:
    """A registered backend (read when checked: a backend registered after import counts)."""
    return _choice(*sorted(BACKENDS))(value)


def _choice(*options: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in options else f"is not one of {', '.join(options)}"

    return check


def _importance(value: Any) -> str | None:
    """A registered criterion (``techniques.importance``): a plug-in registers before the
    config is read."""
    from autocompress.techniques.importance import IMPORTANCES

    if isinstance(value, str) and value in IMPORTANCES:
        return None
    return f"is not a registered importance; choose from {', '.join(sorted(IMPORTANCES))}"


def _integer(low: int, *, optional: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if optional and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return f"must be an integer >= {low}" + (" or null" if optional else "")
        return None

    return check


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _seconds(value: Any) -> str | None:
    if value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return None if ok and math.isfinite(value) else "must be a number of seconds > 0 or null"


def _options(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return "must be a mapping of option names to values"
    return None


def _sampler(value: Any) -> str | None:
    from autocompress.study.samplers import sampler_problem

    return sampler_problem(value)


def _scheduler(value: Any) -> str | None:
    from autocompress.study.samplers import scheduler_problem

    return scheduler_problem(value)


def _device(value: Any) -> str | None:
    from autocompress.device import device_problem

    return device_problem(value)


def _finetune(value: Any) -> str | None:
    from autocompress.device import PRECISIONS

    if not isinstance(value, dict):
        return "must be a mapping, e.g. {precision: bf16}"
    unknown = sorted(set(value) - {"precision"})
    if unknown:
        return f"has unknown key(s) {unknown}; allowed: precision"
    if value.get("precision", "fp32") not in PRECISIONS:
        return f"precision must be one of {', '.join(PRECISIONS)}"
    return None


def _budget(value: Any) -> str | None:
    from autocompress.study.budget import budget_problem

    return budget_problem(value)


def _resources(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        return "must be a mapping of Ray resources per trial, e.g. {cpu: 1, gpu: 0.25}"
    for key, amount in value.items():
        ok = isinstance(amount, int | float) and not isinstance(amount, bool) and amount >= 0
        if not isinstance(key, str) or not ok or not math.isfinite(amount):
            return f"has {key!r}: {amount!r}; each amount must be a number >= 0"
    if value.get("cpu", 1) <= 0 and value.get("gpu", 0) <= 0:
        return "asks for neither cpu nor gpu"
    return None


def _starts(value: Any) -> str | None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        return "must be a list of start policy names"
    from autocompress.study._start import auto_count
    from autocompress.study.space import STARTS, start_spec

    unknown = []
    for v in value:
        if (
            auto_count(v) is not None
        ):  # the cost-chosen uniform starts (autocompress/study/_start.py)
            continue
        try:
            start_spec(v)
        except ConfigError:
            unknown.append(v)
    if unknown:
        return (
            f"names unknown start(s) {unknown}; choose from {', '.join(STARTS)}, "
            "a uniform prune<NN>-int<B>, or auto / auto<K>"
        )
    return None


# one check per key: each returns None, or what is wrong with the value
_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "name": _text,
    "task": _text,
    "search_space": _text,
    "objectives": _text,
    "target": _text,
    "target_options": _options,
    "targets": target_names_problem,
    "objective_target": _optional_text,
    "trials": _integer(1),
    "sampler": _sampler,
    "seed": _integer(0),
    "backend": _backend,
    "starts": _starts,
    "importance": _importance,
    "epochs": _integer(0, optional=True),
    "keep_models": _choice("pareto", "all"),
    "report_every": _integer(0),
    "tracking": _flag,
    "tracking_uri": _optional_text,
    "experiment": _optional_text,
    "address": _optional_text,
    "max_concurrent": _integer(1, optional=True),
    "scheduler": _scheduler,
    "out": _optional_text,
    "trial_timeout_s": _seconds,
    "fail_fast_after": _integer(0),
    "device": _device,
    "finetune": _finetune,
    "resources_per_trial": _resources,
    "budget": _budget,
    "polish": polish_problem,
}


def _renamed(data: dict[str, Any], source: str) -> tuple[dict[str, Any], dict[str, str]]:
    """``data`` with each legacy key under its new name, and the legacy keys it used."""
    data, used = dict(data), {}
    for old, new in LEGACY_KEYS.items():
        if old in data:
            if new in data:
                raise ConfigError(
                    f"{source}: both {old!r} and {new!r} given; {old!r} is the old name "
                    f"of {new!r}: keep only {new!r}"
                )
            data[new] = data.pop(old)
            used[old] = new
    return data, used


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where (line, column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


@dataclass(frozen=True)
class SearchConfig:
    """A search, as written in YAML. Paths in it are relative to the config file's folder."""

    name: str
    task: str
    search_space: str = "refine"  # the benchmarked space (global level + per-group offsets, depth)
    objectives: str = "accuracy-size-latency"
    target: str = "torch"
    target_options: dict[str, Any] = field(default_factory=dict)  # the target's own options
    # several runtimes (``targets: [a, b]``): each trial measured on each; the objectives read
    # ``objective_target`` (default: the first), which ``target`` then names
    targets: tuple[str, ...] | None = None
    objective_target: str | None = None
    trials: int = 24
    sampler: str | dict[str, Any] = "tpe"  # a name, or {name: ..., <option>: ...}
    seed: int = 0
    backend: str = "ray"
    starts: tuple[str, ...] = ("identity", "auto")  # the first policies: the measured start
    importance: str = "taylor"
    epochs: int | None = None  # overrides the space's finetune.epochs when set
    keep_models: str = "pareto"  # "pareto" or "all"
    report_every: int = 5
    tracking: bool = True
    tracking_uri: str | None = None
    experiment: str | None = None
    address: str | None = None
    max_concurrent: int | None = None
    # ray: "auto" (ASHA when epochs >= 2), "asha", "none"; both: "halving" (see samplers)
    scheduler: str | dict[str, Any] = "auto"
    out: str | None = None
    trial_timeout_s: float | None = None  # a trial running longer fails with "timeout"
    fail_fast_after: int = 5  # stop when the first K trials all fail (0: never)
    device: str = "auto"  # where trials train: auto (CUDA when PyTorch sees one), cpu, cuda:N
    finetune: dict[str, Any] = field(default_factory=dict)  # {precision: fp32 | bf16 | fp16}
    resources_per_trial: dict[str, float] | None = None  # ray: e.g. {cpu: 1, gpu: 0.25}
    budget: str | None = None  # wall-clock time for the start and the trials, e.g. 30m
    # after the search: re-train K candidates with the full budget (``study._polish_plan``)
    polish: bool | dict[str, Any] = DEFAULT_POLISH
    base_dir: str = field(default=".", compare=False)

    def __post_init__(self) -> None:
        where = f"config {self.name!r}"
        for key, check in _CHECKS.items():
            problem = check(getattr(self, key))
            if problem:
                raise ConfigError(f"{where}: {key}: {getattr(self, key)!r} {problem}")
        # each backend's own keys: another backend's key here is an error, not ignored
        for key, owner in foreign_keys(
            self.backend, {f.name: getattr(self, f.name) for f in fields(self)}
        ):
            raise ConfigError(
                f"{where}: {key}: only the {owner} backend reads it (backend is "
                f"{self.backend!r}); remove the key or set backend: {owner}"
            )
        objective = objective_of(where, self.targets, self.objective_target, self.target_options)
        if objective is not None:
            object.__setattr__(self, "target", objective)
        for name in self.all_targets:
            if self.options_for(name):
                check_options(where, name, self.options_for(name))

    @property
    def all_targets(self) -> tuple[str, ...]:
        """Every target the trials are measured on, the objective target first."""
        rest = tuple(t for t in self.targets or () if t != self.target)
        return (self.target, *rest)

    @property
    def extra_targets(self) -> tuple[str, ...]:
        """The targets measured besides the objective target."""
        return self.all_targets[1:]

    def options_for(self, name: str) -> dict[str, Any]:
        """Target ``name``'s options (per target when several targets are given)."""
        if self.targets is not None and len(self.targets) > 1:
            return dict(self.target_options.get(name) or {})
        return dict(self.target_options)

    @property
    def precision(self) -> str:
        return self.finetune.get("precision", "fp32")

    def training(self) -> Training:
        """The device and precision trials train with, resolved here (one-line errors)."""
        from autocompress.device import Training

        try:
            return Training.resolve(self.device, precision=self.precision)
        except ConfigError as exc:
            raise ConfigError(f"config {self.name!r}: {exc}") from None

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["starts"] = list(self.starts)
        data.pop("base_dir")
        if self.targets is None:  # single-target runs write the config as before
            data.pop("targets")
            data.pop("objective_target")
        else:
            data["targets"] = list(self.targets)
            data.pop("target")  # the objective target: objective_target, or the first
        if not self.target_options:  # runs recorded before the key existed stay resumable
            data.pop("target_options")
        unset = (("finetune", {}), ("resources_per_trial", None), ("budget", None))
        for key, default in (*unset, ("polish", DEFAULT_POLISH)):
            if data[key] == default:  # written only when set, like target_options
                data.pop(key)
        return data

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, source: str = "<dict>", base_dir: str = "."
    ) -> SearchConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a search config must be a mapping of keys to values")
        allowed = {f.name for f in fields(cls)} - {"base_dir"}
        for key in data:
            if key not in allowed and key not in LEGACY_KEYS:
                raise ConfigError(
                    f"{source}: unknown key {key!r}; allowed: {', '.join(sorted(allowed))}"
                )
        for key in ("name", "task"):
            if key not in data:
                raise ConfigError(f"{source}: missing required key {key!r}")
        data, legacy = _renamed(data, source)
        if "target" in data and "targets" in data:
            raise ConfigError(
                f"{source}: both 'target' and 'targets' given; keep one (target: X means "
                "targets: [X])"
            )
        if isinstance(data.get("targets"), list):
            data["targets"] = tuple(data["targets"])
        if data.get("budget") is not None and "trials" not in data:
            from autocompress.study.budget import MAX_TRIALS

            data["trials"] = MAX_TRIALS  # the budget bounds the search
        if isinstance(data.get("starts"), list):
            data["starts"] = tuple(data["starts"])
        elif "starts" in data and data["starts"] is None:
            data["starts"] = ()
        try:
            return cls(**data, base_dir=base_dir)
        except ConfigError as exc:
            text = str(exc)
            for old, new in legacy.items():  # name the key as the file spells it
                text = text.replace(f": {new}: ", f": {old}: ", 1)
            raise ConfigError(f"{source}: {text}") from None
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchConfig:
        path = Path(path)
        data = load_yaml(path, str(path), what="config ", problem=yaml_problem)
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
