"""The executor's watch: one long-lived thread that looks after the running attempt.

Every `tick_s` it flushes the attempt's log (every `flush_s`, or at once when the buffer is
full), renews its lease (every `heartbeat_s`) and stops it at its deadline. One thread per
executor rather than three per job: a short job then costs only its claim and its finish.
`detach()` waits for a tick in progress, so nothing is written for an attempt after it.

A tick does I/O, and a frozen store can hold it for its socket timeout. So a second thread,
the fuse, calls the attempt's `guard()` (no I/O: deadline, and whether the last renewed
lease is about to expire) on its own clock: a step is stopped in time however long a
heartbeat hangs.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Watched(Protocol):
    def tick(self, now: float) -> None:
        """Do what is due at monotonic time `now` (flush, heartbeat, deadline)."""

    def guard(self, now: float) -> None:
        """Stop the attempt if its deadline or its lease's end is near (no I/O)."""


class Watch:
    def __init__(self, tick_s: float = 0.02) -> None:
        self.tick_s = tick_s
        self._lock = threading.Lock()
        self._current: Watched | None = None
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="attempt-watch", daemon=True)
        self._thread.start()
        self._fuse = threading.Thread(target=self._fuse_loop, name="attempt-fuse", daemon=True)
        self._fuse.start()

    def attach(self, attempt: Watched) -> None:
        with self._lock:
            self._current = attempt

    def detach(self) -> None:
        with self._lock:
            self._current = None

    def poke(self) -> None:
        """Tick now (e.g. the log buffer is full)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.tick_s)
            self._wake.clear()
            with self._lock:
                if self._current is not None:
                    self._current.tick(time.monotonic())

    def _fuse_loop(self) -> None:
        while not self._closed.wait(self.tick_s):
            current = self._current  # not under the lock: a tick may hold it, stuck in I/O
            if current is not None:
                current.guard(time.monotonic())

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(5)
        self._fuse.join(5)
