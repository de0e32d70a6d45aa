"""Track a search in MLflow from the driver: one parent run per search, one child run per trial.

Everything goes through an explicit ``MlflowClient`` (no global active run), so the tracker is
safe to use from the one driver thread. A local ledger, ``<run_dir>/mlflow.json``, maps trial
numbers to child run ids: nothing is logged twice, a resumed search reuses its parent run, and
``sync`` uploads trials that could not be logged while the tracking server was down.

Example::

    uri = resolve_tracking_uri(cli_uri, config.get("tracking_uri"))
    tracker = MlflowTracker(tracking_uri=uri, experiment="mnist-mlp", run_dir=run_dir)
    tracker.check_reachable()
    tracker.start_search(config)
    for record in records:
        tracker.log_trial(record)
    tracker.sync(records)
    tracker.finish(pareto_numbers, [run_dir / "pareto.json"], {7: run_dir / "trials" / "7"})
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import requests
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from autocompress.errors import ConfigError
from autocompress.integrations._mlflow_payload import (
    as_params,
    jsonable,
    log_batch,
    trial_metrics,
    trial_params,
    truncate,
)
from autocompress.integrations._mlflow_store import is_http, probe, resolve_tracking_uri
from autocompress.integrations.tracker import TrialState

__all__ = ["MlflowTracker", "resolve_tracking_uri"]

logger = logging.getLogger(__name__)

LEDGER_NAME = "mlflow.json"
PARENT_PARAMS = (
    "task",
    "search_space",
    "objectives",
    "target",
    "sampler",
    "seed",
    "trials",
    "backend",
)
PRUNED_STATUS = "KILLED"  # a pruned trial was stopped early on purpose: KILLED, tagged state=pruned
_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.INFEASIBLE: "FINISHED",
    TrialState.FAILED: "FAILED",
    TrialState.PRUNED: PRUNED_STATUS,
}

# Errors a tracking call may raise when the store is unreachable or refuses a request. They are
# caught in ``log_trial``/``sync``/``finish``: tracking never kills a search.
_TRACKING_ERRORS = (MlflowException, requests.RequestException, OSError)


class MlflowTracker:  # a Tracker (autocompress.integrations.tracker)
    """Log one search to MLflow: a parent run, a child run per trial, reports as parent artifacts.

    Args:
        tracking_uri: where to log, e.g. from :func:`resolve_tracking_uri`.
        experiment: MLflow experiment name; ``None`` means the search's config ``name``.
        run_dir: the search's run directory; the ledger ``mlflow.json`` is kept there.
        max_retries: HTTP retries per request (MLflow's default backs off for minutes).
        request_timeout_s: HTTP timeout per request.
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str | None,
        run_dir: Path,
        max_retries: int = 2,
        request_timeout_s: int = 30,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_dir = Path(run_dir)
        self.max_retries = max_retries
        self.request_timeout_s = request_timeout_s
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id_: str | None = None
        self.parent_run_id_: str | None = None
        self._ledger: dict[str, Any] = self._read_ledger()
        self._offline = False
        self._warned = False

    # ----------------------------------------------------------------------------- connection

    def check_reachable(self, timeout_s: float = 10) -> None:
        """Fail fast with ``ConfigError`` when an HTTP tracking server does not answer.

        (A sqlite database and its directory are created by MLflow when the client starts.)"""
        if not is_http(self.tracking_uri):
            return
        reason = probe(self.tracking_uri, timeout_s)
        if reason is not None:
            raise ConfigError(
                f"MLflow tracking server at {self.tracking_uri} is unreachable: {reason}. "
                "Start it, or pass another --tracking-uri (e.g. sqlite:///mlflow.db)"
            )

    @contextlib.contextmanager
    def _request_settings(self) -> Iterator[None]:
        """Bound MLflow's HTTP retries and timeout, and keep its per-run URL lines off stdout,
        unless the user set these in the environment."""
        limits = {
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.max_retries),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.request_timeout_s),
        }
        added = {key: value for key, value in limits.items() if key not in os.environ}
        os.environ.update(added)
        try:
            yield
        finally:
            for key in added:
                os.environ.pop(key, None)

    def _tracking_failed(self, what: str, error: BaseException) -> None:
        self._offline = True
        message = (
            f"MLflow tracking at {self.tracking_uri} failed while {what}: {error}. The search goes "
            "on; trials not logged now are uploaded by the next sync (or a resumed search)."
        )
        if not self._warned:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            self._warned = True
        else:
            logger.debug(message)

    def _online(self) -> bool:
        """After a failure, a quick probe decides whether to try the store again."""
        if self._offline and probe(self.tracking_uri, timeout_s=2) is None:
            self._offline = False
        return not self._offline

    # ----------------------------------------------------------------------------- ledger

    @property
    def ledger_path(self) -> Path:
        return self.run_dir / LEDGER_NAME

    def _read_ledger(self) -> dict[str, Any]:
        if not self.ledger_path.exists():
            return {"trials": {}}
        ledger = json.loads(self.ledger_path.read_text())
        if ledger.get("tracking_uri") != self.tracking_uri:
            return {"trials": {}}  # another store: nothing in it is ours yet
        ledger.setdefault("trials", {})
        return ledger

    def _write_ledger(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.ledger_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self._ledger, indent=2, sort_keys=True))
        os.replace(tmp, self.ledger_path)

    def logged(self) -> dict[int, str]:
        """Trial number → child run id, for every trial fully logged."""
        return {
            int(number): entry["run_id"]
            for number, entry in self._ledger["trials"].items()
            if entry.get("done")
        }

    # ----------------------------------------------------------------------------- search

    def start_search(self, config: Mapping[str, Any]) -> str:
        """Create (or, when the ledger names one that still exists, reuse) the parent run."""
        name = str(config.get("name") or self.run_dir.name)
        experiment = self.experiment or name
        with self._request_settings():
            self.experiment_id_ = self._experiment_id(experiment)
            parent = self._existing_parent()
            if parent is not None:
                self.client.update_run(parent, status="RUNNING")
                self._close_orphans(parent)
            else:
                parent = self.client.create_run(
                    self.experiment_id_, run_name=name, tags={"autocompress.role": "search"}
                ).info.run_id
                params, artifacts = as_params(
                    {key: config[key] for key in PARENT_PARAMS if key in config}
                )
                for path, text in artifacts.items():
                    self.client.log_text(parent, text, path)
                self.client.log_dict(parent, jsonable(dict(config)), "config.json")
                log_batch(self.client, parent, params=params)
                self._ledger = {"trials": {}}
        self.parent_run_id_ = parent
        self._ledger.update(
            tracking_uri=self.tracking_uri,
            experiment=experiment,
            experiment_id=self.experiment_id_,
            parent_run_id=parent,
        )
        self._write_ledger()
        return parent

    def _close_orphans(self, parent: str) -> None:
        """Child runs a killed driver left RUNNING end KILLED (a resumed search logs their
        trials again from trials.jsonl; the ledger keeps each trial logged once)."""
        filter_string = f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'RUNNING'"
        for run in self.client.search_runs([self.experiment_id_], filter_string=filter_string):
            self.client.set_terminated(run.info.run_id, status="KILLED")

    def _experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            return self.client.create_experiment(name)
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id

    def _existing_parent(self) -> str | None:
        run_id = self._ledger.get("parent_run_id")
        if not run_id or self._ledger.get("experiment_id") != self.experiment_id_:
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        return run_id if run.info.lifecycle_stage == "active" else None

    # ----------------------------------------------------------------------------- trials

    def log_trial(self, record: Mapping[str, Any]) -> str | None:
        """Log one trial as a child run; return its run id, or ``None`` when left for ``sync``.

        Never raises on a tracking failure: it warns once and leaves the trial unlogged.
        """
        if self.parent_run_id_ is None:
            raise RuntimeError("MlflowTracker.log_trial called before start_search")
        number = int(record["number"])
        done = self.logged()
        if number in done:
            return done[number]
        if not self._online():
            return None
        try:
            with self._request_settings():
                return self._log_trial(number, record)
        except _TRACKING_ERRORS as error:
            self._tracking_failed(f"logging trial {number}", error)
            return None

    def _log_trial(self, number: int, record: Mapping[str, Any]) -> str:
        partial = self._ledger["trials"].get(str(number))
        if partial is not None:  # created before an outage cut it short: start it over
            with contextlib.suppress(MlflowException):
                self.client.delete_run(partial["run_id"])
        state = str(record.get("state", TrialState.COMPLETE))
        end = int(time.time() * 1000)
        start = end - int(1000 * float(record.get("duration_s") or 0.0))
        run_id = self.client.create_run(
            self.experiment_id_,
            start_time=start,
            run_name=f"trial-{number}",
            tags={"mlflow.parentRunId": self.parent_run_id_},
        ).info.run_id
        self._ledger["trials"][str(number)] = {"run_id": run_id, "done": False}
        self._write_ledger()

        policy = record.get("policy") or {}
        metrics_in = record.get("metrics") or {}
        params, artifacts = as_params(trial_params(policy, metrics_in, record.get("params") or {}))
        artifacts["policy.json"] = json.dumps(policy, indent=2, sort_keys=True)
        tags = {
            "trial.number": str(number),
            "state": state,
            "node": str(record.get("node") or "none"),
            "host": str(record.get("host") or "none"),
            "start": str(record.get("start") or "none"),
        }
        error = record.get("error")
        if error:
            tags["error"] = truncate(str(error), MAX_TAG_VAL_LENGTH)
            artifacts["error.txt"] = str(error)
        for path, text in artifacts.items():
            self.client.log_text(run_id, text, path)
        log_batch(
            self.client,
            run_id,
            metrics=trial_metrics(metrics_in, record.get("epochs") or [], record, end),
            params=params,
            tags=tags,
        )
        self.client.set_terminated(run_id, status=_STATUS.get(state, "FINISHED"), end_time=end)
        self._ledger["trials"][str(number)]["done"] = True
        self._write_ledger()
        return run_id

    def log_polish(self, record: Mapping[str, Any]) -> str | None:
        """A polished trial (``polish.jsonl``): a nested run under the trial's run and
        ``polish.*`` metrics on it, once (the ledger); left for later while the trial's own
        run is not logged or the store is unreachable."""
        from autocompress.integrations._mlflow_polish import log_polished

        number, polishes = int(record["number"]), self._ledger.setdefault("polishes", {})
        trial_run = self.logged().get(number)
        if str(number) in polishes or trial_run is None or not self._online():
            return polishes.get(str(number))
        try:
            with self._request_settings():
                run_id = log_polished(self.client, str(self.experiment_id_), trial_run, record)
        except _TRACKING_ERRORS as error:
            self._tracking_failed(f"logging the polish of trial {number}", error)
            return None
        polishes[str(number)] = run_id
        self._write_ledger()
        return run_id

    def sync(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Log every record not yet in the ledger; return how many were uploaded now."""
        self._offline = probe(self.tracking_uri, timeout_s=5) is not None
        if self._offline:
            return 0
        before = set(self.logged())
        for record in records:
            if int(record["number"]) not in before:
                self.log_trial(record)
        return len(set(self.logged()) - before)

    def finish(
        self,
        pareto_numbers: set[int],
        files: Sequence[Path],
        models: Mapping[int, Path],
    ) -> bool:
        """Tag every child ``pareto`` true/false, attach reports and Pareto models to the parent,
        end the parent FINISHED. Call ``sync(records)`` first. Returns ``False`` (after a warning)
        when the store could not be reached."""
        parent = self.parent_run_id_
        if parent is None:
            raise RuntimeError("MlflowTracker.finish called before start_search")
        try:
            with self._request_settings():
                for number, run_id in self.logged().items():
                    self.client.set_tag(run_id, "pareto", str(number in pareto_numbers).lower())
                for path in files:
                    if Path(path).exists():
                        self.client.log_artifact(parent, str(path))
                for number, path in sorted(models.items()):
                    destination = f"models/trial-{number}"
                    if Path(path).is_dir():
                        self.client.log_artifacts(parent, str(path), destination)
                    else:
                        self.client.log_artifact(parent, str(path), destination)
                self.client.set_tag(parent, "pareto.trials", json.dumps(sorted(pareto_numbers)))
                self.client.set_terminated(parent, status="FINISHED")
        except _TRACKING_ERRORS as error:
            self._tracking_failed("finishing the search", error)
            return False
        self._ledger["finished"] = True
        self._write_ledger()
        return True
