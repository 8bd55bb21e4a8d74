"""Demand traces: CSV with `submitted_ts,duration_s,pool,tenant` (one job a row; other
columns are ignored). Pure parsing; the caller opens the file."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass

REQUIRED = ("submitted_ts", "duration_s", "pool", "tenant")


class TraceError(ValueError):
    pass


@dataclass(frozen=True)
class Trace:
    pool: str
    submitted: list[float]  # sorted
    durations: list[float]

    def __len__(self) -> int:
        return len(self.submitted)


def parse(lines: Iterable[str], *, split_pools: bool = False) -> list[Trace]:
    """One trace for all rows (pool "all"), or one per pool with split_pools."""
    reader = csv.DictReader(lines)
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise TraceError(f"trace lacks columns: {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    rows: dict[str, list[tuple[float, float]]] = {}
    for n, row in enumerate(reader, start=2):
        try:
            t, d = float(row["submitted_ts"]), float(row["duration_s"])
        except (TypeError, ValueError) as e:
            raise TraceError(f"line {n}: submitted_ts and duration_s must be numbers") from e
        if d < 0:
            raise TraceError(f"line {n}: negative duration")
        rows.setdefault(row["pool"] if split_pools else "all", []).append((t, d))
    if not rows:
        raise TraceError("trace has no jobs")
    out = []
    for pool, jobs in sorted(rows.items()):
        jobs.sort()
        out.append(Trace(pool, [t for t, _ in jobs], [d for _, d in jobs]))
    return out
