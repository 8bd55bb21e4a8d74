"""Host names looked up at submit, within a bound: a git source's host (farm.addresses).

A lookup the system resolver has not answered within `timeout_s` counts as no answer, and
so does one asked while `max_pending` lookups are still out (a tenant naming hosts whose DNS
never answers cannot pile threads up), or once a request has spent its budget (a run of 500
jobs with as many hosts). No answer lets the submit through: the executor resolves the host
again at checkout, where it does not pass unresolved.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence

from farm.addresses import Resolver

TIMEOUT_S = 2.0


def lookup(host: str) -> list[str] | None:
    """Every address the system resolver gives `host` (None: it does not resolve)."""
    try:
        return [info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]
    except (OSError, UnicodeError):
        return None


class BoundedResolver:
    """A `farm.addresses.Resolver` that answers within `timeout_s` (None when it could not).
    Call it from a worker thread, never on the event loop."""

    def __init__(self, timeout_s: float = TIMEOUT_S, *, max_pending: int = 16, lookup: Resolver = lookup) -> None:
        self.timeout_s = timeout_s
        self.slots = threading.BoundedSemaphore(max_pending)
        self.lookup = lookup

    def __call__(self, host: str) -> Sequence[str] | None:
        if not self.slots.acquire(blocking=False):
            return None
        answer: list[Sequence[str] | None] = []
        done = threading.Event()

        def ask() -> None:
            try:
                answer.append(self.lookup(host))
            finally:
                self.slots.release()
                done.set()

        # A daemon thread: getaddrinfo cannot be interrupted, and one left waiting must not
        # hold up the process's exit.
        threading.Thread(target=ask, name="farm-resolve", daemon=True).start()
        return answer[0] if done.wait(self.timeout_s) and answer else None


def budgeted(resolve: Resolver, total_s: float = TIMEOUT_S, *, clock: Callable[[], float] = time.monotonic) -> Resolver:
    """`resolve` for one request: each name looked up once, and none asked once `total_s`
    have gone on lookups (no answer, then)."""
    seen: dict[str, Sequence[str] | None] = {}
    deadline = clock() + total_s

    def once(host: str) -> Sequence[str] | None:
        if host not in seen:
            seen[host] = resolve(host) if clock() < deadline else None
        return seen[host]

    return once
