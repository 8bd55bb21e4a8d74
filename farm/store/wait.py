"""One look at a job's pool for `farm.wait.explain`: the reads, no reasoning.

A few pipelined round trips: the job, its pool (queue, executors, decisions, demand), then
what those name (tenants' queue lengths, busy jobs, slot holders, needs). Not atomic: a
claim between two reads can make the answer a job out of date, which the next look
corrects. Nothing is written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from farm.models import JobState
from farm.store.client import translated
from farm.store.executors import START_FAILURE, ExecutorRegistry, ExecutorState
from farm.store.jobs import JobStore
from farm.wait import Busy, QueueView, Tenant

DURATIONS_READ = 500  # the pool's latest attempts' durations the estimate goes on
HOLDERS_SCANNED = 5000  # running jobs looked through for a group's slot holders

_FIELDS = ("state", "tenant", "pool", "group", "queued_at", "ready_at", "started_at", "finished_at", "blocked", "run", "spec", "qtimeout",
           "parked", "taken_by")


def read_view(store: JobStore, registry: ExecutorRegistry, job_id: str, *, weights: dict[str, float], pools: list[str],
              default_lead_s: float) -> QueueView:  # fmt: skip
    """What `explain` needs about `job_id` (which must exist: the caller read it) and its pool.
    `weights` are the tenants' fair-share weights (1 for one not named)."""
    k = store.keys
    c = store.client
    with translated():
        s, us = c.time()
        now_ms = s * 1000 + us // 1000
        f = dict(zip(_FIELDS, c.hmget(k.job(job_id), *_FIELDS), strict=True))
        state = JobState(f["state"])
        pool, tenant, group = f["pool"], f["tenant"], f["group"] or None
        end = f["started_at"] or f["finished_at"]
        waited_s = max(0.0, ((int(end) if end else now_ms) - int(f["ready_at"])) / 1000)
        base = {"job": job_id, "state": state, "pool": pool, "tenant": tenant, "now": _at(now_ms), "waited_s": waited_s,
                "needs": json.loads(f["spec"] or "{}").get("needs") or [], "was_parked": f["parked"] == "1"}
        if state is not JobState.QUEUED:
            return QueueView(**base, rank_in_tenant=None, group=group, taken_by=f["taken_by"] or None, started=bool(f["started_at"]),
                             needs_wait_s=max(0.0, (int(f["ready_at"]) - int(f["queued_at"])) / 1000))
        pipe = c.pipeline(transaction=False)
        pipe.zrank(k.queue(pool, tenant), job_id)
        pipe.zrange(k.tenants(pool), 0, -1, withscores=True)
        pipe.zscore(k.qdeadlines, job_id)
        pipe.hget(k.stats(pool), "max_executors")
        pipe.lindex(k.decisions(pool), 0)
        pipe.xrevrange(k.demand(pool), "+", "-", count=DURATIONS_READ * 3)
        pipe.hget(k.stats(pool), START_FAILURE)
        if group:
            pipe.hmget(k.group(tenant, group), "running", "limit")
            pipe.zrank(k.parked(tenant, group), job_id)
        rank, backlog, deadline, max_executors, decision, demand, failure, *grouped = pipe.execute()
        executors = registry.list(pool)
        pipe = c.pipeline(transaction=False)
        for name, _ in backlog:
            pipe.zcard(k.queue(pool, name))
        busy_now = [e for e in executors if e.state is ExecutorState.BUSY]
        for e in busy_now:
            pipe.hget(k.job(e.job or "-"), "started_at")
        full = bool(group) and (grouped[1] is not None or int(grouped[0][0] or 0) >= int(grouped[0][1] or 1))
        holders_in = pools if full else []
        for p in holders_in:
            pipe.srandmember(k.running(p), HOLDERS_SCANNED)
        got = pipe.execute()
        lengths, starts, running_sets = got[: len(backlog)], got[len(backlog) : len(backlog) + len(busy_now)], got[len(backlog) + len(busy_now) :]
        holders = _holders(store, {r for rs in running_sets for r in rs}, tenant, group) if holders_in else []
        blocked_on = _needs_left(store, f) if f["blocked"] and int(f["blocked"]) > 0 else []
    tenants = [Tenant(name, score, weights.get(name, 1.0), n) for (name, score), n in zip(backlog, lengths, strict=True)]
    busy = [Busy(e.job or "", max(0.0, (now_ms - int(st)) / 1000) if st else 0.0) for e, st in zip(busy_now, starts, strict=True)]
    starting = [e for e in executors if e.state is ExecutorState.STARTING]
    ends = [int(fields["d"]) / 1000 for _, fields in demand if "d" in fields][:DURATIONS_READ]
    last = json.loads(decision) if decision else None
    lead = (last or {}).get("inputs", {}).get("lead_s") or default_lead_s
    if f["blocked"] and int(f["blocked"]) > 0:
        timeout_left = int(f["qtimeout"]) / 1000 if f["qtimeout"] else None  # its queue timeout starts when its needs are met
    else:
        timeout_left = max(0.0, (deadline - now_ms) / 1000) if deadline is not None else None
    return QueueView(
        **base,
        rank_in_tenant=rank,
        tenants=tenants,
        blocked_on=blocked_on,
        group=group,
        group_limit=int(grouped[0][1] or 1) if group else 0,
        group_running=int(grouped[0][0] or 0) if group else 0,
        group_holders=holders,
        parked_rank=grouped[1] if group else None,
        idle=sum(e.state is ExecutorState.IDLE for e in executors),
        busy=busy,
        starting=len(starting),
        starting_for_s=max(0.0, (now_ms - min(e.seen_ms for e in starting)) / 1000) if starting else None,
        max_executors=int(max_executors) if max_executors else None,
        start_failure=json.loads(failure)["reason"] if failure and not executors else None,
        recent_durations_s=tuple(ends),
        lead_s=float(lead),
        queue_timeout_left_s=timeout_left,
        decision=f"{last['reason']} (at {last['at']})" if last else None,
    )


def _holders(store: JobStore, running: set[str], tenant: str, group: str) -> list[str]:
    """The running jobs of `tenant` that hold a slot of its concurrency group `group`."""
    ids = sorted(running)
    pipe = store.client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(store.keys.job(job_id), "tenant", "group", "slot")
    return [j for j, (t, g, slot) in zip(ids, pipe.execute(), strict=True) if t == tenant and g == group and slot == "1"]


def _needs_left(store: JobStore, f: dict[str, str | None]) -> list[str]:
    """The names of the job's needs that have not yet succeeded (its run's jobs by name)."""
    needs: list[str] = json.loads(f["spec"] or "{}").get("needs") or []
    run = f["run"]
    if not needs or not run:
        return list(needs)
    ids = json.loads(store.client.hget(store.keys.run(run), "jobs") or "[]")
    pipe = store.client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(store.keys.job(job_id), "name", "state")
    done = {name for name, state in pipe.execute() if state == JobState.SUCCEEDED.value}
    return [n for n in needs if n not in done]


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
