"""Demand traces: CSV with `submitted_ts,duration_s,pool,tenant` (one job a row; other
columns are ignored but one: `observed_queue_s`, the wait the CI system itself saw, kept so
a replay's waits can be set beside it; a blank cell there is a job it did not record).
Pure parsing; the caller opens the file. A slice (`since`, `until`: epoch seconds) keeps
the jobs submitted in [since, until), so weeks count from the slice's first job."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from farm.errors import FarmError

REQUIRED = ("submitted_ts", "duration_s", "pool", "tenant")
OBSERVED = "observed_queue_s"  # optional: the queue time the CI system observed, in seconds


class TraceError(FarmError):
    """A trace that cannot be read; the message names the line."""


@dataclass(frozen=True)
class Trace:
    pool: str
    submitted: list[float]  # sorted
    durations: list[float]
    # each job's observed queue time (nan where the CI system recorded none); None: no such column
    observed: list[float] | None = None

    def __len__(self) -> int:
        return len(self.submitted)


def instant(text: str) -> float:
    """An ISO 8601 date or date-time as epoch seconds; UTC unless it names its zone.
    ValueError otherwise."""
    when = datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def parse(lines: Iterable[str], *, split_pools: bool = False, since: float | None = None,
          until: float | None = None) -> list[Trace]:  # fmt: skip
    """One trace for all rows (pool "all"), or one per pool with split_pools; only the jobs
    submitted in [since, until) when given."""
    reader = csv.reader(lines)
    header = next(reader, None) or []
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise TraceError(f"trace lacks columns: {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    at, took, in_pool = header.index("submitted_ts"), header.index("duration_s"), header.index("pool")
    seen = header.index(OBSERVED) if OBSERVED in header else None
    lo, hi = -math.inf if since is None else since, math.inf if until is None else until
    sliced = since is not None or until is not None
    rows: dict[str, list[tuple[float, ...]]] = {}
    one = rows.setdefault("all", []) if not split_pools else None
    for n, row in enumerate(reader, start=2):
        if not row:
            continue  # a blank line
        try:
            t, d = float(row[at]), float(row[took])
        except (IndexError, ValueError) as e:
            raise TraceError(f"line {n}: submitted_ts and duration_s must be numbers") from e
        if d < 0:
            raise TraceError(f"line {n}: negative duration")
        if sliced and not lo <= t < hi:
            continue
        job: tuple[float, ...] = (t, d)  # (a trace of millions of jobs: the common case pays nothing for the options)
        if seen is not None:
            o = math.nan
            if seen < len(row) and row[seen].strip():
                try:
                    o = float(row[seen])
                except ValueError:
                    o = -1.0
                if not 0 <= o < math.inf:
                    raise TraceError(f"line {n}: {OBSERVED} must be a number of seconds (0 or more) or blank")
            job = (t, d, o)
        if one is not None:
            one.append(job)
        else:
            try:
                rows.setdefault(row[in_pool], []).append(job)
            except IndexError as e:
                raise TraceError(f"line {n}: no pool") from e
    rows = {pool: jobs for pool, jobs in rows.items() if jobs}
    if not rows:
        raise TraceError("trace has no jobs" + ("" if since is None and until is None else " in the slice asked for"))
    out = []
    for pool, jobs in sorted(rows.items()):
        if seen is None:
            jobs.sort()
            out.append(Trace(pool, [job[0] for job in jobs], [job[1] for job in jobs]))
            continue
        jobs.sort(key=lambda job: job[:2])  # nan never compares: leave the observed wait out of the order
        out.append(Trace(pool, [job[0] for job in jobs], [job[1] for job in jobs], [job[2] for job in jobs]))
    return out
