"""A pool's compact demand history (farm.sim.history): what it keeps of a trace, what it
refuses, how a seed moves, and what the predictive policy learns from it. Pure."""

from __future__ import annotations

import random

import pytest

from farm.autoscale.forecast import hour_of_week
from farm.autoscale.policy import PredictivePolicy
from farm.sim.history import (
    HOUR_S,
    WEEK_HOURS,
    HistoryError,
    Hour,
    as_kept,
    bin_seconds,
    duration_bin,
    from_trace,
    learn,
    shift_into,
    to_trace,
)
from farm.sim.trace import Trace

DAY = 86400


def bursty(days: float, seed: int = 1, start: float = 1_700_000_000.0) -> Trace:
    """Pushes every ~10 min by day, each fanning out 1-12 jobs of 1-20 min."""
    rng = random.Random(seed)
    t, jobs = start, []
    while t < start + days * DAY:
        busy = 8 <= (t % DAY) / 3600 < 20
        t += rng.expovariate(1 / (600 if busy else 3600))
        jobs += [(float(int(t)), rng.uniform(60, 1200)) for _ in range(rng.randint(1, 12))]
    jobs.sort()
    return Trace("linux", [a for a, _ in jobs], [d for _, d in jobs])


def test_a_trace_comes_back_with_its_arrivals_and_its_hours_durations():
    trace = bursty(3)
    back = to_trace("linux", from_trace(trace))
    assert back is not None and back.submitted == trace.submitted  # every burst, to the second
    assert sum(back.durations) == pytest.approx(sum(trace.durations), rel=0.03)
    assert sorted(back.durations)[len(back) // 2] == pytest.approx(sorted(trace.durations)[len(trace) // 2], rel=0.08)
    for d in (0.0, 1.0, 59.0, 3600.0):
        assert bin_seconds(duration_bin(d)) == pytest.approx(d, rel=0.03, abs=0.03)


def test_a_trace_as_kept_replaces_only_the_jobs_before_the_cut():
    trace = bursty(4)
    cut = trace.submitted[0] + 2 * DAY
    kept = as_kept(trace, cut)
    assert kept.submitted == trace.submitted
    after = [d for t, d in zip(trace.submitted, trace.durations, strict=True) if t >= cut]
    assert kept.durations[len(kept) - len(after) :] == after
    assert kept.durations[: len(kept) - len(after)] != trace.durations[: len(kept) - len(after)]


def test_an_hour_without_durations_borrows_the_nearest_and_none_at_all_is_nothing_to_learn():
    hours = {10: Hour({5: 2}, {}), 12: Hour({0: 1}, {duration_bin(100): 1})}
    back = to_trace("p", hours)
    assert back is not None and back.submitted == [10 * HOUR_S + 5.0] * 2 + [12 * HOUR_S + 0.0]
    assert all(d == pytest.approx(100, rel=0.03) for d in back.durations)
    assert to_trace("p", {10: Hour({5: 2}, {})}) is None


@pytest.mark.parametrize(
    "doc, where",
    [
        ([], "hour: not an object"),
        ({"a": [], "d": [], "x": 1}, "hour: not an object"),
        ({"a": [[3600, 1]], "d": []}, "hour.a[0]: 3600 is not within"),
        ({"a": [[1, 0]], "d": []}, "hour.a[0]: count 0"),
        ({"a": [[1, 1], [1, 2]], "d": []}, "hour.a[1]: 1 given twice"),
        ({"a": [], "d": [[1.5, 1]]}, "hour.d[0]: not a pair of integers"),
        ({"a": [], "d": [[True, 1]]}, "hour.d[0]: not a pair of integers"),
        ({"a": [[0, 1]] * 3601, "d": []}, "hour.a: not a list of at most 3600"),
    ],
)
def test_a_malformed_hour_is_refused_with_the_field_named(doc, where):
    with pytest.raises(HistoryError, match=where.replace("[", r"\[").replace("]", r"\]")):
        Hour.from_doc(doc)
    assert Hour.from_doc({"a": [[0, 2]], "d": [[7, 1]]}) == Hour({0: 2}, {7: 1})


def test_a_seed_moves_by_whole_weeks_to_end_before_now_and_leaves_out_what_is_too_old():
    trace = bursty(21, start=1_500_000_000.0)  # three weeks, years ago
    hours = from_trace(trace)
    now = 1_800_000_000.0
    kept, weeks, left_out = shift_into(hours, now, keep_hours=2 * WEEK_HOURS)
    current = int(now // HOUR_S)
    assert current - WEEK_HOURS < max(kept) <= current
    assert min(kept) >= current - 2 * WEEK_HOURS and left_out == len(hours) - len(kept) > 0
    for h, hour in kept.items():  # each hour keeps its hour of the week and its jobs
        assert hour_of_week((h - weeks * WEEK_HOURS) * HOUR_S) == hour_of_week(h * HOUR_S)
        assert hours[h - weeks * WEEK_HOURS] is hour
    # a seed sent in parts moves as the whole does
    first_part = {h: hours[h] for h in sorted(hours)[:10]}
    assert shift_into(first_part, now, 10**6, last=max(hours))[1] == weeks


def test_the_predictive_policy_learns_its_plan_from_history_and_resumes_live_from_it():
    trace = bursty(9)
    policy = PredictivePolicy(target_p95_s=15)
    own = learn(to_trace("linux", from_trace(trace)), policy, lead_s=60)  # type: ignore[arg-type]
    assert own.jobs_seen == len(trace) and not own.warming_up and own.follows(policy)
    assert own.buffers.any()  # a plan by the hour, not the warm-up's one buffer
    resumed_at = trace.submitted[-1] + 1
    own.resume(resumed_at)
    assert own.seen_until is None and all(t <= resumed_at for t, _ in own.samples)
    b, reason = own.buffer(resumed_at)
    assert "planned for hour-of-week" in reason or "fallback" in reason
