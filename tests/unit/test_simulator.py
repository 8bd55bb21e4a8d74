"""The simulator, the trace format and the clairvoyant bound, on small traces with known answers."""

import io

import numpy as np
import pytest

from farm.autoscale.policy import ArcPolicy, PredictivePolicy, ReactivePolicy
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
