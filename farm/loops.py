"""Background loops (the reaper, the webhook deliverer): one way to run a `run_once` every
interval on a thread until stopped, logging failures instead of dying on them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from farm.errors import FarmError

MAX_BACKOFF_S = 10.0


def backoff(interval_s: float, failures: int) -> float:
    """The wait before the next pass after `failures` failed ones in a row: the interval,
    doubled per failure up to MAX_BACKOFF_S (never under the interval)."""
    return max(interval_s, min(MAX_BACKOFF_S, interval_s * 2 ** min(failures, 16)))


def start(name: str, step: Callable[[], object], interval_s: float, log: logging.Logger) -> tuple[threading.Thread, threading.Event]:
    """Run `step` every `interval_s` on a daemon thread; returns the thread and its stop event.
    A failing pass (the store away or refusing writes, a bug) is logged and the loop backs
    off, then resumes its interval at the first pass that succeeds, and says so."""
    stop = threading.Event()

    def loop() -> None:
        failures = 0
        while not stop.wait(backoff(interval_s, failures) if failures else interval_s):
            try:
                step()
            except FarmError as e:
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning("%s pass failed (%d in a row): %s", name, failures, e)
                continue
            except Exception:  # noqa: BLE001 - a bug in one pass must not end the loop for good
                failures += 1
                log.exception("%s pass failed (%d in a row)", name, failures)
                continue
            if failures:
                log.info("%s resumed after %d failed pass(es)", name, failures)
            failures = 0

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread, stop
