"""Result webhooks: when a job with a `callback_url` ends, farm POSTs the job's JSON to it
(`X-Farm-Event: job.finished`); when a run with one ends (its last job ended), the run's
JSON (`X-Farm-Event: run.finished`).

    X-Farm-Timestamp: <unix seconds>
    X-Farm-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the tenant's secret>

A receiver recomputes the HMAC (`signature`), compares in constant time, and refuses old
timestamps to stop replays. Delivery never blocks dispatch: the terminal transition only
marks the job due (in its Lua script); deliverers in the API replicas lease due jobs, POST,
and retry failures with exponential backoff up to `max_attempts`. farm only calls hosts on
the tenant's allowlist, never follows redirects, and checks the allowlist again at send
time, so a job cannot make farm call an arbitrary internal address.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx

from farm import loops
from farm.errors import InvalidInput, NotFound
from farm.settings import Settings, TenantConfig
from farm.store.jobs import JobStore
from farm.store.runs import RunStore
from farm.store.webhooks import WebhookBook

log = logging.getLogger("farm.webhooks")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")


def verify(secret: str, timestamp: str, body: bytes, header: str, *, max_age_s: float = 300, now: float | None = None) -> bool:
    """What a receiver does: whether `header` (X-Farm-Signature) signs `timestamp`
    (X-Farm-Timestamp) and `body` (the raw bytes) with `secret`, within `max_age_s` of now
    (a replay of an old delivery is refused). Compared in constant time. Anything malformed
    (a header missing, so None; a timestamp that is not whole seconds; text that is not
    ASCII; a body that is not bytes) is False, never an exception. README.md carries the same
    check in the standard library alone, for receivers without farm."""
    if not (isinstance(secret, str) and isinstance(timestamp, str) and isinstance(body, bytes | bytearray)
            and isinstance(header, str)):  # fmt: skip
        return False
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12) or not _SIGNATURE.fullmatch(header):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > max_age_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, bytes(body)).encode(), header.encode())


def allowed(url: str, hosts: list[str]) -> bool:
    """Whether the URL's host (and port) is on the allowlist: "host" allows any port,
    "host:port" that port only. Hosts compare case-insensitively."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            return False
        host, port = parts.hostname.lower(), parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port out of range, a bracket left open: not a URL farm will call
        return False
    for entry in (e.lower() for e in hosts):
        h, sep, p = entry.rpartition(":")
        if (sep and p.isdigit() and (h, int(p)) == (host, port)) or entry == host:
            return True
    return False


def permitted(url: str, tenant: TenantConfig | None) -> bool:
    """Whether farm may call `url` for this tenant: it has a webhook secret and the host is
    on its allowlist."""
    return tenant is not None and tenant.webhook_secret is not None and allowed(url, tenant.webhook_hosts)


def check_callback(url: str | None, tenant: TenantConfig | None) -> None:
    """Refuse a callback URL the tenant may not use (InvalidInput -> 422)."""
    if url is not None and not permitted(url, tenant):
        raise InvalidInput("callback_url host is not on this tenant's webhook allowlist", ("body", "callback_url"))


class Deliverer:
    """Sends due webhooks. `run_once()` is one pass, for tests and operators."""

    def __init__(self, store: JobStore, settings: Settings, *, workers: int = 4) -> None:
        self.store, self.settings = store, settings
        self.runs = RunStore(store)
        self.book = WebhookBook(store)
        self.conf = settings.webhooks
        self.tenants = {t.name: t for t in settings.tenants}
        self.http = httpx.Client(timeout=self.conf.timeout_s, follow_redirects=False)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="webhook")

    def run_once(self) -> int:
        ids = self.book.claim(lease_s=self.conf.timeout_s + 5, limit=100)
        list(self.pool.map(self.deliver, ids))
        return len(ids)

    def _due(self, due: str) -> tuple[str, str | None, bytes, str] | None:
        """What a due entry sends: (tenant, url, body, event); None when its job or run is
        gone. Entries are job ids, or "run:<id>" for a run's webhook."""
        try:
            if due.startswith("run:"):
                run = self.runs.get(due[4:])
                return run.tenant, run.callback_url, run.model_dump_json().encode(), "run.finished"
            job = self.store.get(due)
            return job.tenant, job.spec.callback_url, job.model_dump_json().encode(), "job.finished"
        except NotFound:
            return None

    def deliver(self, due: str) -> bool:
        found = self._due(due)
        if found is None:
            self.book.forget(due)
            return False
        tenant_name, url, body, event = found
        tenant = self.tenants.get(tenant_name)
        error = None
        if not permitted(url or "", tenant):
            error = "host not on the tenant's allowlist"
            attempts = self.conf.max_attempts  # give up at once: retrying cannot help
        else:
            ts = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "farm-webhooks",
                "X-Farm-Event": event,
                "X-Farm-Delivery": due,
                "X-Farm-Timestamp": ts,
                "X-Farm-Signature": signature(tenant.webhook_secret.get_secret_value(), ts, body),  # type: ignore[union-attr]
            }
            try:
                r = self.http.post(url or "", content=body, headers=headers)
                if 200 <= r.status_code < 300:
                    self.book.delivered(due)
                    return True
                error = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {e}"
            attempts = self.book.attempt_failed(due)
        if attempts >= self.conf.max_attempts:
            log.warning("webhook %s failed for good: %s", due, error)
            self.book.give_up(due)
        else:
            delay = min(self.conf.backoff_s * 2 ** (attempts - 1), self.conf.max_backoff_s)
            log.info("webhook %s: %s; retry %d in %.1fs", due, error, attempts, delay)
            self.book.retry_in(due, delay)
        return False

    def drain(self) -> None:
        """Deliver everything due, a batch at a time."""
        while self.run_once():
            pass

    def start(self) -> tuple[threading.Thread, threading.Event]:
        return loops.start("webhooks", self.drain, self.conf.interval_s, log)

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.http.close()
