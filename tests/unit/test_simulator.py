"""The simulator, the trace format and the clairvoyant bound, on small traces with known answers."""

import io

import numpy as np
import pytest

from farm.autoscale.forecast import CELLS, K_MAX, Forecaster, expected_week, hour_of_week, plan
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


def test_plan_spends_the_late_budget_on_the_quiet_cells():
    hist = np.zeros((3, 11))
    hist[0, 1:11] = 100  # busy: 100 bursts of 10
    hist[1, 1:11] = 1  # quiet: one burst of 10
    hist[2, 1:4] = 5  # five bursts of 3
    exposure = np.ones(3)
    buffers = plan(hist, exposure, budget=10)
    assert buffers.tolist() == [10, 0, 3]  # the quiet cell gives up its 10 for 10 late jobs
    assert plan(hist, exposure, budget=0).tolist() == [10, 10, 3]


def _forecaster(lead_s: float = 60, target_s: float = 15, hold_s: float = 60) -> Forecaster:
    return Forecaster.new(PredictivePolicy(target_p95_s=target_s, scale_down_delay_s=hold_s), lead_s)


def _deficits(*steps: tuple[float, int, tuple[float, ...]]) -> list[float]:
    """Feed (time, jobs in the pool, arrivals) to a forecaster at L = 60 s, T = 15 s, hold
    60 s; return its deficit histogram's first three bins once every job is counted."""
    fc = _forecaster()
    for now, in_pool, arrivals in steps:
        fc.observe(arrivals, now, in_pool=in_pool)
    fc.observe((), steps[-1][0] + 15, in_pool=steps[-1][1])
    assert not fc.pending
    return fc.hist.sum(axis=0)[:3].tolist()


def test_a_jobs_deficit_counts_the_executors_surely_there_in_time():
    # W = lead - target = 45 s: capacity asked for by t - 45 is ready by t + 15.
    assert _deficits((0, 1, (0.0,)), (50, 1, ()), (100, 2, (100.0,))) == [0, 2, 0]  # both one short
    # the first job finished at 50; its executor is held 60 s, so it is there for the second
    assert _deficits((0, 1, (0.0,)), (50, 0, ()), (100, 1, (100.0,))) == [1, 1, 0]
    # finished at 20, drained at 80: not there at 100, although it was at t - W = 55
    assert _deficits((0, 1, (0.0,)), (20, 0, ()), (100, 1, (100.0,))) == [0, 2, 0]
    # a job that finished within T of its arrival started in time, whatever else happened
    assert _deficits((0, 1, (0.0,)), (10, 0, ())) == [1, 0, 0]
    # the first job finishes at 110, within T of the second's arrival: its executor takes it
    assert _deficits((0, 1, (0.0,)), (50, 1, ()), (100, 2, (100.0,)), (110, 1, ())) == [1, 1, 0]


def test_deficits_wait_for_the_target_to_pass():
    fc = _forecaster()
    fc.observe((0.0,), 0.0, in_pool=1)
    fc.observe((), 14.0, in_pool=1)
    assert fc.hist.sum() == 0 and len(fc.pending) == 1  # a finish by t + T could still serve it
    fc.observe((), 15.0, in_pool=1)
    assert fc.hist.sum() == 1 and not fc.pending


def test_until_a_day_of_history_the_buffer_covers_the_widest_burst_and_checks_no_plan():
    fc = _forecaster()
    for i in range(24):  # a burst of 5 an hour, one of 12 at the third hour, each job waiting a boot
        t = i * 3600.0
        n = 12 if i == 2 else 5
        fc.observe(tuple(t for _ in range(n)), t, in_pool=n)
        fc.observe((), t + 60, in_pool=n, waits=(60.0,) * n)
        fc.observe((), t + 600, in_pool=0)
        buffer, why = fc.buffer(t + 600)
        assert buffer == (5 if i < 2 else 12) and "largest deficit" in why
    assert fc.warming_up and fc.late == 0 and fc.forecast == 0  # the warm-up checks no plan
    fc.observe((), 24 * 3600.0 + 60, in_pool=0)  # a day seen: the next plan is in force
    assert not fc.warming_up and "planned for hour-of-week" in fc.buffer(24 * 3600.0 + 120)[1]
    fc.observe((24 * 3600.0 + 200,), 24 * 3600.0 + 200, in_pool=1)
    fc.observe((), 24 * 3600.0 + 300, in_pool=1, waits=(60.0,))
    assert fc.late == 1  # from here on, real waits check the plans


def test_an_hour_never_seen_borrows_its_rate_from_the_same_hour_of_other_days():
    hist = np.zeros((CELLS, K_MAX + 1))
    exposure = np.zeros(CELLS)
    monday_9, tuesday_9, saturday_9 = 9, 24 + 9, 5 * 24 + 9
    for h in range(0, 5 * 24):  # weekdays seen for a week, quiet: bursts of 10 at 09:00 only
        exposure[2 * h] = 3600
    hist[2 * monday_9, 10] = 5
    week = expected_week(hist, exposure, prior_s=3600)
    busy = week[2 * tuesday_9].sum()
    assert busy > week[2 * (tuesday_9 + 1)].sum() * 5  # 09:00 on another weekday looks busy
    assert week[2 * saturday_9].sum() < busy  # a weekend hour takes from weekends, not weekdays
    assert hour_of_week(1763974800.0) == monday_9  # 2025-11-24 09:00 UTC, a Monday


class _Reference(Forecaster):
    """The Forecaster as first written: deficits counted by the general (any order) way."""

    def _in_order(self) -> bool:
        return False


def _same_memory(a: Forecaster, b: Forecaster) -> None:
    for name in ("samples", "pending", "outcomes"):
        assert list(getattr(a, name)) == list(getattr(b, name)), name
    for name in ("hist", "exposure"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name in ("late", "forecast", "called_late", "seen_until", "first_seen", "planned_at"):
        assert getattr(a, name) == getattr(b, name), name


@pytest.mark.parametrize("seed", range(12))
def test_in_order_settling_counts_what_the_reference_counts(seed):
    """The fast settle (samples and arrivals in time order, as the autoscaler and the
    simulator give them) counts the same deficits as the general one, through ties, gaps,
    late arrivals, a memory pickled and loaded (a restart), one from an older farm with no
    derived state, and arrivals out of order (where the fast way must step aside)."""
    import pickle
    import random

    rng = random.Random(seed)
    lead = rng.choice([30.0, 60.0, 120.0])
    policy = PredictivePolicy(target_p95_s=rng.choice([5.0, 15.0, 20.0]), scale_down_delay_s=rng.choice([0.0, 60.0, 90.0]),
                              replan_s=rng.choice([600.0, 3600.0]))  # fmt: skip
    ref, fast = _Reference.new(policy, lead), Forecaster.new(policy, lead)
    now = 1_757_006_747.0 + rng.random() * 1e5
    whole_seconds, disorder = seed % 2 == 0, seed % 4 == 3
    in_pool, last_arrival, took_fast = 0, now, 0
    for _ in range(1500):
        step = 0.0 if rng.random() < 0.4 else (rng.randint(1, 5) if whole_seconds else rng.random() * 5)
        if rng.random() < 0.003:
            step = rng.randint(100, 100_000)  # a quiet gap
        if disorder and rng.random() < 0.01:
            step = -rng.randint(1, 30)  # a clock step back
        now += step
        n = rng.choice([0, 0, 0, 1, 1, 2, 5, 20]) if rng.random() < 0.6 else 0
        late_by = rng.choice([3, 3, 30, 200])
        arrivals = sorted(now - (rng.randint(0, late_by) if whole_seconds else rng.random() * late_by) for _ in range(n))
        if not disorder:
            arrivals = sorted(max(x, last_arrival) for x in arrivals)
        if arrivals:
            last_arrival = max(last_arrival, arrivals[-1])
        in_pool = max(0, in_pool + n - rng.choice([0, 0, 1, 2, 3]))
        waits = tuple(rng.random() * 40 for _ in range(rng.choice([0, 0, 1, 3])))
        ref.observe(tuple(arrivals), now, in_pool, waits)
        fast.observe(tuple(arrivals), now, in_pool, waits)
        took_fast += fast._steps is not None
        assert fast.buffer(now) == ref.buffer(now)
        if rng.random() < 0.01:
            fast = pickle.loads(pickle.dumps(fast))
        if rng.random() < 0.005:
            fast.__dict__.pop("_steps", None)
            fast.__dict__.pop("_k_seen", None)
        _same_memory(ref, fast)
    assert ref.jobs_seen > 1000
    if not disorder:
        assert took_fast > 1400  # the fast way was the one tested
