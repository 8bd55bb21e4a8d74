"""The simulator, the trace format and the clairvoyant bound, on small traces with known answers."""

import io

import numpy as np
import pytest

from farm.autoscale.policy import ArcPolicy, GitLabPolicy, PredictivePolicy, ReactivePolicy
from farm.sim.simulator import clairvoyant_hours, simulate
from farm.sim.trace import Trace, TraceError, parse
from farm.sim.tune import cheapest


def trace(jobs):
    jobs = sorted(jobs)
    return Trace("all", [float(t) for t, _ in jobs], [float(d) for _, d in jobs])


def test_one_job_waits_the_lead_time_without_a_buffer():
    r = simulate(trace([(0, 100)]), ReactivePolicy(), lead_s=60)
    assert (r.jobs, r.wait_p50_s, r.wait_p95_s) == (1, 60, 60)
    assert r.executor_hours == pytest.approx(160 / 3600)  # asked for at 0, stopped when done at 160
    assert r.busy_hours == pytest.approx(100 / 3600)
    assert r.killed_jobs == 0


def test_a_buffer_absorbs_a_burst():
    jobs = [(0, 10)] + [(1000, 50)] * 5
    r = simulate(trace(jobs), ReactivePolicy(buffer=5), lead_s=60)
    assert r.wait_p95_s == 0 or r.wait_p50_s == 0
    late = simulate(trace(jobs), ReactivePolicy(buffer=2), lead_s=60)
    assert late.wait_p95_s == 60  # three of the five wait a full boot


def test_a_burst_is_decided_on_once_after_all_of_its_instant_and_ends_likewise():
    jobs = [(0, 30)] * 5 + [(100, 30)] * 3  # two pushes' fan-outs, each at one second; each burst ends at one second
    r = simulate(trace(jobs), ReactivePolicy(tick_s=1000), lead_s=10, record=True)
    times = [t for t, _, _ in r.series]
    assert times.count(0.0) == 1 and times.count(100.0) == 1  # one decision per instant, not one per job
    assert times.count(40.0) == 1 and times.count(130.0) == 1  # the ends of a burst: one decision too (the second ran at once on the idle five)
    seen = {t: demand for t, demand, _ in r.series}
    assert (seen[0.0], seen[100.0]) == (5, 3)  # each saw its whole burst
    assert r.wait_p95_s == 10  # and started its executors at once


def test_one_shot_executors_cost_a_boot_per_job():
    jobs = [(0, 100), (500, 100)]
    reuse = simulate(trace(jobs), ReactivePolicy(buffer=1, scale_down_delay_s=10_000), lead_s=60)
    one_shot = simulate(trace(jobs), ArcPolicy(min_runners=1), lead_s=60)
    assert reuse.wait_p95_s == 60 and reuse.wait_p50_s == 0  # the second finds the first's executor
    assert one_shot.executor_hours > 0


def test_clairvoyant_bound():
    far = trace([(0, 100), (10_000, 100)])
    assert clairvoyant_hours(far, 60) == pytest.approx((60 + 100) * 2 / 3600)
    near = trace([(0, 100), (130, 100)])  # the first executor is free at 100, 30 s before: reuse
    assert clairvoyant_hours(near, 60) == pytest.approx((60 + 100 + 30 + 100) / 3600)
    overlapping = trace([(0, 100), (50, 100)])
    assert clairvoyant_hours(overlapping, 60) == pytest.approx((60 + 100) * 2 / 3600)


def test_policies_never_beat_the_clairvoyant_bound():
    rng = np.random.default_rng(7)
    jobs = [(float(t), float(d)) for t, d in zip(np.sort(rng.uniform(0, 86400, 300)), rng.uniform(30, 900, 300), strict=True)]
    tr = trace(jobs)
    for policy in (ReactivePolicy(buffer=0), ReactivePolicy(buffer=3), ArcPolicy(min_runners=2), PredictivePolicy()):
        r = simulate(tr, policy, lead_s=60)
        assert r.jobs == 300 and r.executor_hours >= r.clairvoyant_hours - 1e-9, policy.kind


def test_bisection_finds_the_cheapest_buffer():
    jobs = [(0, 10)] + [(3600 * i, 300) for i in range(1, 20) for _ in range(4)]
    best = cheapest(trace(jobs), "reactive", "buffer", 15, 60)
    assert best is not None and best.params == {"buffer": 4} and best.wait_p95_s <= 15


def test_trace_format():
    text = "submitted_ts,duration_s,pool,tenant,extra\n20,5,linux,a,x\n10,7,mac,b,y\n"
    (one,) = parse(io.StringIO(text))
    assert (one.pool, one.submitted, one.durations) == ("all", [10.0, 20.0], [7.0, 5.0])
    pools = parse(io.StringIO(text), split_pools=True)
    assert [p.pool for p in pools] == ["linux", "mac"]
    with pytest.raises(TraceError, match="lacks columns: tenant"):
        parse(io.StringIO("submitted_ts,duration_s,pool\n1,2,x\n"))
    with pytest.raises(TraceError, match="line 2"):
        parse(io.StringIO("submitted_ts,duration_s,pool,tenant\nsoon,2,x,y\n"))
    with pytest.raises(TraceError, match="no jobs"):
        parse(io.StringIO("submitted_ts,duration_s,pool,tenant\n"))


def _weekly_bursts(sizes, *, t0=1_757_000_000.0):
    """A burst of `sizes[w]` jobs of 5 min at the top of every 3rd hour of week w."""
    jobs = []
    for w, size in enumerate(sizes):
        for h in range(0, 7 * 24, 3):
            jobs += [(t0 + w * 7 * 86400 + h * 3600, 300)] * size
    return trace(jobs)


def test_past_tuning_chooses_each_week_what_the_weeks_before_it_would_have_needed():
    """Week 0 runs the peer's default; week k runs what hindsight tuning picks on weeks
    0..k-1 alone (so no week's choice sees its own demand), in one replay that changes the
    knob at the boundaries."""
    from farm.sim.tune import past_tuned, week_starts

    tr = _weekly_bursts([3, 6, 6, 2])
    starts = week_starts(tr)
    assert len(starts) == 3 and starts[0] == tr.submitted[0] + 7 * 86400
    fast = {"tick_s": 600.0}  # it decides on arrivals and completions too; the ticks only cost time here
    r = past_tuned(tr, "reactive", "buffer", 15, 60, base=fast)
    chosen = r.params["buffer"]
    assert chosen[0] == 0 and r.tuning == "past" and r.jobs == len(tr)
    for k, boundary in enumerate(starts, start=1):
        n = sum(1 for t in tr.submitted if t < boundary)
        past = trace(list(zip(tr.submitted[:n], tr.durations[:n], strict=True)))
        assert chosen[k] == cheapest(past, "reactive", "buffer", 15, 60, base=fast).params["buffer"], k
    assert chosen[1] < chosen[2]  # week 1's bigger bursts raise week 2's knob
    # The last week's bursts are small: a knob chosen in advance overprovisions it, which
    # hindsight (one knob for the whole trace) does not know how to avoid either.
    hindsight = cheapest(tr, "reactive", "buffer", 15, 60, base=fast)
    assert hindsight.params["buffer"] >= chosen[1]


def test_a_schedule_changes_the_policy_at_its_times():
    tr = _weekly_bursts([4, 4])
    week2 = tr.submitted[0] + 7 * 86400
    fast = {"tick_s": 600.0}
    both = simulate(tr, ReactivePolicy(buffer=0, **fast), lead_s=60, schedule=[(week2, ReactivePolicy(buffer=4, **fast))], record=True)
    n = sum(1 for t in tr.submitted if t < week2)
    later = sum(1 for t in tr.submitted if t < week2 + 3600)  # the boundary's own burst meets the change
    assert min(both.job_waits[:n]) == 60 and max(both.job_waits[later:]) == 0  # from then on its 4 were ready
    with pytest.raises(ValueError, match="kind"):
        simulate(tr, ReactivePolicy(), schedule=[(week2, ArcPolicy())])


def test_warm_weeks_score_only_the_weeks_after_them():
    """With score_from, the jobs, their waits, the executor and busy time and the
    clairvoyant bound count from then on; the replay before it is the policy's warm-up."""
    tr = _weekly_bursts([4, 4])
    week2 = tr.submitted[0] + 7 * 86400
    fast = {"tick_s": 600.0}
    whole = simulate(tr, ReactivePolicy(buffer=0, **fast), lead_s=60)
    later = simulate(tr, ReactivePolicy(buffer=0, **fast), lead_s=60, score_from=week2)
    n = sum(1 for t in tr.submitted if t >= week2)
    assert later.jobs == n == whole.jobs // 2
    assert later.busy_hours == pytest.approx(whole.busy_hours / 2, rel=0.01)
    assert later.executor_hours == pytest.approx(whole.executor_hours / 2, rel=0.05)
    assert later.clairvoyant_hours == pytest.approx(whole.clairvoyant_hours / 2, rel=0.05)
    # a buffer learned in the first week only shows in the second's figures
    tuned = simulate(tr, ReactivePolicy(buffer=0, **fast), lead_s=60, score_from=week2, schedule=[(week2 - 3600, ReactivePolicy(buffer=4, **fast))])
    assert tuned.wait_p95_s == 0 and later.wait_p95_s == 60


def test_every_policy_of_all_is_scored_after_the_same_warm_up():
    from farm.sim.tune import past_tuned, stages

    tr = _weekly_bursts([3, 6, 6])
    scored = tr.submitted[0] + 7 * 86400
    n = sum(1 for t in tr.submitted if t >= scored)
    predictive = stages(tr, 15, 60, "past", warm_weeks=1)[0].go(lambda _: None, None)
    assert (predictive.policy, predictive.jobs, predictive.warm_weeks) == ("predictive", n, 1)
    peer = past_tuned(tr, "reactive", "buffer", 15, 60, base={"tick_s": 600.0}, score_from=scored)
    assert peer.jobs == n and peer.params["buffer"][1] > 0  # week 2, the first scored, runs what week 1 needed
    with pytest.raises(ValueError, match="shorter"):
        stages(tr, 15, 60, "past", warm_weeks=5)


STILL_CASES = [
    ("predictive", {"target_p95_s": 15}, 60), ("predictive", {"target_p95_s": 60}, 180), ("predictive", {"target_p95_s": 90}, 60),
    ("reactive", {"buffer": 4}, 60), ("reactive", {"buffer": 2, "scale_up_per_min": 3, "scale_down_delay_s": 300}, 60),
    ("scheduled", {"idle": 1, "windows": [{"cron": "0 8 * * 1-5", "duration_s": 36000, "idle": 6}]}, 60),
    ("arc", {"min_runners": 3}, 60), ("jenkins", {"spare": 2}, 60), ("jenkins", {"spare": 1, "one_shot": False, "idle_minutes": 5}, 60),
    ("gitlab", {"idle_count": 2}, 60), ("gitlab", {"idle_count": 1, "periods": [{"hours_of_week": list(range(8, 20)), "idle_count": 5}]}, 60),
    ("keda", {"min_replicas": 2}, 60), ("keda", {"min_replicas": 0}, 180),
]  # fmt: skip


@pytest.mark.parametrize("name, params, lead", STILL_CASES, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(STILL_CASES)])
def test_skipping_a_still_pools_idle_ticks_changes_no_figure(name, params, lead):
    from farm.sim.tune import build
    from tests.unit.test_history import bursty

    for seed in (1, 2):
        t = bursty(3, seed=seed)
        every = simulate(t, build(name, params), lead_s=lead, skip_still=False, record=True)
        skipped = simulate(t, build(name, params), lead_s=lead, record=True)
        assert skipped.row() == every.row()
        assert skipped.job_waits == every.job_waits
        assert len(skipped.series) < 0.9 * len(every.series)  # the quiet hours were skipped


def _office_hours(weeks, *, nights_from=None, t0=1_757_289_600.0):
    """Weekdays 08-19 UTC: 3 jobs of 10 min every 20 min; nights and weekends none, but from
    week `nights_from`'s first office hour on (where the trace's weeks begin), a job of 10 min
    every night hour too. t0 is a Monday 00:00 UTC."""
    jobs = []
    for w in range(weeks):
        for h in range(7 * 24):
            day, hour = divmod(h, 24)
            at = t0 + w * 7 * 86400 + h * 3600
            if day < 5 and 8 <= hour < 20:
                jobs += [(at + m * 60, 600) for m in (0, 20, 40) for _ in range(3)]
            elif nights_from is not None and (w, h) >= (nights_from, 8):
                jobs.append((at + 1800, 600))
    return trace(jobs)


def test_a_past_drawn_calendar_turns_off_the_hours_the_weeks_before_were_quiet():
    """Week 1 runs the flat peer's knob with nothing off; each later week turns off the
    hours that were quietest over the lookback, as many as met the target replayed there,
    and the whole trace is one replay with the calendar changing at the week boundaries."""
    from farm.autoscale.forecast import hour_of_week
    from farm.sim.tune import CALENDAR, calendar_past, quiet_hours, week_starts

    tr = _office_hours(4)
    idle = [3, 3, 3, 3]  # the flat peer's knob by week, as given
    r = calendar_past(tr, 15, 60, idle)
    assert (r.policy, r.tuning, r.jobs) == (CALENDAR, "past", len(tr))
    off = r.params["quiet_hours_off"]
    assert off[0] == 0 and all(k > 0 for k in off[1:]), off
    assert r.params["idle_count"][0] == 3 and all(n in (3, 4) for n in r.params["idle_count"][1:])
    starts = week_starts(tr)
    assert [t for t, _ in r.schedule] == [tr.submitted[0], *starts]
    busy = {hour_of_week(t) for t in tr.submitted}
    for k, (boundary, (_, policy)) in enumerate(zip(starts, r.schedule[1:], strict=True), start=1):
        hours = policy.periods[0].hours_of_week
        assert len(hours) == off[k] and hours == quiet_hours(tr, tr.submitted[0], boundary, like_days=True)[: off[k]]
        assert set(hours) >= set(range(168)) - busy  # every hour without a job, and office hours only while p95 holds
        assert len(set(hours) & busy) <= 5
    flat = simulate(tr, GitLabPolicy(idle_count=3), lead_s=60)
    assert r.wait_p95_s <= 15 and r.executor_hours < flat.executor_hours  # the quiet hours' idle executors are saved
    # half the late budget kept as a margin (the lookback's p97.5 held to the target): fewer hours off, and no office hour
    # (an hour off just before 08:00 makes that hour's first jobs wait a boot: 2.8 % of them)
    strict = calendar_past(tr, 15, 60, idle, quantile=97.5)
    assert all(0 < a < b for a, b in zip(strict.params["quiet_hours_off"][1:], off[1:], strict=True)), (strict.params, off)
    assert all(set(p.periods[0].hours_of_week if p.periods else ()) <= set(range(168)) - busy for _, p in strict.schedule[1:])


def test_a_past_drawn_calendar_is_drawn_from_the_weeks_before_only():
    """Night jobs that start in week 3 change nothing drawn before week 3 ended: the
    calendars of weeks 1-3 are those of the trace without them, and week 4's keeps the
    nights that now have jobs on."""
    from farm.sim.tune import calendar_past

    quiet, changed = _office_hours(4), _office_hours(4, nights_from=2)
    idle = [3, 3, 3, 3]
    a, b = calendar_past(quiet, 15, 60, idle), calendar_past(changed, 15, 60, idle)
    assert [p for _, p in a.schedule[:3]] == [p for _, p in b.schedule[:3]]
    assert a.schedule[3][1] != b.schedule[3][1]
    assert b.params["quiet_hours_off"][3] < a.params["quiet_hours_off"][3]


def test_the_walk_from_last_weeks_count_finds_what_a_bisection_finds():
    """For every answer and every starting point, the same k as a bisection over all of
    0..hi, and about two calls when the answer is where the walk starts."""
    from farm.sim.tune import last_met

    hi = 168
    for answer in range(-1, hi + 1):  # -1: it holds nowhere
        def meets(k, answer=answer):
            return k <= answer

        assert last_met(hi, meets) == max(answer, 0)
        for near in (0, 1, answer - 3, answer, answer + 1, answer + 40, hi, hi + 5):
            calls: list[int] = []

            def counted(k, calls=calls, meets=meets):
                calls.append(k)
                return meets(k)

            assert last_met(hi, counted, near=near) == max(answer, 0), (answer, near)
            if near == answer and 0 < answer < hi:
                assert len(calls) == 2, calls


def test_quiet_hours_read_like_days_as_an_operators_heat_map_does():
    """Alone, an hour that happened to have no job (Tuesday 03:00 of a busy weekday night)
    ranks before a weekend hour with one; read with the days like it, the weekend goes first."""
    from farm.sim.tune import quiet_hours

    t0 = 1_757_289_600.0  # a Monday 00:00 UTC
    jobs = [(t0 + (d * 24 + 3) * 3600, 60) for d in (0, 2, 3, 4) for _ in range(5)]  # weekday 03:00, but Tuesday
    jobs += [(t0 + (d * 24 + 9) * 3600, 60) for d in range(7)]  # 09:00 every day
    jobs.append((t0 + (5 * 24 + 3) * 3600, 60))  # one on Saturday 03:00
    tr = trace(jobs)
    alone, like = quiet_hours(tr, t0, t0 + 7 * 86400), quiet_hours(tr, t0, t0 + 7 * 86400, like_days=True)
    tuesday_3, saturday_3 = 24 + 3, 5 * 24 + 3
    assert alone.index(tuesday_3) < alone.index(saturday_3)
    assert like.index(saturday_3) < like.index(tuesday_3)
    assert sorted(alone) == sorted(like) == list(range(168))
