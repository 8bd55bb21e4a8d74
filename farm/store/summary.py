"""What each pool looks like right now: queued, running, oldest wait, executors by state.

One function for /v1/queue, /v1/pools, /metrics and the autoscaler's observation; and
`held`, what of a pool's queue no executor could start (the autoscaler's demand leaves it out).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from farm.store.client import translated
from farm.store.executors import START_FAILURE, ExecutorRegistry
from farm.store.jobs import JobStore


@dataclass(frozen=True)
class PoolSummary:
    name: str
    queued: int
    running: int
    oldest_wait_s: float
    executors: dict[str, int]
    last_start_failure: dict | None = None  # type: ignore[type-arg]  # {executor, reason, at_ms}: why one could not start


def summarize(store: JobStore, registry: ExecutorRegistry, pools: list[str]) -> list[PoolSummary]:
    k = store.keys
    with translated():
        pipe = store.client.pipeline(transaction=False)
        pipe.time()
        for pool in pools:
            pipe.zcard(k.waiting(pool))
            pipe.scard(k.running(pool))
            pipe.zrange(k.waiting(pool), 0, 0, withscores=True)
            pipe.hget(k.stats(pool), START_FAILURE)
        rows = pipe.execute()
    s, us = rows[0]
    now_ms = s * 1000 + us // 1000
    out = []
    for i, pool in enumerate(pools):
        queued, running, oldest, failure = rows[1 + 4 * i : 5 + 4 * i]
        wait = max(0.0, (now_ms - oldest[0][1]) / 1000) if oldest else 0.0
        out.append(PoolSummary(pool, queued, running, round(wait, 3), registry.counts(pool), json.loads(failure) if failure else None))
    return out


HELD_SCANNED = 10_000  # the oldest queued jobs of a pool looked through for `held`; the rest count as demand


def held(store: JobStore, pool: str) -> int:
    """How many of the pool's queued jobs no executor could start however many the pool had:
    those of a concurrency group beyond its free slots (limit - running). A job of a full
    group is parked once a claim meets it, but may still sit in the claimable queue until
    then, so the count is by group, not by the `parked` mark: a group's queued jobs in this
    pool count as demand up to its free slots. (A group spread over pools has its free slots
    counted in each: demand errs high, never low.) Reads only, not atomic: a claim between
    the reads makes it a turn out of date, which the next turn corrects."""
    k = store.keys
    with translated():
        ids = store.client.zrange(k.waiting(pool), 0, HELD_SCANNED - 1)
        pipe = store.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(k.job(job_id), "tenant", "group")
        queued = Counter((t, g) for t, g in pipe.execute() if t and g)
        if not queued:
            return 0
        groups = list(queued)
        pipe = store.client.pipeline(transaction=False)
        for tenant, group in groups:
            pipe.hmget(k.group(tenant, group), "running", "limit")
        slots = pipe.execute()
    free = {g: max(0, int(limit or 1) - int(running or 0)) for g, (running, limit) in zip(groups, slots, strict=True)}
    return sum(max(0, n - free[g]) for g, n in queued.items())
