"""Discrete-event replay of a trace through a capacity policy. Pure (no clock, no I/O).

Model: one pool, FIFO. An executor asked for at time t is ready at t + lead and counts as
provisioned (it costs) from t until it stops. A ready or freed executor takes the oldest
waiting job at once. The policy decides on every tick (its `tick_s`) and, when it reacts
to events (`on_arrival`), once at every instant where jobs arrived or finished, after all
of that instant's events (a push's fan-out arrives in one second: one decision sees the
whole burst, as a live autoscaler's turn does); the decision's starts are asked for at once
and its drains stop the longest-idle executors. Between events (an arrival, an end, an
executor ready), still pool or busy, the ticks at which the policy would do nothing are
skipped (farm.autoscale.policy.still_until: its own clocks, a hold, a window, a forecast
cell's boundary, a poll): the replay's cost follows the events, not the span the pool is
busy, and the figures are those of deciding at every tick.
Scale-down is idle-only, so no job is ever killed (`killed_jobs` counts busy executors
stopped, and is 0 by construction); one-shot executors (ARC, KEDA, Jenkins' kubernetes
agents) stop after their one job.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from farm.autoscale.policy import DEFAULT_LEAD_S, Snapshot, decide, still_until
from farm.sim.trace import Trace

ARRIVE, READY, DONE, TICK = 0, 1, 2, 3


@dataclass(frozen=True)
class Result:
    policy: str
    params: dict
    pool: str
    jobs: int
    executor_hours: float
    busy_hours: float
    efficiency: float
    wait_p50_s: float
    wait_p95_s: float
    wait_p99_s: float
    killed_jobs: int
    reversals_per_hour: float
    clairvoyant_hours: float
    lead_s: float = DEFAULT_LEAD_S
    # (time, demand = running + queued, provisioned executors) at each decision, when recorded
    series: tuple[tuple[float, int, int], ...] = ()
    # each job's wait, in trace order, and the policy's own memory at the end, when recorded
    job_waits: tuple[float, ...] = ()
    memory: Any = None
    # How a peer's knob was chosen (farm.sim.tune): "past" (re-chosen every week from the
    # weeks before it), "hindsight" (once, from the whole trace), None (not tuned)
    tuning: str | None = None
    # the policies in force from each time on, when they changed during the replay
    schedule: tuple[tuple[float, Any], ...] = ()
    warm_weeks: int = 0  # the trace's first weeks replayed as the policy's warm-up, not scored

    def row(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("series", "job_waits", "memory", "schedule")}
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = round(v, 3)
        return out


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of values at or below."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def clairvoyant_hours(trace: Trace, lead_s: float) -> float:
    """A lower bound on executor-hours for zero wait, knowing the future: each job needs an
    executor from (arrival - lead) at the latest to its end; an executor freed before a
    later arrival serves it for the idle gap if that is cheaper than a new one's lead.
    Greedy: each job takes the executor that freed most recently (smallest gap)."""
    running: list[float] = []  # heap: end times of the executors still busy
    freed: list[float] = []  # end times of the executors free now, ascending (the most recent last)
    total = 0.0
    for t, d in zip(trace.submitted, trace.durations, strict=True):
        while running and running[0] <= t:
            freed.append(heapq.heappop(running))  # they come out in order
        if freed and t - freed[-1] < lead_s:
            total += t - freed.pop()
        else:
            total += lead_s
        total += d
        heapq.heappush(running, t + d)
        if len(freed) > 64 and freed[0] <= t - lead_s:
            # freed a lead or more before this arrival: never reused, by it or a later one
            del freed[: bisect.bisect_right(freed, t - lead_s)]
    return total / 3600


# Told (jobs arrived, jobs in the trace) as a replay goes: every 1% of the trace and at its end.
Replay = Callable[[int, int], None]


def simulate(  # type: ignore[no-untyped-def]
    trace: Trace, policy, *, lead_s: float = DEFAULT_LEAD_S, name: str | None = None, params: dict | None = None, record: bool = False,
    progress: Replay | None = None, schedule: Sequence[tuple[float, Any]] = (), score_from: float | None = None,
    skip_still: bool = True,
) -> Result:  # fmt: skip
    """Replay the trace through the policy. `schedule`: (from, policy) pairs in time order,
    each in force from its time on (`policy` until the first), all of `policy`'s kind: an
    operator changing a knob as the replay goes (farm.sim.tune's past tuning).
    `score_from`: the figures count only from then on (the jobs submitted since, the
    executor and busy time since, the reversals since): the time before it is the policy's
    warm-up on known demand (`farm simulate --warm-weeks`). `skip_still`: skip the ticks
    between events at which nothing would happen (False decides at each: the same figures,
    slower; the tests compare the two)."""
    if not trace.submitted:
        raise ValueError("empty trace")
    if any(p.kind != policy.kind for _, p in schedule):
        raise ValueError("a schedule keeps its policy's kind")
    changes = list(schedule)
    in_force = policy
    jobs = len(trace.submitted)
    # one comparison per arrival when nobody listens: report_at is then never reached
    step = max(1, jobs // 100)
    report_at = step if progress is not None else -1
    # Arrivals are read in trace order beside a heap of the other events (readies, ends,
    # ticks): the heap stays as small as the pool, not the trace. At the same time, an
    # arrival goes before the heap's events, as it did when arrivals were in the heap first.
    events: list[tuple[float, int, int, int]] = []
    seq = 0
    tick = policy.tick_s if policy.kind != "keda" else min(policy.tick_s, policy.polling_interval_s)
    heapq.heappush(events, (trace.submitted[0], seq, TICK, 0))
    seq += 1

    started_at: dict[int, float] = {}  # executor id -> when it was asked for
    starting = 0
    idle: deque[tuple[int, float]] = deque()  # (executor, idle since), longest idle on the left
    busy = 0
    queue: deque[int] = deque()
    waits: list[float] = []
    job_waits = [0.0] * len(trace.submitted) if record else None
    provisioned = 0.0
    memory = None
    arrivals: list[float] = []
    started: list[float] = []  # waits of the jobs started since the previous decision
    last_direction, reversals = 0, 0
    series: list[tuple[float, int, int]] = []
    next_id = 0
    last_arrival = trace.submitted[-1]
    one_shot = policy.one_shot
    ages = policy.uses_idle_ages  # building them for every decision is a third of a replay
    durations = trace.durations
    submitted = trace.submitted
    scored = -math.inf if score_from is None else score_from
    ran = 0  # jobs started
    busy_s = 0.0  # executor time running jobs, from `scored` on

    def stop(executor: int, now: float) -> None:
        nonlocal provisioned
        since = max(started_at.pop(executor), scored)
        if now > since:
            provisioned += now - since

    def run(executor: int, job: int, now: float) -> None:
        nonlocal busy, seq, ran, busy_s
        busy += 1
        ran += 1
        if submitted[job] >= scored:
            waits.append(now - submitted[job])
        busy_s += max(0.0, now + durations[job] - max(now, scored))
        if job_waits is not None:
            job_waits[job] = now - submitted[job]
        started.append(now - submitted[job])
        heapq.heappush(events, (now + durations[job], seq, DONE, executor))
        seq += 1

    def take(executor: int, now: float) -> None:
        """A ready or freed executor takes the next job, or goes idle."""
        if queue:
            run(executor, queue.popleft(), now)
        else:
            idle.append((executor, now))

    def act(now: float, look: bool = False) -> float | None:
        """Decide; if `look` and the decision did nothing, until when the ticks may be skipped
        while no event comes (None: they may not)."""
        nonlocal memory, arrivals, started, starting, next_id, seq, last_direction, reversals, in_force
        while changes and now >= changes[0][0]:
            in_force = changes.pop(0)[1]
        snap = Snapshot(
            queued=len(queue), running=busy, starting=starting, idle=len(idle),
            idle_ages_s=tuple(now - since for _, since in idle) if ages else (), arrivals=tuple(arrivals), waits=tuple(started),
            lead_s=lead_s, memory=memory,
        )  # fmt: skip
        arrivals, started = [], []
        if record:
            series.append((now, busy + len(queue), snap.current))
        d = decide(snap, in_force, now=now)
        memory = d.memory
        for _ in range(d.to_start):
            started_at[next_id] = now
            starting += 1
            heapq.heappush(events, (now + lead_s, seq, READY, next_id))
            seq += 1
            next_id += 1
        for _ in range(d.to_drain):
            executor, _since = idle.popleft()
            stop(executor, now)
        direction = 1 if d.to_start else (-1 if d.to_drain else 0)
        if direction and last_direction and direction != last_direction and now >= scored:
            reversals += 1
        if direction:
            last_direction = direction
            return None
        return still_until(snap, in_force, memory, now) if look else None

    now = submitted[0]
    next_job = 0
    react = policy.on_arrival
    dirty = False  # an arrival or an end since the last decision
    inf = math.inf
    while True:
        t_arrive = submitted[next_job] if next_job < jobs else inf
        if events and events[0][0] < t_arrive:
            now, _, kind, x = heapq.heappop(events)
        elif t_arrive < inf:
            now, kind, x = t_arrive, ARRIVE, next_job
            next_job += 1
        else:
            break
        if kind == ARRIVE:
            if x == report_at:
                progress(x, jobs)  # type: ignore[misc]
                report_at += step
            arrivals.append(now)
            if idle:
                executor, _since = idle.pop()  # the most recently idle: the long-idle go first on scale-down
                queue.append(x)
                run(executor, queue.popleft(), now)
            else:
                queue.append(x)
            dirty = react
        elif kind == READY:
            starting -= 1
            if not queue:
                dirty = react  # it came up to no job: the policy may not want it now
            take(x, now)
        elif kind == DONE:
            busy -= 1
            if one_shot:
                stop(x, now)
            else:
                take(x, now)
            dirty = react
        else:  # TICK
            # The next event (an arrival, an end, an executor ready) or change of policy: a
            # decision before it sees the counts of now.
            bound = min(submitted[next_job] if next_job < jobs else inf, events[0][0] if events else inf,
                        changes[0][0] if changes else inf)  # fmt: skip
            until = act(now, skip_still and bound > now + 2 * tick)
            dirty = False
            nxt = now + tick
            if until is not None:
                # Nothing happens before `until` or `bound`: the next tick is the last one
                # before the first of them, on the same grid (the one after is decided).
                until = min(until, bound)
                if until < inf:
                    k = math.ceil((until - now) / tick) - 1
                    if k > 1:
                        nxt = now + k * tick
            heapq.heappush(events, (nxt, seq, TICK, 0))
            seq += 1
        if dirty and not (next_job < jobs and submitted[next_job] == now) and not (events and events[0][0] == now):
            act(now)  # the last event of this instant
            dirty = False
        if kind != TICK and now >= last_arrival and not queue and not busy and ran == len(submitted):
            break  # every job has run; what is still provisioned stops now
    for executor in list(started_at):
        stop(executor, now)
    if progress is not None:
        progress(jobs, jobs)

    waits.sort()
    busy_hours = busy_s / 3600
    hours = (now - max(submitted[0], scored)) / 3600 or 1.0
    first = bisect.bisect_left(submitted, scored)
    judged = trace if first == 0 else Trace(trace.pool, submitted[first:], durations[first:])
    return Result(
        policy=name or policy.kind,
        params=params or {},
        pool=trace.pool,
        jobs=len(waits),
        executor_hours=provisioned / 3600,
        busy_hours=busy_hours,
        efficiency=busy_hours / (provisioned / 3600) if provisioned else 0.0,
        wait_p50_s=percentile(waits, 50),
        wait_p95_s=percentile(waits, 95),
        wait_p99_s=percentile(waits, 99),
        killed_jobs=0,
        reversals_per_hour=reversals / hours,
        clairvoyant_hours=clairvoyant_hours(judged, lead_s) if judged.submitted else 0.0,
        lead_s=lead_s,
        series=tuple(series),
        job_waits=tuple(job_waits or ()),
        memory=memory.own if record and memory is not None else None,
        schedule=tuple(schedule),
    )
