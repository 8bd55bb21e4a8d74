"""How well the predictive policy's model of lateness matches the replay, week by week.

The policy sizes its buffer from job deficits (forecast.py): a job is late iff its deficit
exceeds the buffer in force. This replays a trace through the untuned policy and sets, per
week, the jobs that really waited longer than the target beside the jobs the deficits called
late and the late jobs the plans in force expected (before they were corrected by
calibration). The first two agreeing says the model of a pool is right; the gap between
them and the third is the error in forecasting the week. Beside it, week by week, a constant
buffer (reactive; give the one `farm simulate --policy all` tuned with hindsight).

Usage: python bench/predictive.py [--json] [--trace FILE] [--lead 60] [--target-p95 15] [--buffer 17]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import progress, replay_args, report  # noqa: E402

from farm.sim.simulator import Result, simulate  # noqa: E402
from farm.sim.trace import Trace, parse  # noqa: E402
from farm.sim.tune import UNCAPPED, build  # noqa: E402

WEEK = 7 * 86400


def by_period(trace: Trace, r: Result, target_s: float, period_s: float = WEEK) -> list[dict]:
    """Each period's executor-hours (from the replay's series), jobs and late jobs."""
    t0 = trace.submitted[0]
    n = int((trace.submitted[-1] - t0) // period_s) + 1
    periods = [{"hours": 0.0, "jobs": 0, "late": 0} for _ in range(n)]
    for (t, _, provisioned), (t_next, _, _) in zip(r.series, r.series[1:], strict=False):
        periods[min(int((t - t0) // period_s), n - 1)]["hours"] += provisioned * (t_next - t) / 3600
    for t, wait in zip(trace.submitted, r.job_waits, strict=True):
        p = periods[int((t - t0) // period_s)]
        p["jobs"] += 1
        p["late"] += wait > target_s
    return periods


def main() -> None:
    ap = replay_args(__doc__.split("\n")[0])
    ap.add_argument("--buffer", type=int, default=17, help="a constant buffer (reactive) to set beside it, week by week")
    args = ap.parse_args()
    with args.trace.open() as f:
        (trace,) = parse(f)
    params = {"target_p95_s": args.target_p95, **UNCAPPED}
    progress(f"replaying {len(trace.submitted)} jobs through the predictive policy and a constant buffer of {args.buffer}")
    r = simulate(trace, build("predictive", params), lead_s=args.lead, params=params, record=True)
    c = simulate(trace, build("reactive", {"buffer": args.buffer, **UNCAPPED}), lead_s=args.lead, record=True)
    fc = r.memory
    weeks, const = by_period(trace, r, args.target_p95), by_period(trace, c, args.target_p95)
    days, const_days = by_period(trace, r, args.target_p95, 86400)[:7], by_period(trace, c, args.target_p95, 86400)[:7]
    figures = {
        "lead_s": args.lead, "target_p95_s": args.target_p95, "executor_hours": round(r.executor_hours),
        "wait_p95_s": r.wait_p95_s, "jobs": len(trace.submitted), "late_jobs": sum(w["late"] for w in weeks),
        "late_allowed": len(trace.submitted) - -(-95 * len(trace.submitted) // 100),
        "late_called_by_deficits": fc.called_late if fc is not None else 0,
        "late_expected_by_plans": round(fc.forecast) if fc is not None else 0,
        "late_by_week": " ".join(f"{w['late']}/{w['jobs']}" for w in weeks),
        "hours_by_week": " ".join(f"{w['hours']:.0f}" for w in weeks),
        f"buffer_{args.buffer}_executor_hours": round(c.executor_hours), f"buffer_{args.buffer}_wait_p95_s": c.wait_p95_s,
        f"buffer_{args.buffer}_late_by_week": " ".join(str(w["late"]) for w in const),
        f"buffer_{args.buffer}_hours_by_week": " ".join(f"{w['hours']:.0f}" for w in const),
        "first_week_hours_late_by_day": " ".join(f"{d['hours']:.0f}/{d['late']}" for d in days),
        f"buffer_{args.buffer}_first_week_hours_late_by_day": " ".join(f"{d['hours']:.0f}/{d['late']}" for d in const_days),
    }  # fmt: skip
    report(figures, args.json)


if __name__ == "__main__":
    main()
