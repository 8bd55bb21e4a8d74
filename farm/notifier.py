"""The notifier: sends what tenants subscribed to (farm.notify) when jobs and runs end.

Observe, decide, act: `run_once()` claims what is due in the notification queue
(farm.store.notify), fans each end out to the subscriptions that hear of it (the decision is
farm.notify's, on the job or run and the outcome lib.lua kept for "fixed"), and sends every
delivery due, on a thread pool. A failed send is retried with backoff (notify.backoff_s,
doubling up to max_backoff_s) until notify.max_attempts, then kept as the tenant's dead
letter; one that cannot succeed by retrying (a host off the allowlist, a 4xx, an SMTP 5xx)
is a dead letter at once. A job's end never waits on any of it: the end only queues itself.

Each send is bounded by notify.timeout_s (per network operation), and what a notifier
claimed is leased to it for well past that, so two API replicas never send one delivery at
once. Chat and webhook posts go as farm.webhooks' do: no redirects followed, the host checked
against the tenant's allowlist again at send time, a webhook signed with `signature`. Mail
goes over SMTP with the standard library: STARTTLS per notify.smtp_starttls, and the
password only over TLS.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import httpx

from farm import loops
from farm.errors import NotFound
from farm.models import JobState
from farm.notify import (
    DeadLetter,
    Event,
    Subscription,
    chat_body,
    mail_body,
    retry_delay,
    subject,
    subscribers,
    webhook_body,
    what,
)
from farm.settings import NotifySettings, Settings
from farm.store.jobs import JobStore
from farm.store.notify import NotifyBook, parse
from farm.store.runs import RunStore
from farm.webhooks import allowed, permitted, signature

log = logging.getLogger("farm.notifier")

FAILED_JOBS_SHOWN = 50  # a run's jobs that did not succeed, named in its message at most
_RETRIED_4XX = {408, 425, 429}  # a client error that may pass: retried like a 5xx

Sent = tuple[str | None, bool]  # (the error, or None when sent; whether retrying cannot help)


def send_mail(conf: NotifySettings, to: list[str], title: str, body: str) -> None:
    """One message over SMTP; raises smtplib's errors (and OSError) as they come."""
    if conf.smtp_host is None:
        raise smtplib.SMTPException("this farm has no SMTP server (notify.smtp_host)")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = conf.smtp_from, ", ".join(to), title
    msg["Date"], msg["Message-ID"] = formatdate(usegmt=True), make_msgid(domain=conf.smtp_from.rpartition("@")[2])
    msg.set_content(body)
    with smtplib.SMTP(conf.smtp_host, conf.smtp_port, timeout=conf.timeout_s) as smtp:
        smtp.ehlo()
        tls = False
        if conf.smtp_starttls != "never" and smtp.has_extn("starttls"):
            smtp.starttls(context=ssl.create_default_context(cafile=conf.smtp_ca_file))
            smtp.ehlo()
            tls = True
        elif conf.smtp_starttls == "required":
            raise smtplib.SMTPNotSupportedError("the server does not offer STARTTLS (notify.smtp_starttls is required)")
        if conf.smtp_username is not None and conf.smtp_password is not None:
            if not tls:
                raise smtplib.SMTPNotSupportedError("the SMTP password goes over TLS only, and the server offers no STARTTLS")
            smtp.login(conf.smtp_username, conf.smtp_password.get_secret_value())
        refused = smtp.send_message(msg)
        if refused:
            log.warning("mail %r: the server refused %s", title, ", ".join(sorted(refused)))


class Notifier:
    """Sends due notifications. `run_once()` is one pass, for tests and operators."""

    def __init__(self, store: JobStore, settings: Settings, *, workers: int = 4) -> None:
        self.store, self.conf = store, settings.notify
        self.book = NotifyBook(store)
        self.runs = RunStore(store)
        self.tenants = {t.name: t for t in settings.tenants}
        self.lease_s = 10 * self.conf.timeout_s + 5  # a mail is several bounded round trips
        self.http = httpx.Client(timeout=self.conf.timeout_s, follow_redirects=False)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="notify")

    # -- observe ---------------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim what is due, fan ends out, send every delivery; returns what was claimed."""
        claimed = self.book.claim(lease_s=self.lease_s, limit=100)
        sends = [d for member in claimed for d in (self.fan_out(member) if parse(member)[2] is None else [member])]
        list(self.pool.map(self.deliver, sends))
        return len(claimed)

    def event(self, kind: str, ident: str) -> Event | None:
        """The end as its message tells it; None once its job or run is gone (purged)."""
        prev = self.book.previous(kind, ident)
        prev = prev if prev in ("failed", "ok") else ""
        try:
            if kind == "run":
                run = self.runs.get(ident)
                rows = self.book.job_states(run.jobs)
                failed = [f"{name or job_id[:12]} ({state}{', ' + error if error else ''})"
                          for job_id, (state, error, name) in zip(run.jobs, rows, strict=True)
                          if state and state != JobState.SUCCEEDED]  # fmt: skip
                return Event("run", run.id, run.tenant, run.state.value, prev, run.labels.get("branch"), run.name, None,
                             run.finished_at, tuple(failed[:FAILED_JOBS_SHOWN]))  # fmt: skip
            job = self.store.get(ident)
        except NotFound:
            return None
        return Event("job", job.id, job.tenant, job.state.value, prev, job.spec.labels.get("branch"), job.spec.name,
                     job.error.value if job.error else None, job.finished_at)  # fmt: skip

    # -- decide ----------------------------------------------------------------------------

    def fan_out(self, end: str) -> list[str]:
        """The deliveries of one end (each subscription that hears of it), leased to this notifier."""
        kind, ident, _ = parse(end)
        event = self.event(kind, ident)
        if event is None:
            self.book.forget(end)
            return []
        subs = subscribers(self.book.subscriptions(event.tenant), event)
        deliveries = [{"id": f"{end}/{s.id}", "tenant": event.tenant, "sub": s.id, "event": event.to_json()} for s in subs]
        return [d["id"] for d in deliveries] if self.book.expand(end, deliveries, lease_s=self.lease_s) else []

    # -- act -------------------------------------------------------------------------------

    def deliver(self, delivery: str) -> bool:
        msg = self.book.message(delivery)
        sub = self.book.subscription(msg["tenant"], parse(delivery)[2] or "") if msg else None
        if sub is None:  # the subscription was removed (or the delivery sent by another, late)
            self.book.forget(delivery)
            return False
        event = Event.from_json(msg["event"])
        error, final = self.send(sub, event, delivery)
        if error is None:
            self.book.delivered(delivery)
            return True
        attempts = self.book.attempt_failed(delivery, error)
        if final or attempts >= self.conf.max_attempts:
            log.warning("notification %s failed for good after %d attempt(s): %s", delivery, attempts, error)
            letter = DeadLetter(id=delivery, subscription=sub.id, channel=sub.channel, kind=event.kind, target=event.id,
                                what=what(event), error=error, attempts=attempts, at=self.book.now())  # fmt: skip
            self.book.give_up(delivery, sub.tenant, letter, most=self.conf.dead_letters_max)
        else:
            delay = retry_delay(attempts, self.conf.backoff_s, self.conf.max_backoff_s)
            log.info("notification %s: %s; retry %d in %.1fs", delivery, error, attempts, delay)
            self.book.retry_in(delivery, delay)
        return False

    def send(self, sub: Subscription, event: Event, delivery: str) -> Sent:
        tenant = self.tenants.get(sub.tenant)
        if sub.chat is not None:
            if tenant is None or not allowed(sub.chat, tenant.webhook_hosts):
                return "host not on the tenant's allowlist", True
            body = json.dumps(chat_body(event, self.conf.portal_url)).encode()
            return self._post(sub.chat, body, {"Content-Type": "application/json"})
        if sub.webhook is not None:
            if not permitted(sub.webhook, tenant):
                return "host not on the tenant's allowlist, or the tenant has no webhook secret", True
            body, ts = webhook_body(event, sub.id), str(int(time.time()))
            secret = tenant.webhook_secret.get_secret_value()  # type: ignore[union-attr]  # permitted: it has one
            return self._post(sub.webhook, body, {"Content-Type": "application/json", "X-Farm-Event": f"{event.kind}.{what(event)}",
                                                  "X-Farm-Delivery": delivery, "X-Farm-Timestamp": ts,
                                                  "X-Farm-Signature": signature(secret, ts, body)})  # fmt: skip
        return self._mail(sub.email or [], event)

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Sent:
        try:
            r = self.http.post(url, content=body, headers={"User-Agent": "farm-notify", **headers})
        except httpx.HTTPError as e:
            return f"{type(e).__name__}: {e}", False
        if 200 <= r.status_code < 300:
            return None, False
        return f"HTTP {r.status_code}", 400 <= r.status_code < 500 and r.status_code not in _RETRIED_4XX

    def _mail(self, to: list[str], event: Event) -> Sent:
        try:
            send_mail(self.conf, to, subject(event), mail_body(event, self.conf.portal_url))
        except smtplib.SMTPRecipientsRefused as e:
            return f"SMTP refused every recipient: {e.recipients}", all(code >= 500 for code, _ in e.recipients.values())
        except smtplib.SMTPResponseException as e:
            said = e.smtp_error.decode(errors="replace") if isinstance(e.smtp_error, bytes) else str(e.smtp_error)
            return f"SMTP {e.smtp_code}: {said}", e.smtp_code >= 500
        except (smtplib.SMTPException, OSError) as e:  # ssl.SSLError is an OSError
            return f"{type(e).__name__}: {e}", False
        return None, False

    def drain(self) -> None:
        """Send everything due, a batch at a time."""
        while self.run_once():
            pass

    def start(self) -> tuple[threading.Thread, threading.Event]:
        return loops.start("notifier", self.drain, self.conf.interval_s, log)

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.http.close()
