"""The nodes executors run on, as their wardens see them (agents/warden.py): a beat per
node, the fences each node owes, and the attempts a node may keep running.

A node's warden beats every pass; the reaper fences an expired lease only on a node seen
within `lease.node_timeout_s` (else the node is presumed gone with its processes). Which
attempts are legitimate is read from the job hashes: `running`, the same attempt, and not
being fenced. Everything else a node finds of this farm is a leftover to kill.
"""

from __future__ import annotations

import logging

import redis

from farm.errors import FarmError
from farm.store.client import translated
from farm.store.jobs import JobStore
from farm.store.keys import Keys

RESTARTED = ("redis", "executor", "warden", "autoscaler")  # what `farm_restarts_total{component}` counts


class NodeBook:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()

    def beat(self, node: str) -> None:
        with translated():
            s, us = self.client.time()
            self.client.zadd(self.keys.nodes, {node: s * 1000 + us // 1000})

    def fences(self, node: str, limit: int = 1000) -> list[tuple[str, int, str]]:
        """(job id, attempt, executor) of each fence the node owes, oldest first."""
        with translated():
            ids = self.client.zrange(self.keys.fences(node), 0, limit - 1)
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(self.keys.job(job_id), "fence", "executor")
            rows = pipe.execute()
        return [(job_id, int(f) if f and f.isdigit() else 0, ex or "") for job_id, (f, ex) in zip(ids, rows, strict=True)]

    def live(self, attempts: list[tuple[str, int]]) -> set[tuple[str, int]]:
        """Of these attempts, the ones that may still run: their job is running that very
        attempt and is not being fenced."""
        with translated():
            pipe = self.client.pipeline(transaction=False)
            for job_id, _ in attempts:
                pipe.hmget(self.keys.job(job_id), "state", "attempt", "fence")
            rows = pipe.execute()
        return {a for a, (state, attempt, fence) in zip(attempts, rows, strict=True)
                if state == "running" and attempt == str(a[1]) and not fence}  # fmt: skip

    def restarted(self, component: str) -> None:
        """Count a restart of a part of the farm (redis, executor, warden, autoscaler)."""
        with translated():
            self.client.hincrby(self.keys.restarts, component, 1)

    def restarts(self) -> dict[str, int]:
        with translated():
            return {k: int(v) for k, v in self.client.hgetall(self.keys.restarts).items()}


def count_restart(store: JobStore, component: str) -> None:
    """Count a restart where it happened (a restarted actor's constructor); a restart that
    cannot be counted is logged, never fatal."""
    try:
        NodeBook(store.client, store.keys).restarted(component)
    except FarmError as e:
        logging.getLogger("farm.supervisor").warning("restart of %s not counted: %s", component, e)
