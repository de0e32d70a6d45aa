from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

from autocompress.measure.gate import FileGate


def _worker(counter: str, stop: str, name: str) -> None:
    gate = FileGate(name)
    n = 0
    with gate.working():
        while not Path(stop).exists():
            n += 1
            # written whole, then renamed: the test never reads a truncated, empty counter
            Path(counter + ".tmp").write_text(str(n))
            os.replace(counter + ".tmp", counter)
            gate.step()
            time.sleep(0.001)
    gate.close()


def test_exclusive_parks_the_other_trials_and_lets_them_go(tmp_path):
    name = f"actest-{tmp_path.name}"
    counter, stop = tmp_path / "n", tmp_path / "stop"
    proc = mp.get_context("spawn").Process(target=_worker, args=(str(counter), str(stop), name))
    proc.start()
    try:
        deadline = time.time() + 30
        while not counter.exists() and time.time() < deadline:
            time.sleep(0.01)
        gate = FileGate(name)
        with gate.working():
            with gate.exclusive():
                before = int(counter.read_text())
                time.sleep(0.3)
                during = int(counter.read_text())
            time.sleep(0.3)
            after = int(counter.read_text())
        gate.close()
        assert during - before <= 1, "the other trial kept working while timing was exclusive"
        assert after > during, "the other trial did not resume after timing"
    finally:
        stop.write_text("1")
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
