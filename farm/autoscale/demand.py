"""A pool's demand, by hour: the model the autoscaler keeps and `farm policy seed` sends. Pure.

For each hour (hours since the epoch, UTC): the jobs that arrived in it by second, and the
durations of the jobs that ended in it, on a log scale (bins 5 % wide). An hour never holds
more than 3,600 arrival pairs and ~260 duration bins whatever the load, so eight weeks of a
busy pool stay small, unlike the capped stream of every arrival. Its document
({"a": [[second, jobs]...], "d": [[bin, jobs]...]}) is read with every number checked.

The bottom of the capacity core: it imports nothing of farm's but farm.errors, so the store
(farm.store.history keeps it in Redis) and the API (farm.api.pools takes a seed) read it
without the simulator. Replaying it as a trace, and what a policy learns from that, are
`farm simulate`'s (farm.sim.history).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from farm.errors import FarmError

HOUR_S = 3600
WEEK_HOURS = 168
STEP = 1.05  # a duration bin is 5 % wider than the one before
MAX_DURATION_S = 7 * 86400.0  # longer jobs count as this long
MAX_BIN = math.ceil(math.log1p(MAX_DURATION_S) / math.log(STEP))
MAX_PER_SECOND = 100_000  # arrivals in one second, the most an hour may say
MAX_PER_BIN = 10_000_000
MAX_HOUR = 10**7  # hours since the epoch: until the year 3110


class HistoryError(FarmError):
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


def jobs(hours: Iterable[Hour]) -> int:
    return sum(h.jobs for h in hours)
