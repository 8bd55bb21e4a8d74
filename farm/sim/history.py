"""A pool's demand history, compact: for each hour (hours since the epoch, UTC), the jobs
that arrived in it by second, and the durations of the jobs that ended in it, on a log scale
(bins 5 % wide). An hour never holds more than 3,600 arrival pairs and ~260 duration bins
whatever the load, so eight weeks of a busy pool stay small, unlike the capped stream of
every arrival. Pure: the autoscaler keeps it in Redis (farm.store.history) and
`farm policy seed` builds it from a trace.

Replayed as a trace (`to_trace`), each arrival keeps its second and takes a duration from
its own hour's distribution (or the nearest hour's that has one), each at its quantile in a
fixed shuffled order: the bursts are the ones seen, the durations are their hour's. That is
what the predictive policy's forecaster learns from (`learn`), so a pool switched to it
starts from what farm already saw, not from a cold week.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from farm.autoscale.policy import DEFAULT_LEAD_S
from farm.sim.simulator import simulate
from farm.sim.trace import Trace

HOUR_S = 3600
WEEK_HOURS = 168
STEP = 1.05  # a duration bin is 5 % wider than the one before
MAX_DURATION_S = 7 * 86400.0  # longer jobs count as this long
MAX_BIN = math.ceil(math.log1p(MAX_DURATION_S) / math.log(STEP))
MAX_PER_SECOND = 100_000  # arrivals in one second, the most an hour may say
MAX_PER_BIN = 10_000_000
MAX_HOUR = 10**7  # hours since the epoch: until the year 3110


class HistoryError(ValueError):
    """An hour of history that is not well formed; the message names the field."""


def duration_bin(seconds: float) -> int:
    return min(MAX_BIN, max(0, round(math.log1p(min(max(seconds, 0.0), MAX_DURATION_S)) / math.log(STEP))))


def bin_seconds(b: int) -> float:
    return STEP**b - 1


@dataclass
class Hour:
    arrivals: dict[int, int] = field(default_factory=dict)  # second of the hour -> jobs that arrived then
    durations: dict[int, int] = field(default_factory=dict)  # duration bin -> jobs that ended this hour

    @property
    def jobs(self) -> int:
        return sum(self.arrivals.values())

    def arrive(self, t: float) -> None:
        s = int(t) % HOUR_S
        self.arrivals[s] = min(MAX_PER_SECOND, self.arrivals.get(s, 0) + 1)

    def ended(self, seconds: float) -> None:
        b = duration_bin(seconds)
        self.durations[b] = min(MAX_PER_BIN, self.durations.get(b, 0) + 1)

    def merge(self, other: "Hour") -> "Hour":
        for s, n in other.arrivals.items():
            self.arrivals[s] = min(MAX_PER_SECOND, self.arrivals.get(s, 0) + n)
        for b, n in other.durations.items():
            self.durations[b] = min(MAX_PER_BIN, self.durations.get(b, 0) + n)
        return self

    def to_doc(self) -> dict[str, list[list[int]]]:
        return {"a": [[s, n] for s, n in sorted(self.arrivals.items())], "d": [[b, n] for b, n in sorted(self.durations.items())]}

    @classmethod
    def from_doc(cls, doc: Any, what: str = "hour") -> "Hour":
        """An hour from its document ({"a": [[second, jobs]...], "d": [[bin, jobs]...]}),
        every number checked: HistoryError naming the field if one is not as it must be."""
        if not isinstance(doc, dict) or set(doc) != {"a", "d"}:
            raise HistoryError(f"{what}: not an object with exactly 'a' (arrivals) and 'd' (durations)")
        return cls(_pairs(doc["a"], f"{what}.a", HOUR_S - 1, MAX_PER_SECOND), _pairs(doc["d"], f"{what}.d", MAX_BIN, MAX_PER_BIN))


def _pairs(v: Any, what: str, most_key: int, most_count: int) -> dict[int, int]:
    if not isinstance(v, list) or len(v) > most_key + 1:
        raise HistoryError(f"{what}: not a list of at most {most_key + 1} [key, count] pairs")
    out: dict[int, int] = {}
    for i, pair in enumerate(v):
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(x) is int for x in pair)):
            raise HistoryError(f"{what}[{i}]: not a pair of integers")
        k, n = pair
        if not 0 <= k <= most_key:
            raise HistoryError(f"{what}[{i}]: {k} is not within 0..{most_key}")
        if not 1 <= n <= most_count:
            raise HistoryError(f"{what}[{i}]: count {n} is not within 1..{most_count}")
        if k in out:
            raise HistoryError(f"{what}[{i}]: {k} given twice")
        out[k] = n
    return out


def hour_of(t: float) -> int:
    return int(t // HOUR_S)


def from_trace(trace: Trace) -> dict[int, Hour]:
    """A trace's jobs as hours; each job's duration counts in the hour it arrived (a trace
    knows which job took how long, so nothing is gained by moving it to the hour it ended)."""
    hours: dict[int, Hour] = {}
    for t, d in zip(trace.submitted, trace.durations, strict=True):
        h = hours.setdefault(hour_of(t), Hour())
        h.arrive(t)
        h.ended(d)
    return hours


def shift_into(hours: Mapping[int, Hour], now: float, keep_hours: int, last: int | None = None) -> tuple[dict[int, Hour], int, int]:
    """The hours moved by whole weeks (the hour of the week stays) so that the last of them
    (or `last`, the last of a seed sent in parts) is within the week before `now`, less
    those older than `keep_hours` before now: (hours, weeks moved, hours left out)."""
    if not hours:
        return {}, 0, 0
    current = hour_of(now)
    weeks = (current - max(max(hours), last if last is not None else 0)) // WEEK_HOURS
    oldest = current - keep_hours
    moved = {h + weeks * WEEK_HOURS: hour for h, hour in hours.items()}
    kept = {h: hour for h, hour in moved.items() if h >= oldest}
    return kept, weeks, len(moved) - len(kept)


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


def jobs(hours: Iterable[Hour]) -> int:
    return sum(h.jobs for h in hours)


def learn(trace: Trace, policy: Any, lead_s: float = DEFAULT_LEAD_S) -> Any:
    """What the policy learns replaying the trace: its own memory (the predictive policy's
    forecaster; see its `resume` to go on live from it)."""
    return simulate(trace, policy, lead_s=lead_s, record=True).memory
