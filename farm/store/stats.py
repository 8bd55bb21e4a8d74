"""Per-pool counters and histograms kept in Redis by the Lua scripts, read by /metrics.

Counters live in Redis rather than in a process because the processes that see a job end
(executors, reapers in every API replica) are not the ones Prometheus scrapes. Histogram
buckets are stored per bucket (not cumulative), each field named by its bucket's upper bound
(`wait_le:15`, `wait_le:+Inf`), so new bounds never move old counts into another bucket;
`PoolStats` accumulates them. A count whose bound is not one of today's (a farm upgraded
from other buckets, or the per-index fields `wait_bucket:{i}` of farms before bounds named
the fields, read with the bounds they were written under: LEGACY_BOUNDS) counts in the first
bucket of today's that holds it, so the histogram stays cumulative and its +Inf bucket its
count: a wait counted at <= 2.5 s shows at <= 5 s, never below its own bound.

Buckets fit CI: queue waits from milliseconds (idle executors) to hours (a starved pool),
dense around the usual wait targets (15 s, 30 s, a minute...) so a pool's p95 can be read
against its own; durations from a second to a working day.

A run counts in the stats of its pool, the pool of its first job (one pool per run, however
many its jobs use, so the pools' counts add up to the farm's).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field

WAIT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800, 3600, 7200,
                  14400)  # fmt: skip
DURATION_BUCKETS_S = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
# The bounds of the per-index bucket fields (`{name}_bucket:{i}`, +Inf at len + 1) that farms
# before bound-named fields wrote; a process of such a farm still running writes them too.
LEGACY_BOUNDS = {
    "wait": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400),
    "duration": DURATION_BUCKETS_S,
}


def bound_field(bound: float) -> str:
    """How a bucket's upper bound is spelled in its field's name (the Lua scripts get these)."""
    return format(bound, "g")


@dataclass(frozen=True)
class Histogram:
    buckets: list[tuple[float, int]]  # cumulative (upper bound, count), +Inf last
    sum: float
    count: int


@dataclass(frozen=True)
class PoolStats:
    submitted: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    lease_expired: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    wait: Histogram = Histogram([], 0.0, 0)
    duration: Histogram = Histogram([], 0.0, 0)
    cache_restores: dict[str, int] = field(default_factory=dict)  # by outcome: hit, partial, miss, error
    cache_saves: dict[str, int] = field(default_factory=dict)  # by outcome: saved, exists, error
    cache_restore_bytes: int = 0
    cache_save_bytes: int = 0
    cache_restore_seconds: float = 0.0
    # Set by the autoscaler for pools with a policy: the latest desired size and the bounds.
    sizing: dict[str, int] = field(default_factory=dict)  # desired, min, max
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)  # (policy kind, action) -> turns
    executor_start_failures: int = 0  # executors whose runtime could not start
    autoscaler_errors: int = 0  # autoscaler turns of the pool that raised (the other pools went on)
    # The runs whose first job is in the pool.
    runs_submitted: int = 0
    runs_finished: dict[str, int] = field(default_factory=dict)  # by outcome (a RunState that ends)
    run_duration: Histogram = Histogram([], 0.0, 0)  # from submit to the last job's end


def _upper(field_: str, name: str, legacy: tuple[float, ...]) -> float | None:
    """The upper bound a bucket field of histogram `name` counts under; None: not one."""
    try:
        if field_.startswith(f"{name}_le:"):
            upper = float(field_[len(name) + 4 :])
            return None if math.isnan(upper) else upper
        if field_.startswith(f"{name}_bucket:"):
            i = int(field_[len(name) + 8 :])
            return legacy[i - 1] if 1 <= i <= len(legacy) else math.inf  # past the old bounds: only +Inf holds it
    except ValueError:
        pass
    return None


def _histogram(raw: dict[str, str], name: str, bounds: tuple[float, ...]) -> Histogram:
    per = [0] * (len(bounds) + 1)  # today's buckets, +Inf last
    legacy = LEGACY_BOUNDS.get(name, ())
    for field_, n in raw.items():
        upper = _upper(field_, name, legacy)
        if upper is not None:
            per[bisect_left(bounds, upper)] += int(n)  # the first of today's buckets that holds it
    cumulative, running = [], 0
    for bound, n in zip([*bounds, math.inf], per, strict=True):
        running += n
        cumulative.append((float(bound), running))
    return Histogram(cumulative, float(raw.get(f"{name}_sum", 0.0)), int(raw.get(f"{name}_count", 0)))


def parse(raw: dict[str, str]) -> PoolStats:
    """The stats hash of one pool -> PoolStats."""

    def prefixed(prefix: str) -> dict[str, int]:
        return {k[len(prefix) :]: int(v) for k, v in raw.items() if k.startswith(prefix)}

    return PoolStats(
        submitted=int(raw.get("submitted_total", 0)),
        finished=prefixed("finished_total:"),
        lease_expired=int(raw.get("lease_expired_total", 0)),
        retries=prefixed("retries_total:"),
        wait=_histogram(raw, "wait", WAIT_BUCKETS_S),
        duration=_histogram(raw, "duration", DURATION_BUCKETS_S),
        cache_restores=prefixed("cache_restores_total:"),
        cache_saves=prefixed("cache_saves_total:"),
        cache_restore_bytes=int(raw.get("cache_restore_bytes_total", 0)),
        cache_save_bytes=int(raw.get("cache_save_bytes_total", 0)),
        cache_restore_seconds=float(raw.get("cache_restore_seconds_total", 0.0)),
        sizing={k: int(raw[f"{k}_executors"]) for k in ("desired", "min", "max") if f"{k}_executors" in raw},
        decisions={tuple(k.split(":", 1)): v for k, v in prefixed("autoscaler_decisions_total:").items()},  # type: ignore[misc]
        executor_start_failures=int(raw.get("executor_start_failures_total", 0)),
        autoscaler_errors=int(raw.get("autoscaler_errors_total", 0)),
        runs_submitted=int(raw.get("runs_submitted_total", 0)),
        runs_finished=prefixed("runs_total:"),
        run_duration=_histogram(raw, "run_duration", DURATION_BUCKETS_S),
    )
