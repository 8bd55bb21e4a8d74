"""Per-pool counters and histograms kept in Redis by the Lua scripts, read by /metrics.

Counters live in Redis rather than in a process because the processes that see a job end
(executors, reapers in every API replica) are not the ones Prometheus scrapes. Histogram
buckets are stored per bucket (not cumulative); `PoolStats` accumulates them.

Buckets fit CI: queue waits from milliseconds (idle executors) to hours (a starved pool),
durations from a second to a working day.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WAIT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
DURATION_BUCKETS_S = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)


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


def _histogram(raw: dict[str, str], name: str, bounds: tuple[float, ...]) -> Histogram:
    cumulative, running = [], 0
    for i, bound in enumerate([*bounds, float("inf")], start=1):
        running += int(raw.get(f"{name}_bucket:{i}", 0))
        cumulative.append((float(bound), running))
    return Histogram(cumulative, float(raw.get(f"{name}_sum", 0.0)), int(raw.get(f"{name}_count", 0)))


@dataclass(frozen=True)
class RunStats:
    """The runs' stats hash (every pool's: a run's jobs may be in several)."""

    submitted: int = 0
    finished: dict[str, int] = field(default_factory=dict)  # by outcome (a RunState that ends)
    duration: Histogram = Histogram([], 0.0, 0)  # from submit to the last job's end


def parse_runs(raw: dict[str, str]) -> RunStats:
    return RunStats(
        submitted=int(raw.get("submitted_total", 0)),
        finished={k[len("runs_total:") :]: int(v) for k, v in raw.items() if k.startswith("runs_total:")},
        duration=_histogram(raw, "run_duration", DURATION_BUCKETS_S),
    )


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
    )
