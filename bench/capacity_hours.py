"""Where the predictive policy spends idle executor-hours that the hindsight calendar does
not: hours of the week ranked by how many jobs the trace has in them, in groups, with each
policy's idle executor-hours (provisioned minus demand, from the replay's series) per group.

The calendar is the GitLab peer tuned with hindsight, as `farm simulate --policy all` tunes
it (`--calendar N,K` gives its idle_count and number of quiet hours off instead of tuning).

Usage: python bench/capacity_hours.py [--json] [--trace FILE] [--lead 60] [--target-p95 15] [--calendar 18,42]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import progress, replay_args, report  # noqa: E402

from farm.autoscale.forecast import HOURS, hour_of_week  # noqa: E402
from farm.autoscale.policy import GitLabPeriod  # noqa: E402
from farm.sim.simulator import Result, simulate  # noqa: E402
from farm.sim.trace import Trace, parse  # noqa: E402
from farm.sim.tune import UNCAPPED, build, gitlab_calendar  # noqa: E402

GROUP = 17  # hours of the week per row (168 = 9 rows of 17 and one of 15)


def idle_by_hour(trace: Trace, name: str, params: dict, lead_s: float) -> tuple[Result, list[float]]:
    r = simulate(trace, build(name, params), lead_s=lead_s, name=name, params=params, record=True)
    idle = [0.0] * HOURS
    for (t, demand, provisioned), (t_next, _, _) in zip(r.series, r.series[1:], strict=False):
        idle[hour_of_week(t)] += max(0, provisioned - demand) * (t_next - t) / 3600
    return r, idle


def main() -> None:
    ap = replay_args(__doc__.split("\n")[0])
    ap.add_argument("--calendar", help="idle_count,quiet_hours: skip tuning the calendar")
    args = ap.parse_args()
    (trace,) = parse(args.trace.read_text().splitlines())
    jobs = [0] * HOURS
    for t in trace.submitted:
        jobs[hour_of_week(t)] += 1
    quiet = sorted(range(HOURS), key=lambda h: (jobs[h], h))
    if args.calendar:
        n, k = (int(x) for x in args.calendar.split(","))
        calendar = {"idle_count": n, "periods": [GitLabPeriod(hours_of_week=quiet[:k], idle_count=0).model_dump()] if k else []}
    else:
        progress("tuning the GitLab calendar with hindsight")
        tuned = gitlab_calendar(trace, args.target_p95, args.lead, progress)
        if tuned is None:
            raise SystemExit("no calendar meets the target")
        calendar = tuned.params
    progress("replaying predictive and the calendar")
    pred, pred_idle = idle_by_hour(trace, "predictive", {"target_p95_s": args.target_p95, **UNCAPPED}, args.lead)
    cal, cal_idle = idle_by_hour(trace, "gitlab", calendar, args.lead)
    rows = []
    for i in range(0, HOURS, GROUP):
        hours = quiet[i : i + GROUP]
        rows.append({
            "hours_ranked": f"{i + 1}-{i + len(hours)}", "jobs": sum(jobs[h] for h in hours),
            "predictive_idle_h": round(sum(pred_idle[h] for h in hours)), "calendar_idle_h": round(sum(cal_idle[h] for h in hours)),
        })  # fmt: skip
    figures = {
        "predictive": {"executor_hours": round(pred.executor_hours), "wait_p95_s": pred.wait_p95_s},
        "calendar": {"executor_hours": round(cal.executor_hours), "wait_p95_s": cal.wait_p95_s, "params": calendar},
        "by_hours_of_the_week_quietest_first": rows,
    }
    if args.json:
        report(figures, True)
        return
    print(f"predictive {figures['predictive']}, calendar {figures['calendar']['executor_hours']} h p95 {cal.wait_p95_s} s")
    print(f"{'hours (quietest first)':24} {'jobs':>6} {'predictive idle h':>18} {'calendar idle h':>16}")
    for r in rows:
        print(f"{r['hours_ranked']:24} {r['jobs']:>6} {r['predictive_idle_h']:>18} {r['calendar_idle_h']:>16}")


if __name__ == "__main__":
    main()
