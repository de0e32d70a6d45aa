"""Latency timing alone on a machine while other trials train beside it.

Two trials side by side on a 2-core machine skew each other's latency (seen here: +50 % on
the digits CNN while the neighbour trained). A :class:`FileGate` keeps timing exclusive: every
trial holds a shared lock while it works and passes a turnstile between training batches;
a trial about to time its artifact takes the turnstile, waits for the others to park at
their next batch boundary, times, and lets them go. Locks are ``flock`` on files in the
machine's temp folder, so they are per machine and die with their process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol


class Gate(Protocol):
    def step(self) -> None:
        """Between training batches: let a waiting measurement go first."""

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Hold the machine for timing."""

    def released(self) -> contextlib.AbstractContextManager[None]:
        """Step aside while blocked on something else (e.g. reporting to the driver)."""


class NoGate:
    """In-process trials run one at a time: nothing to coordinate."""

    def step(self) -> None:
        pass

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def released(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


class FileGate:
    """Shared lock while working, exclusive while timing, a turnstile so timing is not starved."""

    def __init__(self, name: str = "autocompress") -> None:
        folder = Path(tempfile.gettempdir())
        uid = os.getuid()
        self._main: IO[str] = (folder / f"{name}-{uid}-work.lock").open("a")
        self._turn: IO[str] = (folder / f"{name}-{uid}-turn.lock").open("a")

    def _lock(self, fh: IO[str], how: int) -> None:
        fcntl.flock(fh, how)

    @contextlib.contextmanager
    def working(self) -> Iterator[FileGate]:
        """Hold the shared lock for the duration of one trial."""
        self._pass_turnstile()
        self._lock(self._main, fcntl.LOCK_SH)
        try:
            yield self
        finally:
            self._lock(self._main, fcntl.LOCK_UN)

    def _pass_turnstile(self) -> None:
        self._lock(self._turn, fcntl.LOCK_EX)
        self._lock(self._turn, fcntl.LOCK_UN)

    def step(self) -> None:
        self._lock(self._main, fcntl.LOCK_UN)
        self._pass_turnstile()
        self._lock(self._main, fcntl.LOCK_SH)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        self._lock(self._main, fcntl.LOCK_UN)
        self._lock(self._turn, fcntl.LOCK_EX)  # no new work starts from here on
        self._lock(self._main, fcntl.LOCK_EX)  # every other trial is parked
        try:
            yield
        finally:
            self._lock(self._main, fcntl.LOCK_UN)
            self._lock(self._turn, fcntl.LOCK_UN)
            self._lock(self._main, fcntl.LOCK_SH)

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        self._lock(self._main, fcntl.LOCK_UN)
        try:
            yield
        finally:
            self._pass_turnstile()
            self._lock(self._main, fcntl.LOCK_SH)

    def close(self) -> None:
        self._main.close()
        self._turn.close()


@contextlib.contextmanager
def trial_gate(exclusive_timing: bool) -> Iterator[Gate]:
    """The machine's timing gate for one trial: a :class:`FileGate` held while the trial works,
    or a :class:`NoGate` without ``exclusive_timing``."""
    if not exclusive_timing:
        yield NoGate()
        return
    gate = FileGate()
    try:
        with gate.working():
            yield gate
    finally:
        gate.close()
