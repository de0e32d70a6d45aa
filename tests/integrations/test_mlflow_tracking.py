"""MlflowTracker against a real sqlite store and a real ``mlflow server`` on localhost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from _support.study_inputs import QUICK_SEARCH

from autocompress.errors import ConfigError
from autocompress.integrations.mlflow import MlflowTracker, resolve_tracking_uri

MLFLOW_BIN = Path(sys.executable).with_name("mlflow")


def make_record(number: int, state: str = "complete", **overrides: Any) -> dict[str, Any]:
    """One ``trials.jsonl`` row in the fixed format."""
    policy = {
        "distill": {"alpha": 0.5, "temperature": 4.0},
        "prune": {"default": 0.0, "layers": {"features.*": 0.5}},
        "quant": {"default": 32, "layers": {"classifier": 8}},
        "finetune": {"lambda": 0.0001, "epochs": 2, "lr": 0.001},
    }
    metrics: dict[str, Any] = {}
    if state in ("complete", "infeasible"):
        metrics = {
            "accuracy": 0.97 - 0.01 * number,
            "size_bytes": 100_000 + 10_000 * number,
            "latency_ms": 0.5 + 0.1 * number,
            "latency_p90_ms": 0.6 + 0.1 * number,
            "params": 100_000,
            "macs": 2_000_000,
            "speedup": 2.1,
            "compression": 5.3,
            "teacher": {"accuracy": 0.98, "size_bytes": 654_321, "latency_ms": 1.1},
            "layers": {
                "features.0": {"prune": 0.5, "bits": 8, "mode": "int-compute"},
                "features.2": {"prune": 0.25, "bits": 8, "mode": "int-compute"},
                "classifier": {"prune": 0.0, "bits": 32, "mode": "float"},
            },
            "artifact": "model.pt",
            "target": "torch",
            "threads": 1,
        }
    record = {
        "number": number,
        "state": state,
        "policy": policy,
        "metrics": metrics,
        "error": "RuntimeError: boom\n" + "x" * 9000 if state == "failed" else None,
        "params": {"distill.alpha": 0.5, "prune.features.*": 0.5},
        "start": None,
        "node": None,
        "host": "testhost",
        "duration_s": 1.5,
        "epochs": [{"epoch": 1, "accuracy": 0.9}, {"epoch": 2, "accuracy": 0.95}]
        if state != "failed"
        else [],
    }
    record.update(overrides)
    return record


CONFIG = {
    "name": "mlp-search",
    "task": "examples/mnist_mlp.py",
    "search_space": "mlp-default",
    "objectives": ["accuracy", "size_bytes", "latency_ms"],
    "target": "torch",
    "sampler": "tpe",
    "seed": 0,
    "trials": 4,
    "backend": "local",
}
RECORDS = [
    make_record(0, start="identity"),
    make_record(1),
    make_record(2, "failed"),
    make_record(3, "pruned"),
]


def _children(uri: str, parent: str, experiment: str = "mlp-search") -> dict[int, Any]:
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    return {int(run.data.tags["trial.number"]): run for run in runs}


def _check_search(uri: str, run_dir: Path) -> None:
    """Log RECORDS, finish with trials 0 and 1 on the front, and check what the store holds."""
    model_dir = run_dir / "trials" / "1"
    model_dir.mkdir(parents=True)
    (model_dir / "model.pt").write_bytes(b"weights")
    (run_dir / "pareto.json").write_text(json.dumps({"trials": [{"number": 0}, {"number": 1}]}))

    tracker = MlflowTracker(tracking_uri=uri, experiment=None, run_dir=run_dir)
    tracker.check_reachable()
    parent = tracker.start_search(CONFIG)
    for record in RECORDS:
        assert tracker.log_trial(record) is not None
    # trial 1 polished after the search: a nested run under its run, polish.* on its run
    polish = {**RECORDS[1], "metrics": {**RECORDS[1]["metrics"], "accuracy": 0.97}}
    polish |= {"stage": "polish", "duration_s": 4.5, "artifact": "trials/1/polish"}
    nested = tracker.log_polish(polish)
    assert nested is not None and tracker.log_polish(polish) == nested  # logged once
    assert tracker.finish({0, 1}, [run_dir / "pareto.json"], {1: model_dir}) is True

    client = mlflow.MlflowClient(tracking_uri=uri)
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.params["sampler"] == "tpe"
    assert parent_run.data.params["trials"] == "4"
    parent_files = {a.path for a in client.list_artifacts(parent)}
    assert {"pareto.json", "config.json", "models"} <= parent_files
    assert [a.path for a in client.list_artifacts(parent, "models/trial-1")] == [
        "models/trial-1/model.pt"
    ]

    children = _children(uri, parent)
    assert sorted(children) == [0, 1, 2, 3]
    expected_status = {0: "FINISHED", 1: "FINISHED", 2: "FAILED", 3: "KILLED"}
    for number, run in children.items():
        assert run.info.status == expected_status[number]
        assert run.data.tags["pareto"] == ("true" if number in (0, 1) else "false")
        assert run.data.tags["state"] == RECORDS[number]["state"]
        assert run.data.params["distill.alpha"] == "0.5"
        assert run.data.params["finetune.epochs"] == "2"
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "policy.json" in files

    complete = children[1].data
    assert complete.metrics["accuracy"] == pytest.approx(0.96)
    assert complete.metrics["size_bytes"] == 110_000
    assert complete.metrics["latency_p90_ms"] == pytest.approx(0.7)
    assert complete.params["prune.max"] == "0.5"
    assert complete.params["prune.min"] == "0.0"
    assert complete.params["bits.count.8"] == "2"
    assert complete.params["bits.count.32"] == "1"
    history = client.get_metric_history(children[1].info.run_id, "epoch_accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.95)]
    assert children[0].data.tags["start"] == "identity"

    failed = children[2]
    assert failed.data.tags["error"].startswith("RuntimeError: boom")
    assert len(failed.data.tags["error"]) <= 8000
    error_file = client.download_artifacts(failed.info.run_id, "error.txt", str(run_dir / "dl"))
    assert Path(error_file).read_text() == RECORDS[2]["error"]
    # Failed trial has no measured layers: summaries come from the policy.
    assert failed.data.params["prune.max"] == "0.5"
    assert failed.data.params["bits.count.32"] == "1"

    polished = client.get_run(nested)
    assert polished.data.tags["mlflow.parentRunId"] == children[1].info.run_id
    assert polished.data.tags["polish.of"] == "1"
    assert polished.data.metrics["accuracy"] == pytest.approx(0.97)
    assert complete.metrics["polish.accuracy"] == pytest.approx(0.97)
    assert complete.metrics["polish.duration_s"] == pytest.approx(4.5)
    assert complete.tags["polished"] == "true"

    # Resume: the same run directory reuses the parent and logs nothing twice.
    again = MlflowTracker(tracking_uri=uri, experiment=None, run_dir=run_dir)
    assert again.start_search(CONFIG) == parent
    assert again.sync(RECORDS) == 0
    assert again.log_polish(polish) == nested
    assert len(_children(uri, parent)) == 4


def test_sqlite_store(tmp_path: Path) -> None:
    _check_search(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "run")


def test_long_values_and_many_params(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(tracking_uri=uri, experiment="big", run_dir=tmp_path / "run")
    tracker.check_reachable()
    space = {"rules": [{"glob": f"blocks.{i}.*", "prune": [0.0, 0.5]} for i in range(400)]}
    parent = tracker.start_search({**CONFIG, "search_space": space})
    layers = {f"prune.blocks.{i}.conv": 0.25 for i in range(250)}
    run_id = tracker.log_trial(make_record(0, params=layers))

    client = mlflow.MlflowClient(tracking_uri=uri)
    params = client.get_run(parent).data.params
    assert "see artifact params/search_space.json" in params["search_space"]
    stored = client.download_artifacts(parent, "params/search_space.json", str(tmp_path))
    assert json.loads(Path(stored).read_text()) == space
    child = client.get_run(run_id).data.params
    assert child["space.prune.blocks.249.conv"] == "0.25"
    assert len(child) > 250  # more than two batches of 100 params


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``mlflow server`` on 127.0.0.1 in its own process group, stopped by its own pid."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.uri = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90) -> None:
        self.process = subprocess.Popen(
            [
                str(MLFLOW_BIN),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'db.sqlite'}",
                "--default-artifact-root",
                str(self.root / "art"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "server.log").open("ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.root / "server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"mlflow server did not answer within {timeout_s} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("server"), _free_port())
    srv.start()
    yield srv
    srv.stop()


class Outage:
    """A TCP relay in front of the server that can be switched off (connections refused) and on."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        if self._listener is not None:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            self._listener.close()
            self._listener = None
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def test_http_server(server: Server, tmp_path: Path) -> None:
    _check_search(server.uri, tmp_path / "run")


def test_unreachable_server_fails_fast(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    tracker = MlflowTracker(tracking_uri=uri, experiment="x", run_dir=tmp_path)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=f"MLflow tracking server at {uri} is unreachable"):
        tracker.check_reachable(timeout_s=5)
    assert time.monotonic() - start < 15


def test_sync_after_outage(server: Server, tmp_path: Path) -> None:
    relay = Outage(server.port)
    relay.up()
    run_dir = tmp_path / "run"
    tracker = MlflowTracker(tracking_uri=relay.uri, experiment=None, run_dir=run_dir, max_retries=0)
    parent = tracker.start_search({**CONFIG, "name": "outage"})
    assert tracker.log_trial(RECORDS[0]) is not None

    relay.down()
    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match="MLflow tracking"):
        assert tracker.log_trial(RECORDS[1]) is None
    assert tracker.log_trial(RECORDS[2]) is None  # warned once; a quick probe, no second try
    assert time.monotonic() - start < 15
    assert tracker.sync(RECORDS[:3]) == 0  # still down: nothing uploaded, nothing raised
    assert sorted(tracker.logged()) == [0]

    relay.up()
    try:
        assert tracker.sync(RECORDS[:3]) == 2
        assert sorted(tracker.logged()) == [0, 1, 2]
        assert sorted(_children(server.uri, parent, "outage")) == [0, 1, 2]
        assert tracker.sync(RECORDS[:3]) == 0
    finally:
        relay.down()


def test_resolve_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, None) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None, None) == "http://env:5000"
    assert resolve_tracking_uri(None, "sqlite:///c.db") == "sqlite:///c.db"
    assert resolve_tracking_uri("http://cli:1", "sqlite:///c.db") == "http://cli:1"
    for bad in ("./mlruns", "file:///tmp/mlruns", "/abs/mlruns"):
        with pytest.raises(ConfigError, match="file store"):
            resolve_tracking_uri(bad, None)


def test_real_search_over_http(server: Server, tmp_path: Path) -> None:
    """A real search (local backend) tracked on the server: parent, children, pareto tags."""
    from autocompress.api import make_tracker, run_search
    from autocompress.study.config import SearchConfig

    config = SearchConfig.from_dict(
        {
            **QUICK_SEARCH,
            "name": "e2e-http",
            "task": str(Path(__file__).resolve().parents[1] / "_support" / "tasks.py") + ":mlp",
            "trials": 4,
            "epochs": 1,
            "backend": "local",
            "tracking_uri": server.uri,
            "out": str(tmp_path / "run"),
        }
    )
    result = run_search(config, tracker=make_tracker(config))
    pareto = json.loads((tmp_path / "run" / "pareto.json").read_text())
    on_front = {t["number"] for t in pareto["trials"]}
    assert on_front == {r["number"] for r in result.pareto}

    client = mlflow.MlflowClient(tracking_uri=server.uri)
    experiment = client.get_experiment_by_name("e2e-http")
    parents = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`autocompress.role` = 'search'"
    )
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["trials"] == "4"
    assert "pareto.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = _children(server.uri, parent.info.run_id, experiment="e2e-http")
    assert sorted(children) == [r["number"] for r in result.trials]
    for number, run in children.items():
        record = next(r for r in result.trials if r["number"] == number)
        assert run.data.tags["state"] == record["state"]
        assert run.data.tags["pareto"] == ("true" if number in on_front else "false")
        assert "policy.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
        if record["state"] == "complete":
            assert run.data.metrics["size_bytes"] == record["metrics"]["size_bytes"]
            assert run.data.metrics["accuracy"] == pytest.approx(record["metrics"]["accuracy"])


def test_cli_search_against_unreachable_server_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        json.dumps(
            {
                "name": "x",
                "task": str(Path(__file__).resolve().parents[1] / "_support" / "tasks.py") + ":mlp",
                "trials": 2,
            }
        )
    )
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "autocompress.cli",
            "search",
            str(cfg),
            "--backend",
            "local",
            "--out",
            str(tmp_path / "run"),
            "--tracking-uri",
            f"http://127.0.0.1:{_free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode == 2
    assert "unreachable" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 60


def test_resume_closes_runs_a_killed_driver_left_running(tmp_path: Path) -> None:
    """A child created but never finished (the driver died mid-log) ends KILLED on resume;
    the trial is logged once, by the resumed search, from its record."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    first = MlflowTracker(tracking_uri=uri, experiment="orphans", run_dir=run_dir)
    parent = first.start_search({"name": "orphans"})
    first.log_trial(make_record(0))
    orphan = first.client.create_run(
        first.experiment_id_, run_name="trial-1", tags={"mlflow.parentRunId": parent}
    ).info.run_id  # what a driver killed inside log_trial leaves behind

    resumed = MlflowTracker(tracking_uri=uri, experiment="orphans", run_dir=run_dir)
    assert resumed.start_search({"name": "orphans"}) == parent
    assert resumed.client.get_run(orphan).info.status == "KILLED"
    assert resumed.sync([make_record(0), make_record(1)]) == 1
    children = resumed.client.search_runs(
        [resumed.experiment_id_],
        filter_string=f"tags.mlflow.parentRunId = '{parent}' and attributes.status != 'KILLED'",
    )
    assert sorted(int(r.data.tags["trial.number"]) for r in children) == [0, 1]
