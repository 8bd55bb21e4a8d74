"""A pool's demand history as `farm simulate` replays it, and what a policy learns from it.

The history itself (farm.autoscale.demand: for each hour, the jobs that arrived in it by
second and the durations of those that ended in it, on a log scale) is the capacity core's;
its names are importable from here too. The autoscaler keeps it in Redis
(farm.store.history) and `farm policy seed` builds it from a trace (`from_trace`).

Replayed as a trace (`to_trace`), each arrival keeps its second and takes a duration from
its own hour's distribution (or the nearest hour's that has one), each at its quantile in a
fixed shuffled order: the bursts are the ones seen, the durations are their hour's. That is
what the predictive policy's forecaster learns from (`learn`), so a pool switched to it
starts from what farm already saw, not from a cold week.
"""
from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Mapping
from typing import Any

from farm.autoscale.demand import (
    HOUR_S,
    MAX_BIN,
    MAX_DURATION_S,
    MAX_HOUR,
    MAX_PER_BIN,
    MAX_PER_SECOND,
    STEP,
    WEEK_HOURS,
    HistoryError,
    Hour,
    bin_seconds,
    duration_bin,
    hour_of,
    jobs,
    shift_into,
)
from farm.autoscale.kinds import DEFAULT_LEAD_S
from farm.sim.simulator import simulate
from farm.sim.trace import Trace

# the demand model's names, importable from here as before it moved to farm.autoscale.demand
__all__ = [
    "HOUR_S", "MAX_BIN", "MAX_DURATION_S", "MAX_HOUR", "MAX_PER_BIN", "MAX_PER_SECOND", "STEP", "WEEK_HOURS",
    "HistoryError", "Hour", "bin_seconds", "duration_bin", "hour_of", "jobs", "shift_into",
    "as_kept", "from_trace", "learn", "to_trace",
]  # fmt: skip

def from_trace(trace: Trace) -> dict[int, Hour]:
    """A trace's jobs as hours; each job's duration counts in the hour it arrived (a trace
    knows which job took how long, so nothing is gained by moving it to the hour it ended)."""
    hours: dict[int, Hour] = {}
    for t, d in zip(trace.submitted, trace.durations, strict=True):
        h = hours.setdefault(hour_of(t), Hour())
        h.arrive(t)
        h.ended(d)
    return hours


def to_trace(pool: str, hours: Mapping[int, Hour]) -> Trace | None:
    """The hours as a trace (None if no job arrived in any): each arrival at its second, its
    duration from its hour's distribution, or the nearest hour's that has one."""
    with_durations = sorted(h for h, hour in hours.items() if hour.durations)
    if not with_durations:
        return None
    submitted: list[float] = []
    durations: list[float] = []
    for h in sorted(hours):
        hour = hours[h]
        n = hour.jobs
        if not n:
            continue
        spread = _spread(hours[_nearest(with_durations, h)].durations, n, random.Random(h))
        k = 0
        for s, count in sorted(hour.arrivals.items()):
            for _ in range(count):
                submitted.append(float(h * HOUR_S + s))
                durations.append(spread[k])
                k += 1
    return Trace(pool, submitted, durations) if submitted else None


def as_kept(trace: Trace, until: float) -> Trace:
    """The trace with its jobs before `until` as the demand history keeps them (what a live
    pool's warm-up learns from), the rest as they are."""
    i = bisect.bisect_left(trace.submitted, until)
    kept = to_trace(trace.pool, from_trace(Trace(trace.pool, trace.submitted[:i], trace.durations[:i]))) if i else None
    if kept is None:
        return trace
    return Trace(trace.pool, kept.submitted + trace.submitted[i:], kept.durations + trace.durations[i:])


def _nearest(sorted_hours: list[int], h: int) -> int:
    i = bisect.bisect_left(sorted_hours, h)
    near = [sorted_hours[j] for j in (i - 1, i) if 0 <= j < len(sorted_hours)]
    return min(near, key=lambda x: (abs(x - h), x))


def _spread(bins: Mapping[int, int], n: int, rng: random.Random) -> list[float]:
    """n durations following the bins' distribution, each at its quantile, in shuffled order."""
    keys = sorted(bins)
    cumulative = list(itertools.accumulate(bins[b] for b in keys))
    total = cumulative[-1]
    out = [bin_seconds(keys[bisect.bisect_right(cumulative, (2 * i + 1) * total // (2 * n))]) for i in range(n)]
    rng.shuffle(out)
    return out


def learn(trace: Trace, policy: Any, lead_s: float = DEFAULT_LEAD_S) -> Any:
    """What the policy learns replaying the trace: its own memory (the predictive policy's
    forecaster; see its `resume` to go on live from it)."""
    return simulate(trace, policy, lead_s=lead_s, record=True).memory
