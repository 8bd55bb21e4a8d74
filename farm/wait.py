"""Why a job waits, and when it will start: pure logic, no I/O.

`explain(view)` reads a `QueueView` (what the store saw in one look at the queue, built by
`farm.store.wait`) and answers with a `JobWait`: the job's place in its pool and among its
tenant's jobs, what holds it, each as a `WaitReason` with a code a program can test and a
sentence for people, and an estimated start with the method that reached it.

The place in the pool is the claim order of `claim.lua` played forward on the queue as it
stands: the backlogged tenant with the lowest stride pass claims next, and pays 1/weight.
The estimate plays the pool's executors forward: each busy one frees when its job reaches
the expected rest of its job (from the pool's recent durations), each starting one when the
measured start-up lead has passed, and each job ahead takes one executor for the mean duration. It assumes no new arrivals
ahead and no executors beyond those the autoscaler already decided on.
"""

from __future__ import annotations

import heapq
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from farm.models import JobState

ReasonCode = Literal[
    "needs",  # it waits for jobs of its run to succeed
    "concurrency_group",  # its concurrency group is at its limit
    "jobs_ahead",  # jobs the pool takes before it
    "fair_share",  # other tenants' turn first under fair share
    "no_idle_executor",  # every executor of the pool is busy
    "executor_starting",  # an executor is starting
    "pool_at_max",  # the pool's policy allows no more executors
    "cannot_start",  # executors of the pool fail to start
    "no_executors",  # the pool has no executor and none is starting
    "next",  # it is next: an idle executor takes it at its next look
]

POSITION_LIMIT = 10_000  # positions are counted up to this many jobs ahead


class WaitReason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: ReasonCode
    text: str  # one sentence, for people
    jobs: list[str] = Field(default_factory=list)  # the jobs it names (a group's slot holders, the needs)


class WaitEstimate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_in_s: float  # from now
    start_at: datetime
    method: str  # how it was reached, in words


class JobWait(BaseModel):
    """`GET /v1/jobs/{id}/wait`: for a queued job, why it waits and when it should start; for
    one that started, how long it waited."""

    model_config = ConfigDict(extra="forbid")

    job: str
    state: JobState
    pool: str
    tenant: str
    waiting: bool  # queued now
    waited_s: float  # so far, or until it started (or ended without starting)
    position: int | None = None  # jobs the pool takes before it (0: next); None when it is not in the queue
    position_in_tenant: int | None = None  # of those, its own tenant's
    ahead_capped: bool = False  # more than POSITION_LIMIT ahead: position is a floor
    reasons: list[WaitReason] = Field(default_factory=list)
    estimate: WaitEstimate | None = None
    queue_timeout_left_s: float | None = None
    summary: str  # one line, for people


@dataclass(frozen=True)
class Tenant:
    """One backlogged tenant of the pool, as claim.lua sees it."""

    name: str
    pass_: float  # stride pass
    weight: float
    queued: int  # claimable jobs


@dataclass(frozen=True)
class Busy:
    job: str
    running_s: float


@dataclass(frozen=True)
class QueueView:
    """One look at the job's pool, as `farm.store.wait` read it (times in seconds)."""

    job: str
    state: JobState
    pool: str
    tenant: str
    now: datetime
    waited_s: float
    rank_in_tenant: int | None  # its place in its tenant's claimable queue; None if not claimable
    tenants: list[Tenant] = field(default_factory=list)
    blocked_on: list[str] = field(default_factory=list)  # names of needs not yet succeeded
    needs: list[str] = field(default_factory=list)  # the names of the jobs of its run it needs
    group: str | None = None
    group_limit: int = 0
    group_running: int = 0
    group_holders: list[str] = field(default_factory=list)  # running jobs holding its group's slots
    parked_rank: int | None = None  # its place among its group's parked jobs
    was_parked: bool = False  # a claim found its group full (it waited for a slot)
    started: bool = False  # it left the queue on an executor (not cancelled or timed out there)
    taken_by: str | None = None  # what the executor that took it was doing before: 'starting' (it came up for it), 'idle'
    needs_wait_s: float = 0.0  # how long it waited for its needs before it could queue
    idle: int = 0
    busy: list[Busy] = field(default_factory=list)
    starting: int = 0
    starting_for_s: float | None = None  # how long the oldest start has taken so far
    max_executors: int | None = None  # the pool's bound under its policy
    start_failure: str | None = None
    recent_durations_s: tuple[float, ...] = ()  # the pool's latest attempts' run times, newest first
    lead_s: float | None = None  # measured executor start-up time
    queue_timeout_left_s: float | None = None
    decision: str | None = None  # the autoscaler's latest decision, in words


def play_claims(tenants: list[Tenant], tenant: str, rank: int, limit: int = POSITION_LIMIT) -> tuple[int, bool]:
    """How many claims the pool makes before the job at `rank` in `tenant`'s queue, by
    claim.lua's stride order with no new arrivals: (count, capped). Ties between passes go
    to the lower name, as a sorted set orders equal scores."""
    heap = [(t.pass_, t.name, t.queued, 1 / t.weight if t.weight > 0 else 1.0) for t in tenants if t.queued > 0]
    heapq.heapify(heap)
    ahead = 0
    taken: dict[str, int] = {}
    while heap:
        pass_, name, queued, stride = heapq.heappop(heap)
        n = taken.get(name, 0)
        if name == tenant and n == rank:
            return ahead, False
        ahead += 1
        if ahead >= limit:
            return ahead, True
        taken[name] = n + 1
        if n + 1 < queued:
            heapq.heappush(heap, (pass_ + stride, name, queued, stride))
    return ahead, False  # its tenant was not backlogged: counted as last


def rest_of(durations: tuple[float, ...], ran_s: float) -> float:
    """The expected rest of a job that has run `ran_s`, from the pool's recent durations: the
    mean of d - ran_s over those longer than that (0 when none ran so long)."""
    longer = [d - ran_s for d in durations if d > ran_s]
    return statistics.fmean(longer) if longer else 0.0


def estimate_start(view: QueueView, ahead: int) -> tuple[float, str] | None:
    """Seconds until the job should start, and how that was reached; None without recent
    durations to go on when nothing is free. The mean, not the median: a queue drains at the
    mean's rate, and CI durations are skewed (the median under-estimated every long wait)."""
    durations = view.recent_durations_s
    mean = statistics.fmean(durations) if durations else None
    frees: list[float] = [0.0] * view.idle
    if durations:
        frees += [rest_of(durations, b.running_s) for b in view.busy]
    lead = view.lead_s
    if view.starting and lead is not None:
        frees += [max(0.0, lead - (view.starting_for_s or 0.0))] * view.starting
    if not frees:
        return None
    if mean is None and ahead >= len(frees):
        return None
    heapq.heapify(frees)
    for _ in range(ahead):
        free = heapq.heappop(frees)
        heapq.heappush(frees, free + (mean or 0.0))
    start = frees[0]
    parts = []
    if view.idle:
        parts.append(f"{view.idle} idle")
    if view.busy:
        parts.append(f"{len(view.busy)} busy, each free after the expected rest of its job" if durations else f"{len(view.busy)} busy")
    if view.starting and lead is not None:
        parts.append(f"{view.starting} starting, up after the measured lead of {lead:.0f} s")
    method = f"{ahead} job(s) ahead on the pool's executors ({'; '.join(parts)})"
    if durations and mean is not None:
        method += f", each job taking the mean {mean:.0f} s of the pool's last {len(durations)} attempts"
    return start, method


def explain(view: QueueView) -> JobWait:
    base = {"job": view.job, "state": view.state, "pool": view.pool, "tenant": view.tenant, "waited_s": round(view.waited_s, 3)}
    if view.state is not JobState.QUEUED:
        after = _why_it_waited(view)
        return JobWait(**base, waiting=False, reasons=after, summary=_ended_summary(view, after))
    reasons: list[WaitReason] = []
    position = in_tenant = None
    capped = False
    if view.blocked_on:
        reasons.append(WaitReason(code="needs", text=f"it needs {', '.join(view.blocked_on)} to succeed first", jobs=view.blocked_on))
    group_full = view.group is not None and (view.parked_rank is not None or view.group_running >= view.group_limit)
    if group_full:
        before = f"; {view.parked_rank} of its jobs wait before it" if view.parked_rank else ""
        reasons.append(WaitReason(
            code="concurrency_group", jobs=view.group_holders,
            text=f"its concurrency group {view.group!r} is at its limit of {view.group_limit}, held by "
                 f"{', '.join(view.group_holders) or 'jobs that are ending'}{before}"))  # fmt: skip
    if view.rank_in_tenant is not None:
        in_tenant = view.rank_in_tenant
        position, capped = play_claims(view.tenants, view.tenant, view.rank_in_tenant)
        others = position - in_tenant
        if position == 0 and view.idle and not group_full:
            reasons.append(WaitReason(code="next", text="it is next, and an executor is idle: it starts at its next look"))
        elif position:
            reasons.append(WaitReason(code="jobs_ahead", text=f"{'at least ' if capped else ''}{position} job(s) of the pool go before it, {in_tenant} of them its tenant's"))
        if others > 0 and in_tenant < position:
            reasons.append(WaitReason(code="fair_share", text=f"{others} job(s) of other tenants go first under fair share"))
    if view.rank_in_tenant is not None and not view.idle:
        total = len(view.busy) + view.starting
        if view.busy:
            reasons.append(WaitReason(code="no_idle_executor", text=f"all {len(view.busy)} executor(s) of pool {view.pool!r} are busy"))
        if view.starting:
            since = f" for {view.starting_for_s:.0f} s" if view.starting_for_s is not None else ""
            reasons.append(WaitReason(code="executor_starting", text=f"{view.starting} executor(s) starting{since}"))
        if view.start_failure:
            reasons.append(WaitReason(code="cannot_start", text=f"executors of pool {view.pool!r} fail to start: {view.start_failure}"))
        if view.max_executors is not None and total >= view.max_executors:
            reasons.append(WaitReason(code="pool_at_max", text=f"the pool has {total} executor(s), its policy's max is {view.max_executors}"))
        if total == 0 and not view.start_failure:
            reasons.append(WaitReason(code="no_executors", text=f"pool {view.pool!r} has no executor and none is starting"))
    estimate = None
    if view.rank_in_tenant is not None and not capped and position is not None and not group_full:
        got = estimate_start(view, position)
        if got is not None:
            start_in, method = got
            if view.decision:
                method += f"; the autoscaler's last decision: {view.decision}"
            estimate = WaitEstimate(start_in_s=round(start_in, 1), start_at=view.now + timedelta(seconds=start_in), method=method)
    return JobWait(**base, waiting=True, position=position, position_in_tenant=in_tenant, ahead_capped=capped,
                   reasons=reasons, estimate=estimate, queue_timeout_left_s=view.queue_timeout_left_s,
                   summary=_queued_summary(reasons, estimate, view))  # fmt: skip


def _queued_summary(reasons: list[WaitReason], estimate: WaitEstimate | None, view: QueueView) -> str:
    why = reasons[0].text if reasons else "it waits to be claimed"
    when = f"; it should start in about {_span(estimate.start_in_s)}" if estimate is not None else "; no estimate yet"
    return f"queued {_span(view.waited_s)}: {why}{when}"


def _why_it_waited(view: QueueView) -> list[WaitReason]:
    """What held a job that left the queue, as far as its record tells: its needs, a full
    concurrency group, an executor that had to start for it."""
    out = []
    if view.needs and view.needs_wait_s > 0:
        out.append(WaitReason(code="needs", jobs=view.needs,
                              text=f"it waited {_span(view.needs_wait_s)} for {', '.join(view.needs)} to succeed before it queued"))  # fmt: skip
    if view.was_parked and view.group:
        out.append(WaitReason(code="concurrency_group", text=f"its concurrency group {view.group!r} was at its limit"))
    if view.taken_by == "starting":
        out.append(WaitReason(code="executor_starting", text="no executor was free: one started for it"))
    elif view.taken_by and view.waited_s >= 1 and not view.was_parked:
        out.append(WaitReason(code="no_idle_executor", text="no executor was free until one finished its job"))
    return out


def _ended_summary(view: QueueView, reasons: list[WaitReason]) -> str:
    why = f": {reasons[0].text}" if reasons else ""
    if not view.started:  # ended in the queue (cancelled, timed out)
        return f"{view.state.value}: it waited {_span(view.waited_s)} and never started{why}"
    return f"{view.state.value}: it waited {_span(view.waited_s)} in the queue{why}"


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
