"""Runs policies over a trace, and tunes the peers' knobs for `farm simulate`, two ways.

- **past** (what an operator can do): the knob is re-chosen every week as the cheapest
  value that met the target on the weeks before it, and applied to the next week; the
  first week, with no past, runs the peer's own default (0: no spare capacity). This is
  the yardstick a platform team can actually choose.
- **hindsight** (an oracle): the knob is chosen once after seeing the very trace it is
  judged on, which no operator gets; an hour-of-week calendar tuned so knows which hours
  *were* empty. Kept as the upper bar, labelled so.

p95 wait falls steeply (and, for these knobs, monotonically) as the knob grows, so the
cheapest setting that meets the target is found by bisection rather than a scan.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from farm.autoscale.forecast import hour_of_week
from farm.autoscale.policy import LIVE_KINDS, NO_CAP, GitLabPeriod
from farm.autoscale.registry import KINDS
from farm.sim.simulator import Replay, Result, percentile, simulate
from farm.sim.trace import Trace

POLICIES: dict[str, type] = KINDS  # every kind by name, farm's own first (the registry's)

# The knob a hindsight sweep tunes for each constant-buffer peer.
KNOBS = {"reactive": "buffer", "arc": "min_runners", "jenkins": "spare", "keda": "min_replicas", "gitlab": "idle_count"}

# `everything` compares like for like: no policy capped, as the peers' own defaults are not.
# farm's own kinds stop at LIVE_MAX when their `max` is not given (what a pool runs live, and
# what a single `farm simulate --policy NAME` replays), so the comparison gives theirs.
UNCAPPED: dict[str, Any] = {"max": NO_CAP}

Progress = Callable[[str], None]


class Milestone(str):
    """A progress message worth a line of its own where no bar is drawn (a pipe, a CI log):
    a week tuned. The others only redraw a bar's description."""


def build(name: str, params: dict[str, Any]):  # type: ignore[no-untyped-def]
    return POLICIES[name].model_validate(params)


def run(trace: Trace, name: str, params: dict[str, Any], lead_s: float, *, replay: Replay | None = None,
        score_from: float | None = None) -> Result:  # fmt: skip
    return simulate(trace, build(name, params), lead_s=lead_s, name=name, params=params, progress=replay, score_from=score_from)


def bisection_runs(lo: int, hi: int) -> int:
    """The most steps a bisection over lo..hi takes (each one a replay)."""
    return math.ceil(math.log2(hi - lo + 1)) if hi > lo else 0


def cheapest(
    trace: Trace, name: str, knob: str, target_p95_s: float, lead_s: float, *, base: dict[str, Any] | None = None,
    lo: int = 0, hi: int = 128, progress: Progress = lambda _: None, replay: Replay | None = None, score_from: float | None = None,
) -> Result | None:  # fmt: skip
    """The smallest integer knob value whose p95 wait meets the target (bisection): at most
    1 + bisection_runs(lo, hi) replays."""
    base = {k: v for k, v in (base or {}).items() if k != knob}  # the knob goes first (what a row shows first)
    cache: dict[int, Result] = {}

    def at(v: int) -> Result:
        if v not in cache:
            cache[v] = run(trace, name, {knob: v, **base}, lead_s, replay=replay, score_from=score_from)
            progress(f"{name} {knob}={v}: p95 {cache[v].wait_p95_s:.0f}s, {cache[v].executor_hours:,.0f} h")
        return cache[v]

    if at(hi).wait_p95_s > target_p95_s:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if at(mid).wait_p95_s <= target_p95_s:
            hi = mid
        else:
            lo = mid + 1
    return at(lo)


def gitlab_calendar(
    trace: Trace, target_p95_s: float, lead_s: float, progress: Progress = lambda _: None, *, replay: Replay | None = None,
    score_from: float | None = None,
) -> Result | None:  # fmt: skip
    """GitLab periods tuned with hindsight: per hour of the week, idle_count or nothing,
    turning off the quietest hours (by jobs in the trace) greedily while p95 holds.
    At most GITLAB_CALENDAR_RUNS replays."""
    flat = cheapest(trace, "gitlab", "idle_count", target_p95_s, lead_s, progress=progress, replay=replay, score_from=score_from)
    if flat is None:
        return None
    quiet = quiet_hours(trace, -math.inf, math.inf)
    best = flat
    for n in (flat.params["idle_count"] + i for i in range(3)):
        _, r = most_off(trace, n, quiet, target_p95_s, lead_s, progress=progress, replay=replay, score_from=score_from)
        if r.wait_p95_s <= target_p95_s and r.executor_hours < best.executor_hours:
            best = r
    return best


WEEK_S = 7 * 86400


def week_starts(trace: Trace) -> list[float]:
    """When each week after the first begins (the trace's weeks count from its first job)."""
    t0, end = trace.submitted[0], trace.submitted[-1]
    return [t0 + k * WEEK_S for k in range(1, int((end - t0) // WEEK_S) + 1) if t0 + k * WEEK_S <= end]


def scored_from(trace: Trace, warm_weeks: int) -> float | None:
    """When the figures start after `warm_weeks` of warm-up (None: from the start);
    ValueError if the trace is no longer than its warm-up."""
    if not warm_weeks:
        return None
    start = trace.submitted[0] + warm_weeks * WEEK_S
    if start > trace.submitted[-1]:
        raise ValueError(f"the trace is shorter than its {warm_weeks} warm-up week(s)")
    return start


def past_tuned(
    trace: Trace, name: str, knob: str, target_p95_s: float, lead_s: float, *, base: dict[str, Any] | None = None,
    lo: int = 0, hi: int = 128, progress: Progress = lambda _: None, replay: Replay | None = None, score_from: float | None = None,
) -> Result:  # fmt: skip
    """The peer with its knob re-chosen at the start of every week: the cheapest value in
    lo..hi whose p95 wait met the target over all the weeks before (hi when none did),
    the peer's default (lo) in the first week. The result is one replay of the whole trace
    with the knob changing at the week boundaries, as an operator retuning weekly runs it.

    A week's choice needs the waits each candidate value would have given over the past
    weeks; a replay is causal, so those are the first jobs of one whole-trace replay per
    value, and the values the weekly bisections touch are replayed once each and reused."""
    base = {k: v for k, v in (base or {}).items() if k != knob}  # the knob goes first (what a row shows first)
    starts = week_starts(trace)
    waits: dict[int, tuple[float, ...]] = {}

    def p95_before(v: int, boundary: float) -> float:
        if v not in waits:
            waits[v] = run_recorded(trace, name, {knob: v, **base}, lead_s, replay).job_waits
            progress(f"{name} {knob}={v} replayed for the weekly choices")
        n = bisect.bisect_left(trace.submitted, boundary)
        return percentile(sorted(waits[v][:n]), 95)

    chosen = [lo]
    for week, boundary in enumerate(starts, start=2):
        a, b = lo, hi
        met = p95_before(b, boundary) <= target_p95_s
        if not met:
            a = b  # nothing met it: the most this sweep allows
        while a < b:
            mid = (a + b) // 2
            if p95_before(mid, boundary) <= target_p95_s:
                b = mid
            else:
                a = mid + 1
        chosen.append(a)
        why = f"the cheapest meeting p95 ≤ {target_p95_s:g}s over weeks 1-{week - 1}" if met else f"none up to {hi} met p95 ≤ {target_p95_s:g}s"
        progress(Milestone(f"tuning week {week}/{len(starts) + 1}: {knob}={a} ({why})"))
    progress(f"{name} {knob} by week: {', '.join(map(str, chosen))}")
    schedule = [(t, build(name, {knob: v, **base})) for t, v in zip([trace.submitted[0], *starts], chosen, strict=True)]
    r = simulate(trace, schedule[0][1], lead_s=lead_s, name=name, params={knob: chosen, **base}, progress=replay, schedule=schedule,
                 score_from=score_from)  # fmt: skip
    return replace(r, tuning="past")


# The weeks a past-drawn calendar looks back on (farm.sim.tune.calendar_past), and the
# replayed time before them that fills the pool as it stood when they began.
LOOKBACK_WEEKS = 2
WINDOW_WARMUP_S = 86400.0


def window(trace: Trace, since: float, until: float) -> Trace:
    """The jobs of `trace` submitted in [since, until)."""
    a, b = bisect.bisect_left(trace.submitted, since), bisect.bisect_left(trace.submitted, until)
    return Trace(trace.pool, trace.submitted[a:b], trace.durations[a:b])


def quiet_hours(trace: Trace, since: float, until: float, *, like_days: bool = False) -> list[int]:
    """The hours of the week, quietest first: fewest jobs submitted in [since, until), the
    earlier hour first on a tie. `like_days`: by those jobs plus the mean of the same hour on
    the days like it (weekdays, or the weekend), as a heat map of hour by day shows them to an
    operator; one push fans out into ~19 jobs, so a week's own counts by hour are mostly noise
    (the 42 quietest hours of one week of the shared trace hold 19-29 % of the next week's
    jobs; ranked so, over the weeks before, 6-13 %)."""
    counts = [0] * 168
    a, b = bisect.bisect_left(trace.submitted, since), bisect.bisect_left(trace.submitted, until)
    for t in trace.submitted[a:b]:
        counts[hour_of_week(t)] += 1
    if not like_days:
        return sorted(range(168), key=lambda h: (counts[h], h))
    weekdays, weekend = range(5), range(5, 7)

    def like(h: int) -> float:
        days = weekdays if h // 24 < 5 else weekend
        return sum(counts[d * 24 + h % 24] for d in days) / len(days)

    return sorted(range(168), key=lambda h: (counts[h] + like(h), h))


def calendar(idle_count: int, off: list[int]) -> dict[str, Any]:
    """GitLab's params for `idle_count` with the hours `off` at none."""
    return {"idle_count": idle_count, "periods": [GitLabPeriod(hours_of_week=off, idle_count=0).model_dump()] if off else []}


def calendar_past(
    trace: Trace, target_p95_s: float, lead_s: float, idle_by_week: list[int], *, lookback_weeks: int = LOOKBACK_WEEKS,
    progress: Progress = lambda _: None, replay: Replay | None = None, score_from: float | None = None, quantile: float = 95.0,
) -> Result:  # fmt: skip
    """GitLab's `periods` as an operator could draw them, re-drawn every week from the weeks
    before it: the idle_count the weekly-tuned flat peer chose for that week (`idle_by_week`)
    or one more, with the hours of the week that were quietest in all the weeks before
    (quiet_hours, like_days) turned off, as many as still met the target when the last
    `lookback_weeks` weeks are replayed with them; of the two, the cheaper on those weeks. The first week, with no past,
    runs the flat peer's default with nothing off. The result is one replay of the whole
    trace with the calendar changing at the week boundaries. `quantile` above 95 draws with
    a margin: the lookback's waits at that quantile must meet the target.

    Each candidate is judged on a replay of the lookback weeks alone (after a day that fills
    the pool as it stood), never of the week it will run in: the hours that were quiet are
    not always the hours that will be, which is what a calendar tuned with hindsight knows
    (gitlab_calendar)."""
    starts = week_starts(trace)
    idle: list[int] = [idle_by_week[0]]
    offs: list[list[int]] = [[]]
    for week, boundary in enumerate(starts, start=2):
        since = max(trace.submitted[0], boundary - lookback_weeks * WEEK_S)
        past = window(trace, since - WINDOW_WARMUP_S, boundary)
        quiet = quiet_hours(trace, trace.submitted[0], boundary, like_days=True)
        n0 = idle_by_week[week - 1]
        best: tuple[float, int, int] | None = None  # (executor-hours over the lookback, idle_count, hours off)
        for n in (n0, n0 + 1):
            k, r = most_off(past, n, quiet, target_p95_s, lead_s, near=len(offs[-1]), replay=replay, score_from=since,
                            quantile=quantile)  # fmt: skip
            if r.wait_p95_s <= target_p95_s and (best is None or r.executor_hours < best[0]):
                best = (r.executor_hours, n, k)
        n, k = (n0, 0) if best is None else best[1:]
        idle.append(n)
        offs.append(quiet[:k])
        why = f"the cheapest meeting p95 ≤ {target_p95_s:g}s over weeks {max(1, week - lookback_weeks)}-{week - 1}" if best else \
            f"no calendar met p95 ≤ {target_p95_s:g}s over weeks {max(1, week - lookback_weeks)}-{week - 1}: the flat peer's knob"
        progress(Milestone(f"drawing week {week}/{len(starts) + 1}: idle_count={n}, {k} quiet hours off ({why})"))
    schedule = [(t, build("gitlab", calendar(n, off))) for t, n, off in zip([trace.submitted[0], *starts], idle, offs, strict=True)]
    r = simulate(trace, schedule[0][1], lead_s=lead_s, name=CALENDAR, params={"idle_count": idle, "quiet_hours_off": [len(o) for o in offs]},
                 progress=replay, schedule=schedule, score_from=score_from)  # fmt: skip
    return replace(r, tuning="past")


def most_off(trace: Trace, idle_count: int, quiet: list[int], target_p95_s: float, lead_s: float, *, near: int | None = None,
             progress: Progress = lambda _: None, replay: Replay | None, score_from: float | None,
             quantile: float = 95.0) -> tuple[int, Result]:  # fmt: skip
    """GitLab at `idle_count` with the most of the `quiet` hours (in that order) off that still
    meets the target on `trace`, and how many (none off when even that misses). A bisection
    over them all, or from `near` (last week's count) outward in doubling steps, then a
    bisection between the last that met and the first that missed: a week like the one
    before costs two replays instead of eight. `quantile`: the wait that must meet the target
    (95, or higher to keep a margin of the late budget: 97.5 keeps half of it)."""
    tried: dict[int, float] = {}
    results: dict[int, Result] = {}
    first = 0 if score_from is None else bisect.bisect_left(trace.submitted, score_from)

    def wait(k: int) -> float:
        if k not in tried:
            params = calendar(idle_count, quiet[:k])
            r = simulate(trace, build("gitlab", params), lead_s=lead_s, name="gitlab", params=params, progress=replay,
                         score_from=score_from, record=quantile != 95.0)  # fmt: skip
            results[k] = r
            tried[k] = r.wait_p95_s if quantile == 95.0 else percentile(sorted(r.job_waits[first:]), quantile)
            progress(f"gitlab idle_count={idle_count}, {k} quiet hours off: p{quantile:g} {tried[k]:.0f}s")
        return tried[k]

    k = last_met(len(quiet), lambda k: wait(k) <= target_p95_s, near=near)
    wait(k)
    return k, results[k]


def last_met(hi: int, meets: Callable[[int], bool], *, near: int | None = None) -> int:
    """The largest k in 0..hi for which `meets(k)` holds, where it holds up to some k and not
    after (0 when it holds nowhere). A bisection over 0..hi, or from `near` outward in
    doubling steps and then a bisection between the last that met and the first that
    missed: about two calls when the answer is `near`, instead of log2(hi)."""
    lo = 0  # the answer is in lo..hi
    if near is not None:
        k, step = min(max(near, 0), hi), 1
        if meets(k):
            lo = k
            while lo < hi:
                if meets(nxt := min(hi, lo + step)):
                    lo, step = nxt, 2 * step
                else:
                    hi = nxt - 1
                    break
        else:
            hi = k - 1
            while lo < hi:
                if meets(nxt := max(lo, hi - step + 1)):
                    lo = nxt
                    break
                hi, step = nxt - 1, 2 * step
            hi = max(hi, lo)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if meets(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def calendar_runs(trace: Trace) -> int:
    """The most replays calendar_past() takes: two searches over the hours a week (a doubling
    walk, then a bisection), and the final one."""
    return 2 * 2 * (1 + bisection_runs(0, 168)) * len(week_starts(trace)) + 1


CALENDAR = "gitlab-calendar"  # the row of the past-drawn calendar (a GitLab policy with periods)


def run_recorded(trace: Trace, name: str, params: dict[str, Any], lead_s: float, replay: Replay | None) -> Result:
    return simulate(trace, build(name, params), lead_s=lead_s, name=name, params=params, progress=replay, record=True)


def past_runs(trace: Trace) -> int:
    """The most replays past_tuned() takes: a whole bisection a week, and the final one."""
    return min(129, CHEAPEST_RUNS * len(week_starts(trace))) + 1


# the most replays of cheapest() over 0..128, and of gitlab_calendar() (flat, then 3 knob values over 0..168 hours)
CHEAPEST_RUNS = 1 + bisection_runs(0, 128)
GITLAB_CALENDAR_RUNS = CHEAPEST_RUNS + 3 * (1 + bisection_runs(0, 168))


@dataclass(frozen=True)
class Stage:
    """One policy of `everything`, for a caller that shows progress policy by policy."""

    policy: str
    max_runs: int  # the most replays it takes
    go: Callable[[Progress, Replay | None], Result | None]  # (progress, replay) -> its result, None if none meets the target


def stages(trace: Trace, target_p95_s: float, lead_s: float, tuning: str = "past", warm_weeks: int = 0) -> list[Stage]:
    """What `everything` does, one policy at a time. `tuning`: "past" (each peer's knob
    re-chosen weekly from the weeks before) or "hindsight" (chosen once from the whole
    trace; the GitLab calendar too). `warm_weeks`: the first weeks are replayed as every
    policy's warm-up on known demand (a pool switched over from another system, with its
    history as the seed) and only the weeks after are scored; hindsight tunes on those."""
    score_from = scored_from(trace, warm_weeks)
    flat: dict[str, Result] = {}  # the weekly-tuned peers' results, by name (the calendar starts from GitLab's)

    def predictive(progress: Progress, replay: Replay | None) -> Result:
        r = run(trace, "predictive", {"target_p95_s": target_p95_s, **UNCAPPED}, lead_s, replay=replay, score_from=score_from)
        progress(f"predictive: p95 {r.wait_p95_s:.0f}s, {r.executor_hours:,.0f} h")
        return replace(r, warm_weeks=warm_weeks)

    def peer(name: str) -> Callable[[Progress, Replay | None], Result | None]:
        base = UNCAPPED if name in LIVE_KINDS else None
        if tuning == "past":
            def weekly(progress: Progress, replay: Replay | None) -> Result:
                r = past_tuned(trace, name, KNOBS[name], target_p95_s, lead_s, base=base, progress=progress, replay=replay,
                               score_from=score_from)  # fmt: skip
                flat[name] = r
                return replace(r, warm_weeks=warm_weeks)

            return weekly

        def hindsight(progress: Progress, replay: Replay | None) -> Result | None:
            r = cheapest(trace, name, KNOBS[name], target_p95_s, lead_s, base=base, progress=progress, replay=replay,
                         score_from=score_from)  # fmt: skip
            return None if r is None else replace(r, tuning="hindsight", warm_weeks=warm_weeks)

        return hindsight

    def calendar(progress: Progress, replay: Replay | None) -> Result | None:
        r = gitlab_calendar(trace, target_p95_s, lead_s, progress, replay=replay, score_from=score_from)
        return None if r is None else replace(r, tuning="hindsight", warm_weeks=warm_weeks)

    def drawn(progress: Progress, replay: Replay | None) -> Result:
        if "gitlab" not in flat:
            peer("gitlab")(progress, replay)
        idle = flat["gitlab"].params["idle_count"]
        r = calendar_past(trace, target_p95_s, lead_s, idle, progress=progress, replay=replay, score_from=score_from)
        return replace(r, warm_weeks=warm_weeks)

    if tuning == "past":
        runs = past_runs(trace)
        return [Stage("predictive", 1, predictive), *(Stage(name, runs, peer(name)) for name in ("reactive", "arc", "jenkins", "keda", "gitlab")),
                Stage(CALENDAR, calendar_runs(trace), drawn)]  # fmt: skip
    if tuning != "hindsight":
        raise ValueError(f"tuning is past or hindsight, not {tuning!r}")
    return [
        Stage("predictive", 1, predictive),
        *(Stage(name, CHEAPEST_RUNS, peer(name)) for name in ("reactive", "arc", "jenkins", "keda")),
        Stage("gitlab", GITLAB_CALENDAR_RUNS, calendar),
    ]


def everything(
    trace: Trace, target_p95_s: float, lead_s: float, progress: Progress = lambda _: None, *, replay: Replay | None = None,
    tuning: str = "past", warm_weeks: int = 0,
) -> list[Result]:  # fmt: skip
    """farm's predictive policy untuned (its only inputs are the target and the lead time),
    and every peer tuned (see the module's docstring) to the cheapest setting that meets the
    target."""
    results = (stage.go(progress, replay) for stage in stages(trace, target_p95_s, lead_s, tuning, warm_weeks))
    return [r for r in results if r is not None]
