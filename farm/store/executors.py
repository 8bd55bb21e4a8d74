"""Executor registry: which executors a pool has and what each is doing.

Executors report themselves (state changes and a presence beat while idle); the claim and
finish scripts flip busy/idle in the same step, so a job costs no extra report. While an
executor works, its attempt's heartbeat (heartbeat.lua, every `lease.heartbeat_s`) renews
its entry in the same step as the lease: an executor is seen for as long as it holds a job,
however long the job runs. An executor not seen for `stale_s` no longer counts, so
`stale_s` must exceed both beats' gaps (`executors.idle_wait_s`, `lease.heartbeat_s`). The
registry is advisory (for /v1/queue, metrics and the autoscaler): job safety never depends
on it, only on leases.

An entry's state is the last one written, by whichever writer came last: the executor's
reports (`report`, including a beat of the same state), claim.lua (busy), heartbeat.lua
(busy with its job, or draining if it was) and finish.lua (idle, unless draining). It is
not a state machine and has no transition table to enforce: the executor's reports and the
claim do not read before they write, an entry that expired comes back in whatever state the
next write says, `stopped` deletes the entry, and the real sequences include starting ->
draining (a drain during start), draining -> busy (a claim that raced the drain) and a late
idle beat over draining, each corrected by the next write. What is checked: every state the
scripts write or compare is an ExecutorState (tests/unit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

import redis

from farm.store.client import translated
from farm.store.keys import EXECUTOR_TTL_MS, Keys


class ExecutorState(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    STOPPED = "stopped"


START_FAILURE = "last_start_failure"  # stats hash field: JSON {executor, reason, at_ms} of the latest

COUNTED = (ExecutorState.STARTING, ExecutorState.IDLE, ExecutorState.BUSY, ExecutorState.DRAINING)


WHERE = ("pid", "node", "ray_node", "address")  # where an executor runs, as it reports it


@dataclass(frozen=True)
class ExecutorInfo:
    id: str
    pool: str
    state: ExecutorState
    job: str | None
    seen_ms: int
    where: dict[str, str] = field(default_factory=dict)  # pid, node (farm's name), ray_node (id), address


class ExecutorRegistry:
    def __init__(self, client: redis.Redis, keys: Keys | None = None, *, stale_s: float = 15.0) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.stale_ms = int(stale_s * 1000)

    def report(self, executor_id: str, pool: str, state: ExecutorState, job: str | None = None, *,
               where: dict[str, str | int] | None = None) -> None:  # fmt: skip
        with translated():
            s, us = self.client.time()
            now = s * 1000 + us // 1000
            pipe = self.client.pipeline(transaction=True)
            if state is ExecutorState.STOPPED:
                pipe.delete(self.keys.executor(executor_id))
                pipe.zrem(self.keys.executors(pool), executor_id)
            else:
                pipe.hset(
                    self.keys.executor(executor_id),
                    mapping={"pool": pool, "state": state.value, "job": job or "", "seen": now,
                             **{k: v for k, v in (where or {}).items() if k in WHERE and v != ""}},
                )  # fmt: skip
                pipe.pexpire(self.keys.executor(executor_id), EXECUTOR_TTL_MS)
                pipe.zadd(self.keys.executors(pool), {executor_id: now})
            pipe.execute()

    def start_failed(self, executor_id: str, pool: str, reason: str) -> None:
        """The executor could not start (its runtime failed to prepare): it leaves the
        registry, and the pool keeps a count and the latest reason (for /v1/queue, /metrics
        and whoever started it)."""
        with translated():
            s, us = self.client.time()
            failure = json.dumps({"executor": executor_id, "reason": reason[:2000], "at_ms": s * 1000 + us // 1000})
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.keys.executor(executor_id))
            pipe.zrem(self.keys.executors(pool), executor_id)
            pipe.hincrby(self.keys.stats(pool), "executor_start_failures_total", 1)
            pipe.hset(self.keys.stats(pool), START_FAILURE, failure)
            pipe.execute()

    def list(self, pool: str) -> list[ExecutorInfo]:
        with translated():
            s, us = self.client.time()
            now = s * 1000 + us // 1000
            ids = self.client.zrangebyscore(self.keys.executors(pool), now - self.stale_ms, "+inf")
            pipe = self.client.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(self.keys.executor(i))
            rows = pipe.execute()
        return [
            ExecutorInfo(i, h["pool"], ExecutorState(h["state"]), h.get("job") or None, int(h["seen"]),
                         {k: h[k] for k in WHERE if h.get(k)})
            for i, h in zip(ids, rows, strict=True)
            if h
        ]  # fmt: skip

    def counts(self, pool: str) -> dict[str, int]:
        out = {s.value: 0 for s in COUNTED}
        for e in self.list(pool):
            if e.state in COUNTED:
                out[e.state.value] += 1
        return out

    def prune(self, pool: str) -> int:
        """Forget executors not seen for EXECUTOR_TTL_MS (they died without saying so)."""
        with translated():
            s, _ = self.client.time()
            return self.client.zremrangebyscore(self.keys.executors(pool), "-inf", s * 1000 - EXECUTOR_TTL_MS)
