"""The search controller: one Optuna study in the run directory proposes policies and learns.

Parameters are named after the space (``prune.<path or group>``, ``bits.<...>``,
``distill.alpha``, ...). Baselines are enqueued first. Each finished trial is appended to
``trials.jsonl`` before the study is told, so a resumed driver can repair the study from it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from .config import SearchConfig
from .objectives import ObjectiveSet
from .policy import Policy
from .rundir import RunDir, pareto_records
from .space import ResolvedSpace

SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed: optuna.samplers.TPESampler(multivariate=True, seed=seed),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed, population_size=8),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}
_BASELINE_ATTR = "autocompress.baseline"


@dataclass(frozen=True)
class Proposal:
    """A policy the study asked for."""

    number: int
    policy: Policy
    params: dict[str, Any]
    baseline: str | None
    seed: int


class Controller:
    def __init__(
        self,
        *,
        config: SearchConfig,
        run_dir: RunDir,
        space: ResolvedSpace,
        objectives: ObjectiveSet,
        baseline: Mapping[str, Any],
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.space = space
        self.objectives = objectives
        self.baseline = dict(baseline)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            study_name=config.name,
            storage=run_dir.storage_url,
            directions=objectives.directions,
            sampler=SAMPLERS[config.sampler](config.seed),
            load_if_exists=True,
        )
        self.records: dict[int, dict[str, Any]] = {r["number"]: r for r in run_dir.records()}
        if not self.study.trials:
            for name in config.baselines:
                self.study.enqueue_trial(
                    self.space.params_for_policy(name), user_attrs={_BASELINE_ATTR: name}
                )
        self._repair()

    # -- study state -----------------------------------------------------------------------
    def _repair(self) -> None:
        """Trials left RUNNING by a killed driver: tell recorded ones, re-enqueue the rest."""
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for t in running:
            if t.number in self.records:
                self._tell(t.number, self.records[t.number])
                continue
            self.study.enqueue_trial(dict(t.params), user_attrs=dict(t.user_attrs))
            self.study.tell(t.number, state=optuna.trial.TrialState.FAIL)

    @property
    def n_finished(self) -> int:
        return len(self.records)

    def ask(self) -> Proposal:
        trial = self.study.ask()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            policy = self.space.suggest(trial)
        baseline = trial.user_attrs.get(_BASELINE_ATTR)
        if baseline == "identity":
            policy = Policy.identity()
        elif self.config.epochs is not None:
            policy = dataclasses.replace(
                policy, finetune=dataclasses.replace(policy.finetune, epochs=self.config.epochs)
            )
        return Proposal(
            number=trial.number,
            policy=policy,
            params=dict(trial.params),
            baseline=baseline,
            seed=self.config.seed + trial.number,
        )

    def tell(self, proposal: Proposal, record: dict[str, Any]) -> dict[str, Any]:
        """Complete the record, append it to trials.jsonl, then tell the study."""
        record = {**record, "params": proposal.params, "baseline": proposal.baseline}
        self.run_dir.append(record)
        self.records[proposal.number] = record
        self._tell(proposal.number, record)
        return record

    def _tell(self, number: int, record: Mapping[str, Any]) -> None:
        state = record["state"]
        states = optuna.trial.TrialState
        if state == "failed":
            self.study.tell(number, state=states.FAIL, skip_if_finished=True)
            return
        if state == "pruned":
            self.study.tell(number, state=states.PRUNED, skip_if_finished=True)
            return
        metrics = record["metrics"]
        trial = optuna.trial.Trial(
            self.study,
            self.study._storage.get_trial_id_from_study_id_trial_number(
                self.study._study_id, number
            ),
        )
        for i, c in enumerate(self.objectives.constraints):
            trial.set_constraint(f"{i}:{c}", self._violation(c, metrics))
        values = [self._objective_value(m, d, metrics) for m, d in self._objectives()]
        self.study.tell(number, values, skip_if_finished=True)

    def _violation(self, constraint: Any, metrics: Mapping[str, Any]) -> float:
        """A constraint that could not be measured (or is not finite) counts as broken."""
        baseline = metrics.get("baseline") or self.baseline
        try:
            value = constraint.violation(metrics, baseline)
        except (KeyError, TypeError, ValueError):
            return 1.0
        return value if math.isfinite(value) else 1.0

    def _objectives(self) -> list[tuple[str, str]]:
        return list(zip(self.objectives.metrics, self.objectives.directions, strict=True))

    def _objective_value(self, metric: str, direction: str, metrics: Mapping[str, Any]) -> float:
        if metric in metrics:
            return float(metrics[metric])
        # infeasible before training: the worst plausible value, so the sampler learns
        if direction == "maximize":
            return 0.0
        return 10.0 * float(self.baseline.get(metric, 1.0))

    # -- results ---------------------------------------------------------------------------
    def pareto(self) -> list[Mapping[str, Any]]:
        return pareto_records(
            self.records.values(), self.objectives.metrics, self.objectives.directions
        )

    def pareto_document(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "objectives": [{"name": m, "direction": d} for m, d in self._objectives()],
            "baseline": self.baseline,
            "trials": [
                {"number": r["number"], "policy": r["policy"], "metrics": r["metrics"]}
                for r in self.pareto()
            ],
        }

    def write_pareto(self) -> None:
        self.run_dir.write_json("pareto.json", self.pareto_document())
