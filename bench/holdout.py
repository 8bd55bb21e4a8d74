"""How much of a hindsight-tuned peer's advantage survives tuning on past weeks only.

`farm simulate --policy all` tunes each peer on the very trace it is judged on. An operator
can only tune on the weeks behind them. This splits the trace at a week boundary, tunes the
constant buffer (reactive) and the GitLab hour-of-week calendar on the first part, and replays
those settings on the second part, beside the same peers tuned with hindsight on the second
part, and farm's predictive policy (untuned; it starts cold on the second part, knowing
nothing of the first). For each calendar it also gives the share of the replayed jobs that
arrive in its hours off: whether the hours that were quiet stay quiet; and the same for the
42 hours of the day (over weekdays or weekend days) that were quietest on the first part.

Usage: python bench/holdout.py [--json] [--trace FILE] [--lead 60] [--target-p95 15] [--weeks 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import progress, replay_args, report  # noqa: E402

from farm.autoscale.forecast import hour_of_week  # noqa: E402
from farm.sim.trace import Trace, parse  # noqa: E402
from farm.sim.tune import UNCAPPED, cheapest, gitlab_calendar, run  # noqa: E402

WEEK = 7 * 86400


def split(trace: Trace, weeks: float) -> tuple[Trace, Trace]:
    cut = trace.submitted[0] + weeks * WEEK
    i = next(i for i, t in enumerate(trace.submitted) if t >= cut)
    return (Trace(trace.pool, trace.submitted[:i], trace.durations[:i]),
            Trace(trace.pool, trace.submitted[i:], trace.durations[i:]))  # fmt: skip


def quiet_hours_of_day(past: Trace, future: Trace, hours: int) -> float:
    """What an online policy could learn instead of a calendar: the hours of the day (over
    weekdays, or over weekend days) with the fewest jobs a day in the past, up to `hours`
    hours of the week; the share of the future's jobs that fall in them, in %."""

    def group(t: float) -> int:
        h = hour_of_week(t)
        return (24 if h >= 120 else 0) + h % 24

    days = [5] * 24 + [2] * 24  # hours of the week in each group
    jobs = [0] * 48
    for t in past.submitted:
        jobs[group(t)] += 1
    chosen, taken = set(), 0
    for g in sorted(range(48), key=lambda g: (jobs[g] / days[g], g)):
        if taken + days[g] <= hours:
            chosen.add(g)
            taken += days[g]
    return round(100 * sum(1 for t in future.submitted if group(t) in chosen) / len(future.submitted), 1)


def main() -> None:
    ap = replay_args(__doc__.split("\n")[0])
    ap.add_argument("--weeks", type=float, default=3.0, help="weeks to tune on; the rest is replayed")
    args = ap.parse_args()
    with args.trace.open() as f:
        (trace,) = parse(f)
    past, future = split(trace, args.weeks)
    lead, target = args.lead, args.target_p95
    figures: dict[str, float | int | str] = {"lead_s": lead, "target_p95_s": target, "tuned_on_jobs": len(past),
                                             "replayed_jobs": len(future)}  # fmt: skip

    def put(name: str, r) -> None:  # type: ignore[no-untyped-def]
        figures[f"{name}_hours"] = round(r.executor_hours)
        figures[f"{name}_p95_s"] = r.wait_p95_s
        progress(f"{name}: {r.executor_hours:,.0f} h, p95 {r.wait_p95_s:.0f} s")

    for name, on in (("past", past), ("hindsight", future)):
        buffer = cheapest(on, "reactive", "buffer", target, lead, base=UNCAPPED)  # uncapped, as the peers
        calendar = gitlab_calendar(on, target, lead)
        if buffer is None or calendar is None:
            raise SystemExit(f"no setting meets p95 {target} s on the {name} weeks")
        put(f"buffer_{name}_tuned", run(future, "reactive", buffer.params, lead))
        put(f"calendar_{name}_tuned", run(future, "gitlab", calendar.params, lead))
        figures[f"buffer_{name}_tuned_setting"] = buffer.params["buffer"]
        off = set(calendar.params["periods"][0]["hours_of_week"]) if calendar.params["periods"] else set()
        figures[f"calendar_{name}_tuned_hours_off"] = len(off)
        # Whether quiet hours stay quiet: the replayed weeks' jobs that fall in the hours off.
        in_off = sum(1 for t in future.submitted if hour_of_week(t) in off)
        figures[f"calendar_{name}_tuned_hours_off_replayed_jobs_pct"] = round(100 * in_off / len(future.submitted), 1)
    figures["hours_of_day_quiet_before_replayed_jobs_pct"] = quiet_hours_of_day(past, future, 42)
    put("predictive_cold", run(future, "predictive", {"target_p95_s": target, **UNCAPPED}, lead))
    report(figures, args.json)


if __name__ == "__main__":
    main()
