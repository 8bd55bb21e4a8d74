"""Week-by-week figures of a replay (`farm simulate --weekly`), and the waits the CI system
itself observed: where one policy wins, and whether the replay's waits look like the real ones.

The weeks are the trace's, counted from its first job, as past tuning (farm.sim.tune)
re-chooses a knob at their starts; only the scored ones (after a warm-up) are shown. A
week's jobs and waits are those of the jobs submitted in it; its executor and busy time is
what was provisioned, and ran, within it. A replay returns totals, not a timeline, so a
week's time is the difference of two replays scored from consecutive week starts
(`score_from` only moves where the counting starts, never a decision): the weeks sum to the
totals exactly, at the price of one replay a week.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from farm.sim.simulator import Replay, Result, percentile, simulate
from farm.sim.trace import Trace
from farm.sim.tune import WEEK_S, build


@dataclass(frozen=True)
class Observed:
    """The queue times a trace's CI system recorded (`observed_queue_s`), over some of its jobs."""

    jobs: int  # the jobs with a recorded wait
    wait_p50_s: float
    wait_p95_s: float

    def row(self) -> dict[str, Any]:
        return {"observed_jobs": self.jobs, "observed_wait_p50_s": round(self.wait_p50_s, 3),
                "observed_wait_p95_s": round(self.wait_p95_s, 3)}  # fmt: skip


@dataclass(frozen=True)
class Week:
    start: float
    jobs: int
    executor_hours: float
    busy_hours: float
    wait_p50_s: float
    wait_p95_s: float
    knob: dict[str, Any] | None = None  # a past-tuned peer's knob in force that week
    observed: Observed | None = None

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start": datetime.fromtimestamp(self.start, UTC).isoformat(),
            "start_ts": self.start,
            "jobs": self.jobs,
        }
        out |= {k: round(getattr(self, k), 3) for k in ("executor_hours", "busy_hours", "wait_p50_s", "wait_p95_s")}
        if self.knob is not None:
            out["knob"] = self.knob
        if self.observed is not None:
            out |= self.observed.row()
        return out


def starts(trace: Trace, warm_weeks: int = 0) -> list[float]:
    """When each scored week begins (the last one runs to the end of the replay)."""
    t0, end = trace.submitted[0], trace.submitted[-1]
    return [t0 + k * WEEK_S for k in range(warm_weeks, int((end - t0) // WEEK_S) + 1) if t0 + k * WEEK_S <= end]


def observed(trace: Trace, since: float = -math.inf, until: float = math.inf) -> Observed | None:
    """The recorded waits of the jobs submitted in [since, until); None when the trace has
    no `observed_queue_s` column or none of those jobs has a value."""
    if trace.observed is None:
        return None
    a, b = bisect.bisect_left(trace.submitted, since), bisect.bisect_left(trace.submitted, until)
    seen = sorted(o for o in trace.observed[a:b] if not math.isnan(o))
    return Observed(len(seen), percentile(seen, 50), percentile(seen, 95)) if seen else None


def weeks(trace: Trace, r: Result, *, warm_weeks: int = 0, replay: Replay | None = None, seen: Trace | None = None) -> list[Week]:
    """`r`'s figures week by week, replaying it (same policy, schedule, lead) once per scored
    week; the observed waits from `seen` (the trace as read, when `trace` was rebuilt from it)."""
    policy = r.schedule[0][1] if r.schedule else build(r.policy, r.params)
    bounds = starts(trace, warm_weeks)
    runs = [simulate(trace, policy, lead_s=r.lead_s, name=r.policy, params=r.params, schedule=r.schedule, progress=replay,
                     score_from=s if k or warm_weeks else None, record=k == 0)
            for k, s in enumerate(bounds)]  # fmt: skip
    waits = runs[0].job_waits
    # a past-tuned result's knobs, a value a week (the calendar's idle_count and quiet hours off)
    by_week = {k: v for k, v in r.params.items() if isinstance(v, list)} if r.tuning == "past" else {}
    out = []
    for k, s in enumerate(bounds):
        until = bounds[k + 1] if k + 1 < len(bounds) else math.inf
        a, b = bisect.bisect_left(trace.submitted, s), bisect.bisect_left(trace.submitted, until)
        mine = sorted(waits[a:b])
        later = runs[k + 1] if k + 1 < len(runs) else None
        week = warm_weeks + k
        out.append(Week(
            start=s, jobs=b - a,
            executor_hours=runs[k].executor_hours - (later.executor_hours if later else 0.0),
            busy_hours=runs[k].busy_hours - (later.busy_hours if later else 0.0),
            wait_p50_s=percentile(mine, 50), wait_p95_s=percentile(mine, 95),
            knob={k: v[week] for k, v in by_week.items() if week < len(v)} or None,
            observed=observed(seen or trace, s, until),
        ))  # fmt: skip
    return out
