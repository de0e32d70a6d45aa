"""The search controller: one Optuna study in the run directory proposes policies and learns.

Parameters are named after the space (``prune.<path or group>``, ``bits.<...>``,
``distill.alpha``, ...). The start policies (config ``starts``) are enqueued first. Each finished trial is appended to
``trials.jsonl`` before the study is told, so a resumed driver can repair the study from it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from autocompress.measure.directions import Direction
from autocompress.measure.metrics import comparable
from autocompress.policy import Policy
from autocompress.study._polish_plan import with_polish
from autocompress.study._start import StartPlan
from autocompress.study.config import SearchConfig
from autocompress.study.objectives import ObjectiveSet
from autocompress.study.pareto import front, target_fronts
from autocompress.study.records import TrialState
from autocompress.study.rundir import RunDir
from autocompress.study.samplers import build_sampler
from autocompress.study.space import ResolvedSpace

# TPE's random start-up trials; a measured start (``starts: [..., auto]``) stands in for them
TPE_STARTUP = 10
_START_ATTR = "autocompress.baseline"  # (the Optuna attribute keeps its stored name)
_POLICY_ATTR = "autocompress.policy"
_NUMBER_ATTR = "autocompress.number"  # the record a re-added trial stands for


@dataclass(frozen=True)
class Proposal:
    """A policy the study asked for."""

    number: int
    policy: Policy
    params: dict[str, Any]
    start: str | None  # the start policy's name; None when the sampler chose the policy
    seed: int


class Controller:
    def __init__(
        self,
        *,
        config: SearchConfig,
        run_dir: RunDir,
        space: ResolvedSpace,
        objectives: ObjectiveSet,
        teacher: Mapping[str, Any],
        plan: StartPlan | None = None,
    ) -> None:
        self.config = config
        self.plan = plan
        self.run_dir = run_dir
        self.space = space
        self.objectives = objectives
        self.teacher = dict(teacher)  # the run's (teacher.json)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            study_name=config.name,
            storage=run_dir.storage_url,
            directions=objectives.directions,
            sampler=build_sampler(
                config.sampler, seed=config.seed, startup=self._startup(config, plan)
            ),
            load_if_exists=True,
        )
        if self.study.metric_names is None:
            with warnings.catch_warnings():  # experimental since 3.2, still in 5.0
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(list(objectives.metrics))
        self.live: dict[int, optuna.trial.Trial] = {}
        self.records: dict[int, dict[str, Any]] = {r["number"]: r for r in run_dir.records()}
        self.polishes: dict[int, dict[str, Any]] = run_dir.polishes()  # after the search
        if not self.study.trials:
            for name in config.starts:
                self.study.enqueue_trial(
                    self.space.params_for_policy(name), user_attrs={_START_ATTR: name}
                )
        self._repair()

    @staticmethod
    def _startup(config: SearchConfig, plan: StartPlan | None) -> int:
        """TPE models the front after this many trials: after the measured start when there
        is one (its trials are the start-up), otherwise after 10 random ones."""
        if plan is None:
            return TPE_STARTUP
        return min(TPE_STARTUP, len(config.starts) + plan.k)

    # -- study state -----------------------------------------------------------------------
    def _repair(self) -> None:
        """Trials left RUNNING by a killed driver: recorded ones are re-added finished (with
        their values and constraints), the others re-enqueued; the RUNNING ones end FAIL."""
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for t in running:
            self.study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            record = self.records.get(t.number)
            if record is None:
                self.study.enqueue_trial(dict(t.params), user_attrs=dict(t.user_attrs))
                continue
            state, values, constraints = self._outcome(record)
            self.study.add_trial(
                optuna.trial.create_trial(
                    state=state,
                    values=values,
                    params=dict(t.params),
                    distributions=dict(t.distributions),
                    user_attrs={**t.user_attrs, _NUMBER_ATTR: t.number},
                    constraints=constraints,
                )
            )

    @property
    def n_finished(self) -> int:
        return len(self.records)

    def _start_results(self) -> dict[str, float | bool | None]:
        """Each start of the plan asked so far: its accuracy when complete, False when it
        failed or broke a constraint, None while it runs."""
        assert self.plan is not None
        names = self.plan.names()
        out: dict[str, float | bool | None] = {}
        for record in self.records.values():
            if record.get("start") in names:
                accuracy = (record.get("metrics") or {}).get("accuracy")
                done = record["state"] == TrialState.COMPLETE and accuracy is not None
                out[record["start"]] = float(accuracy) if done else False
        for trial in self.live.values():
            name = trial.user_attrs.get(_START_ATTR)
            if name in names and name not in out:
                out[name] = None
        return out

    def _enqueue_start(self) -> None:
        """The plan's next uniform start, when nothing else is queued and it can step."""
        if self.plan is None:
            return
        if self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            return
        results = self._start_results()
        name = self.plan.next(results, asked=len(results))
        if name is not None:
            self.study.enqueue_trial(
                self.space.params_for_policy(name), user_attrs={_START_ATTR: name}
            )

    def ask(self) -> Proposal:
        self._enqueue_start()
        trial = self.study.ask()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            policy = self.space.suggest(trial)
        start = trial.user_attrs.get(_START_ATTR)
        if start == "identity":
            policy = Policy.identity()
        elif self.config.epochs is not None:
            policy = dataclasses.replace(
                policy, finetune=dataclasses.replace(policy.finetune, epochs=self.config.epochs)
            )
        trial.set_user_attr(_POLICY_ATTR, policy.to_dict())
        self.live[trial.number] = trial
        return Proposal(
            number=trial.number,
            policy=policy,
            params=dict(trial.params),
            start=start,
            seed=self.config.seed + trial.number,
        )

    def tell(self, proposal: Proposal, record: dict[str, Any]) -> dict[str, Any]:
        """Complete the record, append it to trials.jsonl, then tell the study."""
        record = {**record, "params": proposal.params, "start": proposal.start}
        self.run_dir.append(record)
        self.records[proposal.number] = record
        self._tell(proposal.number, record)
        return record

    def _tell(self, number: int, record: Mapping[str, Any]) -> None:
        trial = self.live.pop(number, None)
        state, values, constraints = self._outcome(record)
        if trial is not None:
            for key, value in constraints.items():
                trial.set_constraint(key, value)
        if state == optuna.trial.TrialState.COMPLETE:
            self.study.tell(trial or number, values, skip_if_finished=True)
        else:
            self.study.tell(trial or number, state=state, skip_if_finished=True)

    def _outcome(
        self, record: Mapping[str, Any]
    ) -> tuple[optuna.trial.TrialState, list[float] | None, dict[str, float]]:
        """What the study is told of a record: its state, values and constraint values."""
        states = optuna.trial.TrialState
        if record["state"] == TrialState.FAILED:
            return states.FAIL, None, {}
        if record["state"] == TrialState.PRUNED:
            return states.PRUNED, None, {}
        metrics = record["metrics"]
        teacher = record.get("teacher") or metrics.get("teacher") or self.teacher
        constraints = {
            f"{i}:{c}": self._violation(c, metrics, teacher)
            for i, c in enumerate(self.objectives.constraints)
        }
        values = [self._objective_value(m, d, record) for m, d in self._objectives()]
        return states.COMPLETE, values, constraints

    def _violation(
        self, constraint: Any, metrics: Mapping[str, Any], teacher: Mapping[str, Any]
    ) -> float:
        """Against the record's own teacher; one that could not be measured counts as broken."""
        try:
            value = constraint.violation(metrics, teacher)
        except (KeyError, TypeError, ValueError):
            return 1.0
        return value if math.isfinite(value) else 1.0

    def _objectives(self) -> list[tuple[str, str]]:
        return list(zip(self.objectives.metrics, self.objectives.directions, strict=True))

    def _objective_value(self, metric: str, direction: str, record: Mapping[str, Any]) -> float:
        value = comparable(record, metric, self.teacher)
        if value is not None:
            return value
        # infeasible before training: the worst plausible value, so the sampler learns
        if direction == Direction.MAXIMIZE:
            return 0.0
        return 10.0 * float(self.teacher.get(metric, 1.0))

    # -- results ---------------------------------------------------------------------------
    def add_polish(self, record: dict[str, Any]) -> None:
        """A finished polish: appended to polish.jsonl; the study is not told (its trials
        stay what the sampler saw)."""
        self.run_dir.append_polish(record)
        self.polishes[int(record["number"])] = record

    def final_records(self) -> list[dict[str, Any]]:
        """The records with each polished trial's figures in place of its search-time ones."""
        return with_polish(self.records.values(), self.polishes)

    def pareto(self) -> list[Mapping[str, Any]]:
        return front(self.final_records(), self._objectives(), self.teacher)

    def pareto_document(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "objectives": [{"name": m, "direction": d} for m, d in self._objectives()],
            "teacher": self.teacher,
            "trials": [
                {
                    "number": r["number"],
                    "policy": r["policy"],
                    "metrics": r["metrics"],
                    "teacher": r.get("teacher") or r["metrics"].get("teacher"),
                    "compared": {
                        m: comparable(r, m, self.teacher) for m in self.objectives.metrics
                    },
                    "polished": bool(r.get("polished")),
                    **{k: r[k] for k in ("search", "polish") if k in r},
                }
                for r in self.pareto()
            ],
            **self._fronts_document(),
            **self._polish_document(),
        }

    def _polish_document(self) -> dict[str, Any]:
        """The polish stage at a glance: which trials, and search and polish costs apart."""
        if not self.polishes:
            return {}
        cost = [float(r.get("duration_s") or 0.0) for r in self.records.values()]
        return {
            "polish": {
                "trials": sorted(self.polishes),
                "search_s": round(sum(cost), 3),
                "polish_s": round(
                    sum(float(p.get("duration_s") or 0.0) for p in self.polishes.values()), 3
                ),
            }
        }

    def fronts(self) -> dict[str, list[Mapping[str, Any]]]:
        """A several-target search's front per target, on each target's own figures."""
        return target_fronts(self.final_records(), self._objectives(), self.teacher)

    def _fronts_document(self) -> dict[str, Any]:
        teachers = self.teacher.get("targets") or {}
        if not teachers:
            return {}  # one target: pareto.json as before
        return {
            "fronts": {
                name: [
                    {
                        "number": r["number"],
                        "metrics": r["metrics"],
                        "teacher": r["teacher"],  # on that runtime, timed in its process
                        "compared": {
                            m: comparable(r, m, teachers[name]) for m in self.objectives.metrics
                        },
                    }
                    for r in rows
                ]
                for name, rows in self.fronts().items()
            }
        }

    def write_pareto(self) -> None:
        self.run_dir.write_json("pareto.json", self.pareto_document())
