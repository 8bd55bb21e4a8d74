"""How well the predictive policy's model of lateness matches the replay, week by week.

The policy sizes its buffer from job deficits (forecast.py): a job is late iff its deficit
exceeds the buffer in force. This replays a trace through the untuned policy and sets, per
week, the jobs that really waited longer than the target beside the jobs the deficits called
late and the late jobs the plans in force expected (before they were corrected by
calibration). The first two agreeing says the model of a pool is right; the gap between
them and the third is the error in forecasting the week.

Usage: python bench/predictive.py [--json] [--trace FILE] [--lead 60] [--target-p95 15]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import progress, replay_args, report  # noqa: E402

from farm.sim.simulator import simulate  # noqa: E402
from farm.sim.trace import parse  # noqa: E402
from farm.sim.tune import build  # noqa: E402

WEEK = 7 * 86400


def main() -> None:
    args = replay_args(__doc__.split("\n")[0]).parse_args()
    with args.trace.open() as f:
        (trace,) = parse(f)
    params = {"target_p95_s": args.target_p95}
    progress(f"replaying {len(trace.submitted)} jobs through the predictive policy")
    r = simulate(trace, build("predictive", params), lead_s=args.lead, params=params, record=True)
    fc = r.memory
    t0 = trace.submitted[0]
    weeks: list[dict] = []
    for t, wait in zip(trace.submitted, r.job_waits, strict=True):
        w = int((t - t0) // WEEK)
        while len(weeks) <= w:
            weeks.append({"week": len(weeks) + 1, "jobs": 0, "late": 0})
        weeks[w]["jobs"] += 1
        weeks[w]["late"] += wait > args.target_p95
    late = sum(w["late"] for w in weeks)
    figures = {
        "lead_s": args.lead, "target_p95_s": args.target_p95, "executor_hours": round(r.executor_hours),
        "wait_p95_s": r.wait_p95_s, "jobs": len(trace.submitted), "late_jobs": late,
        "late_allowed": len(trace.submitted) - -(-95 * len(trace.submitted) // 100),
        "late_called_by_deficits": fc.called_late if fc is not None else 0,
        "late_expected_by_plans": round(fc.forecast) if fc is not None else 0,
        "late_by_week": " ".join(f"{w['late']}/{w['jobs']}" for w in weeks),
    }  # fmt: skip
    report(figures, args.json)


if __name__ == "__main__":
    main()
