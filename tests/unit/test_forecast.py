"""The predictive policy's forecaster: the deficits it counts, the plans it makes, and what
it learned kept as a JSON document (the autoscaler's memory across restarts) and read back."""

import json
import random
import re

import numpy as np
import pytest

from farm.autoscale.forecast import CELLS, K_MAX, RECENT, Forecaster, expected_week, hour_of_week, plan
from farm.autoscale.policy import (
    Memory,
    MemoryDocError,
    PredictivePolicy,
    ReactivePolicy,
    ScheduledPolicy,
    Snapshot,
    UnkeepableMemory,
    Window,
    decide,
)


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


def _random_policy(rng: random.Random) -> tuple[PredictivePolicy, float]:
    lead = rng.choice([30.0, 60.0, 120.0])
    policy = PredictivePolicy(target_p95_s=rng.choice([5.0, 15.0, 20.0]), scale_down_delay_s=rng.choice([0.0, 60.0, 90.0]),
                              replan_s=rng.choice([600.0, 3600.0]))  # fmt: skip
    return policy, lead


def _observations(rng: random.Random, whole_seconds: bool, disorder: bool):  # type: ignore[no-untyped-def]
    """Endless observe() arguments (arrivals, now, in_pool, waits): ties, gaps, late arrivals,
    and with `disorder` clock steps back and arrivals out of order."""
    now = 1_757_006_747.0 + rng.random() * 1e5
    in_pool, last_arrival = 0, now
    while True:
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
        yield tuple(arrivals), now, in_pool, waits


def _through_json(fc: Forecaster) -> Forecaster:
    """A restart: the forecaster kept as a document in strict JSON and read back."""
    return type(fc).from_doc(json.loads(json.dumps(fc.to_doc(), allow_nan=False)))


@pytest.mark.parametrize("seed", range(12))
def test_in_order_settling_counts_what_the_reference_counts(seed):
    """The fast settle (samples and arrivals in time order, as the autoscaler and the
    simulator give them) counts the same deficits as the general one, through ties, gaps,
    late arrivals, a memory kept as a document and read back (a restart, which drops the
    derived state), one with its derived state lost, and arrivals out of order (where the
    fast way must step aside)."""
    rng = random.Random(seed)
    policy, lead = _random_policy(rng)
    ref, fast = _Reference.new(policy, lead), Forecaster.new(policy, lead)
    whole_seconds, disorder = seed % 2 == 0, seed % 4 == 3
    took_fast = 0
    observations = _observations(rng, whole_seconds, disorder)
    for _ in range(1500):
        arrivals, now, in_pool, waits = next(observations)
        ref.observe(arrivals, now, in_pool, waits)
        fast.observe(arrivals, now, in_pool, waits)
        took_fast += fast._steps is not None
        assert fast.buffer(now) == ref.buffer(now)
        if rng.random() < 0.01:
            fast = _through_json(fast)
        if rng.random() < 0.005:
            fast.__dict__.pop("_steps", None)
            fast.__dict__.pop("_k_seen", None)
        _same_memory(ref, fast)
    assert ref.jobs_seen > 1000
    if not disorder:
        # the fast way was the one tested (a restart leaves the steps to the next settle to rebuild)
        assert took_fast > 1350


# -- what it learned, as a document ------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_a_forecaster_read_back_from_its_document_goes_on_as_the_original(seed):
    rng = random.Random(100 + seed)
    policy, lead = _random_policy(rng)
    original = Forecaster.new(policy, lead)
    observations = _observations(rng, whole_seconds=seed % 2 == 0, disorder=seed % 3 == 2)
    for i in range(10_000):  # 3000 observations, then up to one with arrivals still pending
        original.observe(*next(observations))
        if i >= 3000 and original.pending:
            break
    now = original.seen_until
    assert original.jobs_seen > 2000 and original.outcomes and original.pending and not original.warming_up
    doc = original.to_doc()
    assert doc["schema"] == 1 and "_steps" not in doc and "_k_seen" not in doc  # derived: rebuilt, not kept
    restored = _through_json(original)
    assert restored._steps is None and restored._k_seen is None
    assert restored.buffer(now) == original.buffer(now)
    assert restored.outcomes.maxlen == RECENT and restored.hist.dtype == original.hist.dtype
    assert restored.buffers.dtype == original.buffers.dtype
    _same_memory(original, restored)
    for _ in range(1000):  # both go on with the same inputs
        arrivals, now, in_pool, waits = next(observations)
        original.observe(arrivals, now, in_pool, waits)
        restored.observe(arrivals, now, in_pool, waits)
        assert restored.buffer(now) == original.buffer(now)
    _same_memory(original, restored)
    assert restored.to_doc() == original.to_doc()


def test_a_forecaster_still_warming_up_keeps_its_infinities_in_strict_json():
    fc = _forecaster()
    fc.observe((0.0, 0.0), 0.0, in_pool=2)
    fc.observe((), 5.0, in_pool=2)
    doc = json.loads(json.dumps(fc.to_doc(), allow_nan=False))
    assert doc["calibrating_from"] == "inf" and fc.warming_up
    fresh = _forecaster()
    assert json.loads(json.dumps(fresh.to_doc(), allow_nan=False))["planned_at"] == "-inf"
    for original in (fc, fresh):
        restored = Forecaster.from_doc(doc if original is fc else fresh.to_doc())
        assert restored.warming_up and restored.planned_at == original.planned_at
        assert restored.buffer(20.0) == original.buffer(20.0)
        assert restored.to_doc() == original.to_doc()


def _valid_doc() -> dict:
    fc = _forecaster()
    for i in range(30):
        t = 1_757_006_747.0 + 37 * i
        fc.observe((t, t), t, in_pool=2, waits=(3.0,))
    return json.loads(json.dumps(fc.to_doc(), allow_nan=False))


def _set(doc: dict, path: tuple, value) -> dict:  # type: ignore[no-untyped-def]
    """A copy of the document with the value at path replaced (or deleted)."""
    doc = at = dict(doc)
    for p in path[:-1]:
        at[p] = dict(at[p]) if isinstance(at[p], dict) else list(at[p])
        at = at[p]
    if value is _DELETE:
        del at[path[-1]]
    else:
        at[path[-1]] = value
    return doc


_DELETE = object()
_BROKEN = [
    (("schema",), 2, "schema 2"),
    (("schema",), True, "schema True"),
    (("schema",), _DELETE, "lacks schema"),
    (("pending",), _DELETE, "lacks pending"),
    (("steps",), [], "unknown 'steps'"),
    (("lead_s",), "60", "forecaster.lead_s"),
    (("lead_s",), -1.0, "below 0"),
    (("seen_until",), "inf", "forecaster.seen_until"),
    (("started",), 1.5, "not an integer"),
    (("fallback",), 0, "not true or false"),
    (("hist", "shape"), [CELLS, K_MAX], "not float64"),
    (("hist", "dtype"), "object", "not float64"),
    (("hist", "data"), [0.0] * 10, "a list of 10"),
    (("hist", "data", 7), "1", "not all numbers"),
    (("hist", "data", 7), -1.0, "within [0, 2**53]"),
    (("hist", "data", 7), 0.5, "not whole numbers"),
    (("exposure", "data", 7), 1e300, "within [0, 2**53]"),
    (("hist", "data", 7), 10**400, "forecaster.hist.data"),
    (("buffers", "data", 3), 1.5, "not all integers"),
    (("pending", 0, 2), CELLS, "out of range"),
    (("pending", 0, 2), -1, "out of range"),
    (("pending", 0), [1.0, 2.0, 3], "a list of 3"),
    (("samples", 0, 0), None, "forecaster.samples[0]"),
    (("outcomes",), [[0, 0.0]] * (RECENT + 1), "at most 400"),
    (("outcomes",), [[2, 0.0]], "out of range"),
    (("history",), {"0": 1.0}, "not a list"),
]


@pytest.mark.parametrize(("path", "value", "says"), _BROKEN, ids=[f"{'.'.join(map(str, p))}={v!r:.20}" for p, v, _ in _BROKEN])
def test_a_forecaster_document_of_another_schema_or_malformed_is_refused(path, value, says):
    doc = _valid_doc()
    Forecaster.from_doc(doc)  # the valid one reads
    with pytest.raises(MemoryDocError, match=re.escape(says)):
        Forecaster.from_doc(_set(doc, path, value))


def test_nan_in_a_document_is_refused_and_never_written():
    doc = json.loads(json.dumps(_valid_doc()).replace('"forecast": 0.0', '"forecast": NaN'))
    with pytest.raises(MemoryDocError, match="forecast"):
        Forecaster.from_doc(doc)
    fc = _forecaster()
    fc.forecast = float("nan")
    with pytest.raises(UnkeepableMemory, match="NaN"):
        fc.to_doc()
    for junk in (None, [], "{}", 1):
        with pytest.raises(MemoryDocError, match="not an object"):
            Forecaster.from_doc(junk)


def test_a_hostile_document_fails_cleanly_or_makes_a_working_forecaster():
    """Any leaf of a valid document replaced by junk: read back as a MemoryDocError, or as a
    forecaster that observes and sizes without raising."""
    rng = random.Random(5)
    doc = _valid_doc()
    leaves = []

    def walk(node, path):  # type: ignore[no-untyped-def]
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
        if items is None:
            leaves.append(path)
            return
        for k, v in items:
            if not (path and path[-1] == "data" and k > 3):  # an array's first entries stand for the rest
                walk(v, (*path, k))

    walk(doc, ())
    junk = [None, True, 0, -1, 1, 2**70, 1e308, -1e308, 0.5, "", "inf", "-inf", "x", [], {}, [1.0, 2.0], CELLS, K_MAX + 1]
    read = refused = 0
    for _ in range(400):
        broken = _set(doc, rng.choice(leaves), rng.choice(junk))
        try:
            fc = Forecaster.from_doc(broken)
        except MemoryDocError:
            refused += 1
            continue
        read += 1
        t = 1_757_006_747.0 + 40 * 37
        fc.observe((t,), t, in_pool=1, waits=(1.0,))
        fc.observe((), t + 3600, in_pool=0)
        fc.buffer(t + 3600)
    assert refused > 150 and read > 30, (refused, read)


# -- a whole Memory, of each live kind -----------------------------------------------------------


def _json_memory(memory: Memory, kind: str) -> Memory:
    return Memory.from_doc(json.loads(json.dumps(memory.to_doc(kind), allow_nan=False)), kind)


def _snap(queued: int, running: int, idle: int, memory, lead_s: float = 60.0, arrivals=()) -> Snapshot:  # type: ignore[no-untyped-def]
    return Snapshot(queued=queued, running=running, starting=0, idle=idle, arrivals=arrivals, lead_s=lead_s, memory=memory)


def _run_alongside(policy, memory: Memory, kind: str, start: float, turns) -> None:  # type: ignore[no-untyped-def]
    """Decide on the same snapshots with a memory and with its JSON copy: the same decisions."""
    a, b = memory, _json_memory(memory, kind)
    assert b.to_doc(kind) == a.to_doc(kind) and (kind == "predictive" or b == a)
    for i, (queued, running, idle) in enumerate(turns):
        now = start + 7.0 * i
        da = decide(_snap(queued, running, idle, a, arrivals=(now,) * queued), policy, now=now)
        db = decide(_snap(queued, running, idle, b, arrivals=(now,) * queued), policy, now=now)
        assert (da.desired, da.reason, da.to_start, da.to_drain) == (db.desired, db.reason, db.to_start, db.to_drain)
        a, b = da.memory, _json_memory(db.memory, kind)
        assert a.to_doc(kind) == b.to_doc(kind)


_TURNS = [(5, 0, 0), (0, 5, 0), (0, 2, 3), (0, 0, 5), (0, 0, 5), (9, 0, 0), (0, 0, 9)] * 3


def test_a_reactive_memory_read_back_decides_as_the_original():
    policy = ReactivePolicy(buffer=1, scale_up_per_min=3, scale_down_delay_s=20)
    d = decide(_snap(5, 0, 0, None), policy, now=1000.0)  # limits: a rate window, 3 started in it
    d = decide(_snap(0, 0, 5, d.memory), policy, now=1001.5)  # below current since 1001.5
    assert d.memory.limits.below_since == 1001.5 and d.memory.limits.started_in_window == 3
    doc = d.memory.to_doc("reactive")
    assert doc == {"schema": 1, "kind": "reactive", "own": None,
                   "limits": {"below_since": 1001.5, "window_start": 1000.0, "started_in_window": 3}}  # fmt: skip
    _run_alongside(policy, d.memory, "reactive", 1010.0, _TURNS)
    assert Memory.from_doc(Memory().to_doc("reactive"), "reactive") == Memory()


def test_a_scheduled_memory_read_back_decides_as_the_original():
    policy = ScheduledPolicy(idle=1, windows=[Window(cron="0 8 * * 1-5", duration_s=3600, idle=4),
                                              Window(cron="30 7 * * *", duration_s=600, timezone="Europe/Berlin", min=2)])  # fmt: skip
    start = 1763967600.0  # 2025-11-24 07:00 UTC, a Monday
    d = decide(_snap(0, 0, 0, None), policy, now=start)
    assert len(d.memory.own) == 2
    doc = json.loads(json.dumps(d.memory.to_doc("scheduled")))
    assert sorted(doc["own"][0]) == ["checked", "next_open", "open_until"]
    _run_alongside(policy, d.memory, "scheduled", start + 3590, _TURNS)  # across the 08:00 opening
    assert Memory.from_doc(Memory(own=(None, None)).to_doc("scheduled"), "scheduled").own == (None, None)


def test_a_predictive_memory_read_back_decides_as_the_original():
    policy = PredictivePolicy(target_p95_s=15)
    memory = None
    for i in range(200):
        now = 1_757_006_747.0 + 600.0 * i
        memory = decide(_snap(i % 4, 1, 0, memory, arrivals=(now,) * (i % 4)), policy, now=now).memory
    _run_alongside(policy, memory, "predictive", 1_757_006_747.0 + 600.0 * 200, _TURNS)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d.update(schema=2), "schema 2"),
        (lambda d: d.update(kind="scheduled"), "'scheduled' policy learned"),
        (lambda d: d.pop("limits"), "lacks limits"),
        (lambda d: d["limits"].update(started_in_window=-1), "out of range"),
        (lambda d: d["limits"].update(below_since="soon"), "below_since"),
        (lambda d: d.update(own=[]), "learns nothing"),
    ],
)
def test_a_memory_document_of_another_schema_kind_or_malformed_is_refused(change, says):
    doc = Memory().to_doc("reactive")
    change(doc)
    with pytest.raises(MemoryDocError, match=re.escape(says)):
        Memory.from_doc(doc, "reactive")


def test_scheduled_and_predictive_own_memories_are_checked_too():
    scheduled = {"schema": 1, "kind": "scheduled", "limits": Memory().to_doc("reactive")["limits"], "own": [{"open_until": 1.0}]}
    with pytest.raises(MemoryDocError, match=r"memory.own\[0\]: lacks checked, next_open"):
        Memory.from_doc(scheduled, "scheduled")
    predictive = {**scheduled, "kind": "predictive", "own": {"schema": 2}}
    with pytest.raises(MemoryDocError, match="forecaster"):
        Memory.from_doc(predictive, "predictive")
    with pytest.raises(UnkeepableMemory, match="no document"):
        Memory().to_doc("jenkins")  # a peer's memory is never kept: no peer runs live


def test_a_new_target_starts_learning_afresh_and_new_bounds_do_not():
    """What the forecaster learned is deficits against the target's window: a policy version
    with another target (or budget) starts afresh; one that only moves min/max goes on."""
    from farm.autoscale.policy import PredictivePolicy, Snapshot, decide

    t, memory = 1_757_006_747.0, None
    for i in range(50):
        d = decide(Snapshot(queued=1, running=0, starting=0, idle=0, arrivals=(t + i,), memory=memory), PredictivePolicy(), now=t + i)
        memory = d.memory
    assert memory.own.jobs_seen == 50
    bounds = decide(Snapshot(queued=0, running=0, starting=0, idle=0, memory=memory), PredictivePolicy(min=1, max=9), now=t + 60)
    assert bounds.memory.own.jobs_seen == 50
    target = decide(Snapshot(queued=0, running=0, starting=0, idle=0, memory=memory), PredictivePolicy(target_p95_s=60), now=t + 60)
    assert target.memory.own.jobs_seen == 0 and target.memory.own.target_s == 60


@pytest.mark.parametrize("seed", range(16))
def test_the_sliding_least_is_the_least_over_the_window(seed):
    """`_sure_steps` keeps the values of its window from one call to the next: through ties
    (the last step still changing, a window ending on it) and quiet gaps, it answers what
    the reference `_sure` computes afresh from every sample."""
    rng = random.Random(seed)
    policy, lead = _random_policy(rng)
    fc = Forecaster.new(policy, lead)
    fc._steps = [[], [], []]
    samples: list[tuple[float, int]] = []
    now = 1_757_006_747.0 if seed % 2 else 1_757_006_747.25
    t = now - fc.target_s
    checked = 0
    for _ in range(1500):
        now += rng.choice([0.0, 0.0, 1.0, 1.0, 2.0, 0.5, 7.0]) if rng.random() > 0.01 else rng.randint(100, 1000)
        n = rng.randint(0, 12) if rng.random() < 0.8 else rng.randint(0, 60)
        samples.append((now, n))
        fc._step(fc._steps, now, n)
        while t + fc.target_s < now and rng.random() < 0.7:
            t = min(now - fc.target_s, t + rng.choice([0.0, 0.5, 1.0, 3.0, 30.0]))
            times = np.array([s for s, _ in samples])
            pools = np.array([float(k) for _, k in samples])
            assert fc._sure_steps(t) == fc._sure(t, times, pools), (t, now)
            checked += 1
    assert checked > 500
