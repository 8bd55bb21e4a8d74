"""Background loops (the reaper, the webhook deliverer): one way to run a `run_once` every
interval on a thread until stopped, logging failures instead of dying on them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from farm.errors import FarmError


def start(name: str, step: Callable[[], object], interval_s: float, log: logging.Logger) -> tuple[threading.Thread, threading.Event]:
    """Run `step` every `interval_s` on a daemon thread; returns the thread and its stop event."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                step()
            except FarmError as e:
                log.warning("%s pass failed: %s", name, e)
            except Exception:  # noqa: BLE001 - a bug in one pass must not end the loop for good
                log.exception("%s pass failed", name)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread, stop
