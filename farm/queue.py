"""What each pool looks like right now: queued, running, oldest wait, executors by state.

One function for /v1/queue, /metrics and (later) the autoscaler's observation.
"""

from __future__ import annotations

from dataclasses import dataclass

from farm.store.executors import ExecutorRegistry
from farm.store.jobs import JobStore, translated


@dataclass(frozen=True)
class PoolSummary:
    name: str
    queued: int
    running: int
    oldest_wait_s: float
    executors: dict[str, int]


def summarize(store: JobStore, registry: ExecutorRegistry, pools: list[str]) -> list[PoolSummary]:
    k = store.keys
    with translated():
        pipe = store.client.pipeline(transaction=False)
        pipe.time()
        for pool in pools:
            pipe.zcard(k.waiting(pool))
            pipe.scard(k.running(pool))
            pipe.zrange(k.waiting(pool), 0, 0, withscores=True)
        rows = pipe.execute()
    s, us = rows[0]
    now_ms = s * 1000 + us // 1000
    out = []
    for i, pool in enumerate(pools):
        queued, running, oldest = rows[1 + 3 * i : 4 + 3 * i]
        wait = max(0.0, (now_ms - oldest[0][1]) / 1000) if oldest else 0.0
        out.append(PoolSummary(pool, queued, running, round(wait, 3), registry.counts(pool)))
    return out
