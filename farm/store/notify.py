"""The notification book: each tenant's subscriptions, the queue of ends and deliveries
(leased to one notifier at a time), and the dead letters a tenant can list.

An end enters the queue in the step that ends the job or run (lib.lua `notify_end`, which
also keeps what "fixed" needs); a notifier claims it, fans it out to the subscriptions that
hear of it (notify_expand.lua: once, whoever claimed it), and sends each delivery, which is
retried with backoff and, past its attempts, becomes a dead letter. Members of the queue:
ends "job:<id>" / "run:<id>", deliveries "<end>/<subscription id>" (farm.store.keys).
"""

from __future__ import annotations

import json
import secrets
from typing import Literal

from farm.errors import Conflict, NotFound
from farm.models import rfc3339
from farm.notify import DeadLetter, Subscription, SubscriptionSpec
from farm.store.client import translated
from farm.store.jobs import JobStore

SUBSCRIPTION_ID = r"^[0-9a-f]{12}$"


def parse(member: str) -> tuple[Literal["job", "run"], str, str | None]:
    """A queue member as (kind, job or run id, subscription id or None for an end)."""
    end, _, sub = member.partition("/")
    kind, _, ident = end.partition(":")
    return ("run" if kind == "run" else "job"), ident, sub or None


class NotifyBook:
    def __init__(self, jobs: JobStore) -> None:
        self.jobs, self.keys = jobs, jobs.keys
        self.client = jobs.client

    # -- subscriptions ---------------------------------------------------------------------

    def add(self, tenant: str, spec: SubscriptionSpec, *, by: str, most: int) -> Subscription:
        """Keep a new subscription; a tenant past `most` is refused (409), the new one undone."""
        sub = Subscription(**spec.model_dump(), id=secrets.token_hex(6), tenant=tenant,
                           created_at=rfc3339(self.jobs.server_time_ms()) or "", created_by=by)  # fmt: skip
        key = self.keys.notify(tenant)
        with translated():
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, sub.id, sub.model_dump_json())
            pipe.hlen(key)
            _, n = pipe.execute()
            if n > most:
                self.client.hdel(key, sub.id)
                raise Conflict(f"tenant {tenant} has {most} subscriptions, the most it may (notify.max_subscriptions): "
                               "remove one first")  # fmt: skip
        return sub

    def subscriptions(self, tenant: str) -> list[Subscription]:
        """The tenant's subscriptions, oldest first."""
        with translated():
            kept = self.client.hgetall(self.keys.notify(tenant))
        return sorted((Subscription.model_validate_json(v) for v in kept.values()), key=lambda s: (s.created_at, s.id))

    def subscription(self, tenant: str, sub_id: str) -> Subscription | None:
        with translated():
            kept = self.client.hget(self.keys.notify(tenant), sub_id)
        return Subscription.model_validate_json(kept) if kept else None

    def remove(self, tenant: str, sub_id: str) -> Subscription:
        """Remove a subscription; its deliveries not sent yet are dropped when they come due."""
        sub = self.subscription(tenant, sub_id)
        with translated():
            if sub is None or not self.client.hdel(self.keys.notify(tenant), sub_id):
                raise NotFound(f"no subscription {sub_id}")
        return sub

    # -- the queue -------------------------------------------------------------------------

    def claim(self, *, lease_s: float, limit: int) -> list[str]:
        """Due ends and deliveries, leased to the caller for lease_s (notify_claim.lua)."""
        return list(self.jobs._call("notify_claim", int(lease_s * 1000), limit))

    def previous(self, kind: str, ident: str) -> str:
        """The outcome the ended thing's last end had ("failed", "ok", ""), as notify_end kept it."""
        key = self.keys.run(ident) if kind == "run" else self.keys.job(ident)
        with translated():
            return self.client.hget(key, "notify_prev") or ""

    def job_states(self, job_ids: list[str]) -> list[tuple[str | None, str | None, str | None]]:
        """(state, error, name) of each job of a run, in one round trip (None: purged)."""
        with translated():
            pipe = self.client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hmget(self.keys.job(job_id), "state", "error", "name")
            return [(s or None, e or None, n or None) for s, e, n in pipe.execute()]

    def expand(self, end: str, deliveries: list[dict[str, str]], *, lease_s: float) -> bool:
        """Fan `end` out into `deliveries` ({id, tenant, sub, event}), leased to the caller;
        False when another notifier did it first."""
        return bool(self.jobs._call("notify_expand", end, int(lease_s * 1000), json.dumps(deliveries)))

    def message(self, delivery: str) -> dict[str, str]:
        with translated():
            return self.client.hgetall(self.keys.notify_message(delivery))

    def delivered(self, delivery: str) -> None:
        self.forget(delivery)

    def attempt_failed(self, delivery: str, error: str) -> int:
        """Count a failed attempt and keep its error; returns the attempts so far."""
        key = self.keys.notify_message(delivery)
        with translated():
            pipe = self.client.pipeline(transaction=True)
            pipe.hincrby(key, "attempts", 1)
            pipe.hset(key, "error", error[:500])
            return int(pipe.execute()[0])

    def retry_in(self, delivery: str, delay_s: float) -> None:
        """Due again delay_s from now (the Redis server's clock, as every time in farm)."""
        with translated():
            self.client.zadd(self.keys.notify_queue, {delivery: self.jobs.server_time_ms() + int(delay_s * 1000)})

    def give_up(self, delivery: str, tenant: str, letter: DeadLetter, *, most: int) -> None:
        """The delivery leaves the queue for the tenant's dead letters (the newest `most` kept)."""
        key = self.keys.dead_letters(tenant)
        with translated():
            pipe = self.client.pipeline(transaction=True)
            pipe.lpush(key, letter.model_dump_json())
            pipe.ltrim(key, 0, most - 1)
            pipe.zrem(self.keys.notify_queue, delivery)
            pipe.delete(self.keys.notify_message(delivery))
            pipe.execute()

    def forget(self, member: str) -> None:
        """Out of the queue: delivered, or its end, job, run or subscription is gone."""
        with translated():
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(self.keys.notify_queue, member)
            pipe.delete(self.keys.notify_message(member))
            pipe.execute()

    def dead_letters(self, tenant: str, limit: int) -> list[DeadLetter]:
        with translated():
            kept = self.client.lrange(self.keys.dead_letters(tenant), 0, limit - 1)
        return [DeadLetter.model_validate_json(v) for v in kept]

    def now(self) -> str:
        return rfc3339(self.jobs.server_time_ms()) or ""
