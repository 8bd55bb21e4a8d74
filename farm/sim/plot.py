"""The week plot of `farm simulate --plot`: demand (running + queued jobs) against the
executors a policy kept, over one week of the replay. The only module of farm.sim that
draws; matplotlib is imported here and nowhere else."""

from __future__ import annotations

from pathlib import Path

from farm.sim.simulator import Result

WEEK = 7 * 86400


def week_plot(results: list[Result], path: Path, *, week: int | None = None) -> None:
    """Plot week `week` (0 = the trace's first; by default the second, once the predictive
    policy has a week behind it, or the first of a shorter trace) into a PNG."""
    import datetime as dt

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recorded = [r for r in results if r.series]
    if not recorded:
        raise ValueError("no recorded series to plot")
    start, end = recorded[0].series[0][0], recorded[0].series[-1][0]
    if week is None:
        week = 1 if end - start >= 2 * WEEK else 0
    t0 = start + week * WEEK
    fig, ax = plt.subplots(figsize=(14, 5), dpi=100)
    demand_drawn = False
    for r in recorded:
        points = [(t, d, c) for t, d, c in r.series if t0 <= t < t0 + WEEK]
        if not points:
            continue
        times = [dt.datetime.fromtimestamp(t, dt.timezone.utc) for t, _, _ in points]
        if not demand_drawn:
            ax.fill_between(times, [d for _, d, _ in points], step="post", color="0.8", label="demand (running + queued)")
            demand_drawn = True
        label = f"{r.policy} ({r.executor_hours:,.0f} executor-h, p95 {r.wait_p95_s:.0f}s)"
        ax.step(times, [c for _, _, c in points], where="post", linewidth=1, label=label)
    ax.set_ylabel("executors")
    ax.set_title(f"{recorded[0].pool}: demand and capacity, week {week + 1} of the trace (UTC)")
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
