"""Skipping the ticks between events changes no figure, on busy pools too (issue 28).

tests/unit/test_simulator.py holds `still_until` to deciding at every tick on bursty traces
of short jobs, where the skipped ticks are mostly a still pool's. Here the pools are busy:
builds of hours, so a pool is rarely still and every skipped tick is one where jobs run,
queue or boot. Every kind (and the knobs that give it clocks of its own: a rate limit, a
hold, windows, retention, periods, polls, the standard Jenkins strategy) is replayed both
ways, and so is a past-tuned schedule; every output field must agree.
"""

import random

import pytest

from farm.sim.simulator import Result, simulate
from farm.sim.trace import Trace
from farm.sim.tune import build
from tests.unit.test_simulator import STILL_CASES

DAY = 86400


def long_builds(days: float, seed: int, start: float = 1_699_833_600.0) -> Trace:
    """Builds of 20 min to 6 h, one every ~40 min by day (every ~3 h at night), now and then
    two or three at once: the pool is busy most of the time, often with jobs queued."""
    rng = random.Random(seed)
    t, jobs = start, []
    while t < start + days * DAY:
        by_day = 8 <= (t % DAY) / 3600 < 19
        t += rng.expovariate(1 / (2400 if by_day else 10800))
        jobs += [(float(int(t)), rng.uniform(1200, 6 * 3600)) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    jobs.sort()
    return Trace("long", [a for a, _ in jobs], [d for _, d in jobs])


BUSY_CASES = [
    *STILL_CASES,
    ("jenkins", {"spare": 1, "no_delay": False}, 60), ("jenkins", {"no_delay": False, "one_shot": False, "idle_minutes": 30}, 60),
    ("keda", {"min_replicas": 1, "target_queue_length": 2, "max": 6}, 60), ("reactive", {"buffer": 0, "max": 3}, 60),
    ("predictive", {"target_p95_s": 15, "max": 4}, 60), ("gitlab", {"idle_count": 1, "scale_factor": 0.5, "scale_factor_limit": 3}, 60),
]  # fmt: skip


def same_everywhere(skipped: Result, every: Result) -> None:
    """Every output field agrees; the series has fewer decisions, each of them one of
    deciding at every tick, and every decision skipped saw what the one before it saw."""
    assert skipped.row() == every.row()
    assert skipped.job_waits == every.job_waits
    assert skipped.schedule == every.schedule
    it = iter(skipped.series)
    kept = next(it)
    assert kept == every.series[0]
    nxt = next(it, None)
    for point in every.series[1:]:
        if point == nxt:
            kept, nxt = nxt, next(it, None)
        else:  # skipped: nothing had changed since the decision before it
            assert point[0] < (nxt[0] if nxt else float("inf")) and point[1:] == kept[1:]
    assert nxt is None  # every decision of the skipping replay is one of deciding at each tick
    if every.memory is not None and every.policy == "predictive":
        a, b = skipped.memory.to_doc(), every.memory.to_doc()
        assert {k: v for k, v in a.items() if k != "samples"} == {k: v for k, v in b.items() if k != "samples"}


@pytest.mark.parametrize("name, params, lead", BUSY_CASES, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BUSY_CASES)])
def test_skipping_a_busy_pools_ticks_changes_no_figure(name, params, lead):
    t = long_builds(3, seed=7)
    every = simulate(t, build(name, params), lead_s=lead, skip_still=False, record=True)
    skipped = simulate(t, build(name, params), lead_s=lead, record=True)
    same_everywhere(skipped, every)
    assert len(skipped.series) < 0.2 * len(every.series)  # the hours of builds were skipped


def test_a_busy_pool_is_mostly_busy():
    """The traces above keep a pool busy: jobs run through most of the replay."""
    t = long_builds(3, seed=7)
    r = simulate(t, build("reactive", {}), lead_s=60)
    assert r.busy_hours > 0.8 * (t.submitted[-1] - t.submitted[0]) / 3600


def test_skipping_a_past_tuned_schedule_changes_no_figure():
    """A schedule (farm.sim.tune's weekly re-tuning) changes the policy between events."""
    t = long_builds(16, seed=3)
    t0 = t.submitted[0]
    schedule = [(t0, build("gitlab", {"idle_count": 0})), (t0 + 5 * DAY, build("gitlab", {"idle_count": 3})),
                (t0 + 9.5 * DAY + 7, build("gitlab", {"idle_count": 1}))]  # fmt: skip
    every = simulate(t, schedule[0][1], lead_s=60, schedule=schedule, skip_still=False, record=True, score_from=t0 + 2 * DAY)
    skipped = simulate(t, schedule[0][1], lead_s=60, schedule=schedule, record=True, score_from=t0 + 2 * DAY)
    same_everywhere(skipped, every)
