"""Successive halving driven from the session: which ``(trial, rung)`` job runs next, and what
each result does to the ladder and to the records. The same on every backend: ``local`` runs
the jobs one after another, ``ray`` hands them to Tune as they are ready.

``trials:`` counts **proposals**: each policy the study proposes is one trial number and one
record, however many rungs it climbs (a promotion re-runs the trial with more epochs and
costs no trial). Start policies (``starts``) skip the ladder: they run their full epochs at
once, as the measured start steers by their final accuracy.

A trial's record is written once, when the ladder is done with it: fully trained (its state
as measured), stopped at a lower rung (state ``pruned``, ``stopped_at_rung``, and the rung's
figures), or failed. Every record carries ``rungs`` (each run: epochs, the accuracy that
ranked it, the estimator, seconds) and ``ranked_by`` (the rung entry that last ranked it).
The Pareto front is built from complete records only, so only from fully trained trials.
The sampler is told then too: a stopped trial counts as pruned. Once ``budget:`` is spent no
job starts: trials waiting for a rung are recorded stopped where they are.

Rung 0 (0 epochs: ``_rungs.rung0_estimate``, the zero-shot artifact with BatchNorm
recalibrated, or a short distillation where the model has no BatchNorm) is a proxy, and it
ranks only where it is trusted: each trial that goes from rung 0 to rung 1 in a bracket rung 0
did not cut gives a pair (its rung-0 estimate, its rung-1 accuracy), and rung 0 cuts a bracket
only while Spearman's rho over the pairs is >= 0.8 on at least 6
(``pipeline.proxy.proxy_trust``). Until then every trial goes up from rung 0 (so the first
bracket measures the proxy on all its trials) and its rung-0 entry says ``ranked: false``;
``ranked_by`` names the rung that did rank it. Once rung 0 cuts, only the top third reaches
rung 1 (a narrowed sample that would understate the correlation), so no more pairs are taken
and the verdict stands. The search's ``halving.json`` holds the pairs and the verdict; a
resumed search rebuilds the pairs from its records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autocompress.measure.directions import Direction
from autocompress.measure.metrics import comparable
from autocompress.pipeline.proxy import ProxyTrust, proxy_trust
from autocompress.policy import Policy
from autocompress.study._controller import Proposal
from autocompress.study._rungs import at_epochs
from autocompress.study.halving import HalvingLadder, HalvingSpec, Stop
from autocompress.study.records import TrialRecord, TrialState
from autocompress.study.session import Session


@dataclass(frozen=True)
class Job:
    """Run trial ``proposal.number`` at ``rung`` with ``policy`` (the rung's epochs)."""

    proposal: Proposal
    rung: int
    policy: Policy
    final: bool  # the trial's full epochs: its record is final whatever it ranks


@dataclass
class LadderRun:
    session: Session
    spec: HalvingSpec
    ladder: HalvingLadder = field(init=False)
    proposals: dict[int, Proposal] = field(default_factory=dict)
    tops: dict[int, int] = field(default_factory=dict)
    rungs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    last: dict[int, TrialRecord] = field(default_factory=dict)  # each trial's latest run
    running: set[int] = field(default_factory=set)
    ran: int = 0  # jobs finished
    pairs: list[tuple[float, float]] = field(default_factory=list)  # (rung 0, rung 1) accuracy
    trust: ProxyTrust = field(default_factory=lambda: proxy_trust([]))

    def __post_init__(self) -> None:
        self.ladder = HalvingLadder(self.spec, rung0_ranks=False)
        for record in self.session.controller.records.values():  # a resumed search's pairs
            entries = {e.get("rung"): e for e in record.get("rungs") or []}
            zero, one = entries.get(0) or {}, entries.get(1) or {}
            if (
                zero.get("epochs") == 0
                and zero.get("ranked") is False
                and one.get("accuracy") is not None
                and zero.get("accuracy") is not None
            ):
                self.pairs.append((float(zero["accuracy"]), float(one["accuracy"])))
        self.trust = proxy_trust(self.pairs)
        self.ladder.rung0_ranks = self.trust.trusted

    # -- what runs next ---------------------------------------------------------------------
    def _spent(self) -> bool:
        budget = self.session.budget
        return budget is not None and budget.spent and self.ran > 0

    def _can_propose(self) -> bool:
        session = self.session
        if self._spent() or session.failures.aborted is not None:
            return False
        return session.config.trials - session.controller.n_finished - len(self.proposals) > 0

    def next_job(self) -> Job | None:
        """The next job to start: a promotion first, else a new proposal; None when nothing can
        start now (see :attr:`finished` for whether anything ever will)."""
        while True:
            promoted = self.ladder.next_job()
            if promoted is not None:
                number, rung = promoted
                ended = "budget" if self._spent() else self.session.failures.aborted and "abort"
                if ended:
                    self.ladder.withdraw(number)
                    self._stop(Stop(number, rung - 1, -1, 0, 0, 0), why=ended)
                    continue
                return self._job(self.proposals[number], rung)
            if self._can_propose():
                return self._propose()
            self.ladder.close()  # no trial enters any more: the last bracket decides
            self._settle_stopped()
            if not self.ladder.has_jobs:
                return None

    @property
    def finished(self) -> bool:
        return not self.running and not self.ladder.busy and not self._can_propose()

    def _propose(self) -> Job:
        proposal = self.session.ask()
        self.proposals[proposal.number] = proposal
        self.rungs[proposal.number] = []
        full = proposal.policy.finetune.epochs
        top = self.spec.top(full)
        if proposal.start is not None:
            top = 0  # a start runs its full epochs at once, outside the ladder
        else:
            self.ladder.enter(proposal.number, top=top)
        self.tops[proposal.number] = top
        return self._job(proposal, 0)

    def _job(self, proposal: Proposal, rung: int) -> Job:
        self.running.add(proposal.number)
        final = rung == self.tops[proposal.number]
        if rung == 1 and self.rungs.get(proposal.number):
            self.rungs[proposal.number][0]["ranked"] = self.ladder.ranked(proposal.number, 0)
        full = proposal.policy.finetune.epochs
        epochs = full if final else self.spec.epochs(rung, full)
        policy = proposal.policy if epochs == full else at_epochs(proposal.policy, epochs)
        return Job(proposal, rung, policy, final)

    # -- what a result does ---------------------------------------------------------------------
    def done(self, job: Job, record: TrialRecord) -> None:
        """A job's record (built by the backend with ``new_record``): climb, stop or record."""
        number = job.proposal.number
        self.running.discard(number)
        self.ran += 1
        entry = dict(record.pop("rung", None) or {"rung": job.rung})  # type: ignore[misc]
        entry.setdefault("epochs", job.policy.finetune.epochs)
        entry.setdefault("state", str(record["state"]))
        entry.setdefault("seconds", record.get("duration_s"))
        if job.rung == 1 and not self.ladder.ranked(number, 0):
            self._pair(number, entry)  # only from brackets rung 0 did not cut: an unbiased sample
        self.rungs[number].append(entry)
        self.last[number] = record
        point = self._point(record, entry)
        if job.proposal.start is not None:
            self._record(number, record, ranked_by=None)
            return
        self.ladder.add(number, job.rung, point)
        if job.final or point is None:
            self._record(number, record, ranked_by=self._ranked_by(number))
        self._settle_stopped()

    def _pair(self, number: int, entry: dict[str, Any]) -> None:
        """A rung-1 result beside the trial's rung-0 estimate: one more pair for the proxy's
        trust, decided again (it applies to the rung-0 decisions still to come)."""
        first = self.rungs[number][0] if self.rungs[number] else {}
        if first.get("epochs") != 0 or first.get("accuracy") is None:
            return
        if entry.get("accuracy") is None:
            return
        self.pairs.append((float(first["accuracy"]), float(entry["accuracy"])))
        before, self.trust = self.trust.trusted, proxy_trust(self.pairs)
        self.ladder.rung0_ranks = self.trust.trusted
        self.session.run_dir.write_json(
            "halving.json", {"rung0_trust": self.trust.to_dict(), "pairs": self.pairs}
        )
        if before != self.trust.trusted and self.session.progress is not None:
            verdict = "ranks from now on" if self.trust.trusted else "no longer ranks"
            self.session.progress.note(
                f"halving: rung 0 ({first.get('estimator')}) {verdict}: Spearman "
                f"{self.trust.rho:.2f} with rung 1 on {self.trust.pairs} trials"
            )

    def _point(self, record: TrialRecord, entry: dict[str, Any]) -> tuple[float, ...] | None:
        """The rung's objective values, all to be minimized; None when it cannot climb (it
        failed, or broke a constraint on an exact metric: size, latency)."""
        if record["state"] not in (TrialState.COMPLETE, TrialState.INFEASIBLE):
            return None
        metrics = record.get("metrics") or {}
        teacher = self.session.teacher
        if self.session.objectives.structural_violation(metrics, record.get("teacher")):
            return None
        values = []
        for metric, direction in zip(
            self.session.objectives.metrics, self.session.objectives.directions, strict=True
        ):
            if metric == "accuracy" and entry.get("accuracy") is not None:
                value = float(entry["accuracy"])
            else:
                value = comparable(record, metric, teacher)
            if value is None:
                return None
            values.append(-value if direction == Direction.MAXIMIZE else value)
        return tuple(values)

    def _ranked_by(self, number: int) -> dict[str, Any] | None:
        """The entry of the highest rung below the last where the ladder ranked the trial (a
        rung-0 entry with ``ranked: false`` promoted without ranking)."""
        below = [e for e in self.rungs[number][:-1] if e.get("ranked", True)]
        return dict(below[-1]) if below else None

    def _settle_stopped(self) -> None:
        for stop in self.ladder.take_stopped():
            self._stop(stop, why="rank")

    def _stop(self, stop: Stop, *, why: str) -> None:
        number = stop.number
        entry = self.rungs[number][-1]
        epochs = f"{entry['epochs']} epoch" + ("" if entry["epochs"] == 1 else "s")
        where = f"rung {stop.rung} ({epochs}, {entry.get('estimator')})"
        if why == "budget":
            error = f"stopped by successive halving at {where}: budget spent before it went up"
        elif why == "abort":
            error = f"stopped at {where}: the search stopped (its first trials all failed)"
        else:
            error = (
                f"stopped by successive halving at {where}: non-dominated rank {stop.rank}, "
                f"place {stop.place} of {stop.of}; the top {stop.promoted} went up"
            )
        record = dict(self.last[number])
        record.update(state=TrialState.PRUNED, error=error, stopped_at_rung=stop.rung)
        self._record(number, record, ranked_by=dict(entry))  # type: ignore[arg-type]

    def _record(self, number: int, record: TrialRecord, *, ranked_by: Any) -> None:
        record["rungs"] = list(self.rungs.pop(number))
        record["ranked_by"] = ranked_by
        record["duration_s"] = round(sum(e.get("seconds") or 0.0 for e in record["rungs"]), 3)
        self.last.pop(number, None)
        self.tops.pop(number, None)
        self.session.complete(self.proposals.pop(number), record)


__all__ = ["Job", "LadderRun"]
