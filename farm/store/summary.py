"""What each pool looks like right now: queued, running, oldest wait, executors by state.

One function for /v1/queue, /v1/pools, /metrics and the autoscaler's observation.
"""

from __future__ import annotations

import json
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
