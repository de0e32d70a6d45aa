"""A search on a two-node Ray cluster: the head here, a worker node in a network namespace.

Needs root and ``ip netns``. The namespace, its veth pair and every Ray process the test starts
are removed at the end (processes by the PIDs whose command line names the test's temp dirs).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

TESTS = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _can_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns is unavailable: {probe.stderr.strip()}"
    return None


pytestmark = pytest.mark.skipif(_can_netns() is not None, reason=str(_can_netns()))


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_using(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(proc.name))
    return pids


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def two_nodes():
    """(address, head temp dir, worker temp dir) of a head node and a namespaced worker node."""
    tag = f"{os.getpid() % 10000}{random.randrange(100)}"
    ns, veth0, veth1 = f"acn{tag}", f"acv{tag}a", f"acv{tag}b"
    octet = random.randrange(1, 250)
    head_ip, worker_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"
    port = _free_port()
    head_tmp = Path(tempfile.mkdtemp(prefix="ach"))
    worker_tmp = Path(tempfile.mkdtemp(prefix="acw"))
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
        "PYTHONPATH": str(TESTS),
    }
    env.pop("RAY_ADDRESS", None)
    ray = str(BIN / "ray")
    try:
        _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", veth0, "type", "veth", "peer", "name", veth1)
        _sh("ip", "link", "set", veth1, "netns", ns)
        _sh("ip", "addr", "add", f"{head_ip}/24", "dev", veth0)
        _sh("ip", "link", "set", veth0, "up")
        _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{worker_ip}/24", "dev", veth1)
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", veth1, "up")
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        subprocess.run(
            [ray, "start", "--head", f"--node-ip-address={head_ip}", f"--port={port}",
             "--num-cpus=1", "--disable-usage-stats", "--include-dashboard=false",
             f"--temp-dir={head_tmp}"],
            env=env, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        subprocess.run(
            ["ip", "netns", "exec", ns, ray, "start", f"--address={head_ip}:{port}",
             f"--node-ip-address={worker_ip}", "--num-cpus=1", "--disable-usage-stats",
             f"--temp-dir={worker_tmp}"],
            env=env, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        yield f"{head_ip}:{port}", env
    finally:
        _kill(_pids_using(str(worker_tmp)) + _pids_using(str(head_tmp)))
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", veth0], capture_output=True)
        time.sleep(0.5)
        _kill(_pids_using(str(worker_tmp)) + _pids_using(str(head_tmp)))
        shutil.rmtree(head_tmp, ignore_errors=True)
        shutil.rmtree(worker_tmp, ignore_errors=True)


SLOW_TASK = """
import time

from autocompress.task import top1_accuracy
from _support.tasks import mlp


def slow_metric(model, val_loader):
    time.sleep(1.0)  # trials must overlap, or one reused actor may run them all
    return top1_accuracy(model, val_loader)


def slow_mlp():
    task = mlp()
    task.metric = slow_metric
    return task
"""


def test_search_runs_trials_on_both_nodes(two_nodes, tmp_path):
    address, env = two_nodes
    # a task file loaded by path: its module is shipped to the workers by value
    (tmp_path / "slow_task.py").write_text(SLOW_TASK)
    cfg = tmp_path / "search.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "two-nodes",
                "task": "slow_task.py:slow_mlp",
                "trials": 6,
                "epochs": 2,
                "scheduler": "none",
                "report_every": 0,
            }
        )
    )
    run = tmp_path / "run"
    done = subprocess.run(
        [str(BIN / "autocompress"), "search", str(cfg), "--backend", "ray",
         "--address", address, "--out", str(run), "--no-tracking"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    records = [json.loads(line) for line in (run / "trials.jsonl").open()]
    assert len(records) == 6
    nodes = {r["node"] for r in records}
    ips = {r["node_ip"] for r in records}
    assert len(nodes) == 2, f"trials ran on {nodes}"
    assert ips == {address.split(":")[0], address.split(":")[0][:-1] + "2"}
