"""Why a calendar drawn from the weeks before is no oracle (issue 28, item 5): on a trace,
warm-started as `farm simulate --warm-weeks`, the GitLab calendar tuned with hindsight on the
scored weeks beside the one drawn from the weeks before (farm.sim.tune.calendar_past), with
and without a margin of the late budget, and the share of each scored week's jobs that
arrive in the hours each turns off.

Usage: python bench/calendar_why.py [--trace PATH] [--lead 60] [--target-p95 15] [--warm-weeks 1]
       [--quantiles 95,97.5,99,99.5] [--json]
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import SHARED_TRACE, progress  # noqa: E402

from farm.autoscale.forecast import hour_of_week  # noqa: E402
from farm.sim import tune  # noqa: E402
from farm.sim.trace import Trace, parse  # noqa: E402


def shares(trace: Trace, bounds: list[float], off_by_week: list[set[int]]) -> list[float]:
    """The share of each week's jobs (weeks from `bounds`) submitted in that week's hours off."""
    out = []
    for k, since in enumerate(bounds):
        until = bounds[k + 1] if k + 1 < len(bounds) else math.inf
        a, b = bisect.bisect_left(trace.submitted, since), bisect.bisect_left(trace.submitted, until)
        hours = [hour_of_week(t) for t in trace.submitted[a:b]]
        out.append(sum(h in off_by_week[k] for h in hours) / len(hours) if hours else 0.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, default=SHARED_TRACE)
    ap.add_argument("--lead", type=float, default=60.0)
    ap.add_argument("--target-p95", type=float, default=15.0)
    ap.add_argument("--warm-weeks", type=int, default=1)
    ap.add_argument("--quantiles", default="95,97.5,99,99.5", help="the lookback's wait quantile held to the target, each a drawing")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with args.trace.open() as f:
        (trace,) = parse(f)
    scored = tune.scored_from(trace, args.warm_weeks)
    starts = [trace.submitted[0], *tune.week_starts(trace)]
    first = args.warm_weeks
    flat = tune.past_tuned(trace, "gitlab", "idle_count", args.target_p95, args.lead, score_from=scored)
    idle = flat.params["idle_count"]
    progress(f"gitlab, weekly-tuned: idle_count by week {idle}")
    oracle = tune.gitlab_calendar(trace, args.target_p95, args.lead, score_from=scored)
    out: dict[str, Any] = {"lead_s": args.lead, "target_p95_s": args.target_p95, "warm_weeks": args.warm_weeks}
    if oracle is not None:
        periods = oracle.params.get("periods") or []
        hours = set(periods[0]["hours_of_week"]) if periods else set()
        out["oracle"] = {"executor_hours": round(oracle.executor_hours), "wait_p95_s": oracle.wait_p95_s, "hours_off": len(hours),
                         "idle_count": oracle.params["idle_count"],
                         "jobs_in_hours_off_pct": [round(100 * x, 1) for x in shares(trace, starts[first:], [hours] * len(starts))]}  # fmt: skip
        progress(f"oracle: {out['oracle']}")
    out["drawn"] = []
    for q in (float(x) for x in args.quantiles.split(",")):
        r = tune.calendar_past(trace, args.target_p95, args.lead, idle, quantile=q, score_from=scored)
        off = [set(tune.quiet_hours(trace, trace.submitted[0], t, like_days=True)[:k]) for t, k in
               zip(starts, r.params["quiet_hours_off"], strict=True)]  # fmt: skip
        row = {"quantile": q, "executor_hours": round(r.executor_hours), "wait_p95_s": r.wait_p95_s,
               "meets": r.wait_p95_s <= args.target_p95, "quiet_hours_off": r.params["quiet_hours_off"],
               "jobs_in_hours_off_pct": [round(100 * x, 1) for x in shares(trace, starts[first:], off[first:])]}  # fmt: skip
        progress(f"drawn, p{q:g} of the lookback within the target: {row}")
        out["drawn"].append(row)
    if args.json:
        print(json.dumps(out))
        return
    o = out.get("oracle")
    if o:
        print(f"oracle calendar: idle_count {o['idle_count']}, {o['hours_off']} hours off: {o['executor_hours']:,} h, p95 "
              f"{o['wait_p95_s']:.0f} s; jobs in its hours off by scored week: {o['jobs_in_hours_off_pct']} %")  # fmt: skip
    for row in out["drawn"]:
        print(f"drawn, p{row['quantile']:g} of the weeks before within the target: {row['executor_hours']:,} h, p95 "
              f"{row['wait_p95_s']:.0f} s{'' if row['meets'] else ' (misses)'}; hours off by week {row['quiet_hours_off']}; "
              f"jobs in them by scored week: {row['jobs_in_hours_off_pct']} %")  # fmt: skip


if __name__ == "__main__":
    main()
