"""The trial record: the one shape of a line of ``trials.jsonl``, built in one place.

:class:`TrialRecord` names every key a record can hold; it is a ``TypedDict``, so a record is
a plain ``dict`` at run time: ``json.dumps`` writes it as before, ``pareto.json``, MLflow and the
report read it with ``record["state"]``, and run directories written before this module load
unchanged. :func:`trial_record` builds the fresh record a trial fills in (in the process that
runs it); :func:`new_record` builds the record the driver stores, from that trial's record or
from scratch (a trial stopped or lost before it could report one). Nothing else creates one.

A record's ``state`` is a :class:`TrialState` (a ``StrEnum``: it equals the string on disk).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypedDict

from autocompress.integrations.tracker import STATES, TrialState
from autocompress.policy import Policy


class Proposed(Protocol):
    """What a record is built for: a proposal (``study._controller.Proposal``)."""

    @property
    def number(self) -> int: ...
    @property
    def policy(self) -> Policy: ...
    @property
    def seed(self) -> int: ...


class TrialRecord(TypedDict, total=False):
    """One finished trial, as ``trials.jsonl`` holds it."""

    number: int
    state: TrialState | str
    policy: dict[str, Any]  # Policy.to_dict()
    metrics: dict[str, Any]  # measured on the artifact (structure only when cut short)
    error: str | None  # why it failed or broke a constraint
    failure: str | None  # the failure's kind (failures.failure_kind), when it failed
    seed: int
    host: str | None
    epochs: list[dict[str, float]]  # {"epoch", "accuracy"} per fine-tuning epoch
    teacher_batches_computed: int | None
    duration_s: float | None
    traceback: str  # of a failed trial's exception
    node: str | None  # Ray node id (None on the local backend)
    node_ip: str | None
    gpu_ids: list[str]
    teacher: dict[str, Any]  # the teacher the trial was compared with (its own process')
    params: dict[str, Any]  # the sampler's parameter values
    start: str | None  # the start policy's name (``identity``, ``int8``...), None if sampled
    # successive halving (``scheduler: halving``, autocompress.study.halving):
    rung: dict[str, Any]  # the rung one run of the trial was at (moved into ``rungs``)
    rungs: list[dict[str, Any]]  # {"rung", "epochs", "accuracy", "estimator", "seconds", "state"}
    ranked_by: dict[str, Any] | None  # the rung entry whose estimate last ranked the trial
    stopped_at_rung: int  # a trial the ladder stopped (state ``pruned``): its last rung


def trial_record(
    number: int,
    policy: Policy,
    *,
    seed: int,
    state: TrialState = TrialState.FAILED,
    host: str | None = None,
    error: str | None = None,
    epochs: list[dict[str, Any]] | None = None,
    duration_s: float | None = None,
) -> TrialRecord:
    """A fresh record: every common key present, no metrics yet."""
    return {
        "number": number,
        "state": state,
        "policy": policy.to_dict(),
        "metrics": {},
        "error": error,
        "failure": None,
        "seed": seed,
        "host": host,
        "epochs": epochs if epochs is not None else [],
        "teacher_batches_computed": None,
        "duration_s": duration_s,
    }


def new_record(
    proposal: Proposed,
    *,
    state: TrialState | str,
    teacher: Mapping[str, Any],
    trial: Mapping[str, Any] | None = None,
    error: str | None = None,
    epochs: list[dict[str, Any]] | None = None,
    duration_s: float | None = None,
    where: Mapping[str, Any] | None = None,
) -> TrialRecord:
    """The record the driver stores, from a trial's own record or from scratch.

    ``where`` (node, host...) fills only what the trial did not say itself; a candidate timed
    interleaved with the teacher is compared with those teacher timings."""
    record = trial_record(
        proposal.number,
        proposal.policy,
        seed=proposal.seed,
        state=TrialState(state),
        error=error,
        epochs=epochs,
        duration_s=duration_s,
    )
    if trial is not None:
        record.update(trial)  # type: ignore[typeddict-item]
    for key, value in (where or {}).items():
        if record.get(key) is None:
            record[key] = value  # type: ignore[literal-required]
    record.setdefault("node", None)
    record["teacher"] = {**teacher, **((record["metrics"] or {}).get("teacher_paired") or {})}
    return record


__all__ = ["STATES", "TrialRecord", "TrialState", "new_record", "trial_record"]
