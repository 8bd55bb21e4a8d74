"""Demand traces: CSV with `submitted_ts,duration_s,pool,tenant` (one job a row; other
columns are ignored). Pure parsing; the caller opens the file."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass

from farm.errors import FarmError

REQUIRED = ("submitted_ts", "duration_s", "pool", "tenant")


class TraceError(FarmError):
    """A trace that cannot be read; the message names the line."""


@dataclass(frozen=True)
class Trace:
    pool: str
    submitted: list[float]  # sorted
    durations: list[float]

    def __len__(self) -> int:
        return len(self.submitted)


def parse(lines: Iterable[str], *, split_pools: bool = False) -> list[Trace]:
    """One trace for all rows (pool "all"), or one per pool with split_pools."""
    reader = csv.reader(lines)
    header = next(reader, None) or []
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise TraceError(f"trace lacks columns: {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    at, took, in_pool = header.index("submitted_ts"), header.index("duration_s"), header.index("pool")
    rows: dict[str, list[tuple[float, float]]] = {}
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
        if one is not None:
            one.append((t, d))
        else:
            try:
                rows.setdefault(row[in_pool], []).append((t, d))
            except IndexError as e:
                raise TraceError(f"line {n}: no pool") from e
    rows = {pool: jobs for pool, jobs in rows.items() if jobs}
    if not rows:
        raise TraceError("trace has no jobs")
    out = []
    for pool, jobs in sorted(rows.items()):
        jobs.sort()
        out.append(Trace(pool, [t for t, _ in jobs], [d for _, d in jobs]))
    return out
