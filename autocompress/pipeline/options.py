"""What one trial is run with: :class:`CompressOptions`, built once and passed whole.

The target (with its options), the pruning importance, how latency is measured, the seed, the
trial's time limit and where the student trains travel together from the config (or from
``compress``'s keyword arguments) to the backends, the trial, ``compress``, the search's start
and ``export``. The target is resolved here, once per options object and process
(:attr:`CompressOptions.target`); so is the training device (:attr:`CompressOptions.training`).
Both are left out when the object is pickled (Ray ships it to its workers): a worker resolves
them again for its own machine (``device: auto`` is the GPU Ray gave it; an optional runtime
is checked where it runs).

>>> options = CompressOptions.of(target="onnxruntime", target_options={"linear": "dynamic"})
>>> options.target.linear, options.replace(seed=3).seed
('dynamic', 3)

Adding a per-trial option: a field here (and in :meth:`CompressOptions.of`, and in
:meth:`CompressOptions.from_config` when a config key sets it), read by the code that uses it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from autocompress.device import Training
from autocompress.measure.timing import MeasureSettings
from autocompress.targets import Target, get_target
from autocompress.techniques.importance import Importance

# what is resolved on use and never pickled: the attribute, and the fields it is resolved from
_RESOLVED = {"target": ("target_name", "target_options"), "training": ("device", "precision")}


@dataclass(frozen=True)
class CompressOptions:
    """The options of one trial (or one ``compress`` call); build with :meth:`of` or
    :meth:`from_config`, change with :meth:`replace`."""

    target_name: str = "torch"
    target_options: dict[str, Any] = field(default_factory=dict, hash=False)
    importance: str | Importance = "taylor"
    seed: int = 0
    settings: MeasureSettings = MeasureSettings()
    device: str = "auto"  # where the student trains: auto, cpu, cuda, cuda:N
    precision: str = "fp32"  # fine-tuning precision: fp32, bf16, fp16
    timeout_s: float | None = None  # a search trial running longer fails with "timeout"
    # the other targets each trial is converted for and measured on: name -> its options
    targets: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_options", dict(self.target_options))
        object.__setattr__(self, "targets", {k: dict(v) for k, v in self.targets.items()})

    @classmethod
    def of(
        cls,
        *,
        target: str = "torch",
        target_options: Mapping[str, Any] | None = None,
        importance: str | Importance = "taylor",
        seed: int = 0,
        settings: MeasureSettings = MeasureSettings(),
        training: Training | str = "auto",
        timeout_s: float | None = None,
        targets: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> CompressOptions:
        """From ``compress``'s keyword arguments, with their defaults. ``training`` is a device
        name (fp32) or a resolved :class:`~autocompress.device.Training`; ``targets``: the
        other targets (name -> options) each candidate is also converted for and measured on."""
        return cls().replace(
            target=target,
            target_options=target_options or {},
            importance=importance,
            seed=seed,
            settings=settings,
            training=training,
            timeout_s=timeout_s,
            targets={k: dict(v) for k, v in (targets or {}).items()},
        )

    @classmethod
    def merged(cls, options: CompressOptions | None, **keywords: Any) -> CompressOptions:
        """``options`` (:meth:`of`'s defaults when None) changed by the ``keywords`` that are not
        None: how ``compress(task, policy, target=..., seed=...)`` builds its options."""
        changes = {k: v for k, v in keywords.items() if v is not None}
        return (cls() if options is None else options).replace(**changes)

    @classmethod
    def from_config(cls, config: Any, *, objectives: Any = None) -> CompressOptions:
        """From a search config (``autocompress.study.config.SearchConfig``); latency is measured
        as ``objectives``' ``latency`` section says (the default settings without it)."""
        latency = getattr(objectives, "latency", None)
        return cls(
            target_name=config.target,
            target_options=config.options_for(config.target),
            targets={name: config.options_for(name) for name in config.extra_targets},
            importance=config.importance,
            seed=config.seed,
            settings=MeasureSettings()
            if latency is None
            else MeasureSettings.from_latency(latency),
            device=config.device,
            precision=config.precision,
            timeout_s=config.trial_timeout_s,
        )

    def replace(self, **changes: Any) -> CompressOptions:
        """A copy with ``changes`` (the names :meth:`of` takes, or the fields). What is already
        resolved (target, training) is kept when the fields it comes from did not change."""
        if "target" in changes:
            changes["target_name"] = changes.pop("target")
        training = changes.pop("training", None)
        if isinstance(training, Training):
            changes.update(device=str(training.device), precision=training.precision)
        elif training is not None:
            changes.update(device=training, precision="fp32")
        new = dataclasses.replace(self, **changes)
        for name, sources in _RESOLVED.items():
            if name in self.__dict__ and all(getattr(new, s) == getattr(self, s) for s in sources):
                new.__dict__[name] = self.__dict__[name]
        if isinstance(training, Training):
            new.__dict__["training"] = training  # as given: not resolved again here
        return new

    @cached_property
    def target(self) -> Target:
        """The target with its options, resolved once (a bad option: one line naming it)."""
        return get_target(self.target_name, **self.target_options)

    @cached_property
    def training(self) -> Training:
        """The training device and precision, resolved once, in this process."""
        return Training.resolve(self.device, precision=self.precision)

    def for_target(self, name: str) -> CompressOptions:
        """These options on the extra target ``name`` (with its options), alone."""
        return self.replace(target=name, target_options=self.targets[name], targets={})

    def check(self) -> CompressOptions:
        """The targets, then the training device, resolved now: a bad target option or a
        device that is not here fails in one line before any work."""
        _ = self.target, self.training, [self.for_target(n).target for n in self.targets]
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _RESOLVED}


__all__ = ["CompressOptions"]
