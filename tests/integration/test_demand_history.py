"""No cold week (issue 16): every pool's demand is kept by hour in Redis, a trace seeds it over
the API (admin only, audited), and a pool switched to the predictive policy, or seeded, learns
from it before it scales on its own. Real Redis and API; a fake clock and a stub fleet for the
autoscaler (as test_autoscaler_turns.py)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.autoscale.live import Autoscaler
from farm.models import JobSpec, JobState
from farm.ray_seam import StubFleet
from farm.settings import hash_token
from farm.sim import history as sim_history
from farm.sim.history import HOUR_S, from_trace
from farm.store.executors import ExecutorRegistry
from farm.store.history import DemandHistory
from farm.store.policies import PolicyStore
from tests.unit.test_history import bursty

ADMIN, TEAM = "history-admin", "history-team"


@pytest.fixture
def farm(store, make_settings):
    settings = make_settings(admin_token=ADMIN, executors={"count": 0}, tenants=[{"name": "team", "token_sha256": hash_token(TEAM)}],
                             autoscaler={"learn_wait_s": 0})  # the learning beside the turns (test_autoscaler_truth.py: within one)
    clock = {"now": time.time()}
    registry = ExecutorRegistry(store.client, store.keys)
    policies = PolicyStore(store.client, store.keys)
    autoscaler = Autoscaler(settings, store=store, registry=registry, policies=policies, fleet=StubFleet(),
                            clock=lambda: clock["now"])  # fmt: skip
    with TestClient(create_app(settings)) as api:
        yield api, autoscaler, policies, clock


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def turn(autoscaler, clock, advance=2.0):
    clock["now"] += advance
    return autoscaler.run_once()


def learned(autoscaler, clock, pool="default", timeout=60.0):
    """Turns until the pool's learning from its history is done and taken in."""
    p = autoscaler.pools[pool]
    deadline = time.monotonic() + timeout
    while p.learning is None and time.monotonic() < deadline:
        turn(autoscaler, clock)
    assert p.learning is not None, "no learning started"
    p.learning.result(timeout=timeout)
    turn(autoscaler, clock)
    assert p.learning is None
    return p.memory.own


def seed_body(trace):
    return {"hours": [{"hour": h, "arrivals": d["a"], "durations": d["d"]} for h, d in
                      ((h, hour.to_doc()) for h, hour in sorted(from_trace(trace).items()))]}  # fmt: skip


def test_the_autoscaler_keeps_every_pools_demand_by_hour_policy_or_not(farm, store):
    api, autoscaler, policies, clock = farm
    turn(autoscaler, clock)  # the first turn starts reading the demand stream where it is
    spec = JobSpec.model_validate({"steps": [{"name": "s", "run": "true"}]})
    for _ in range(3):
        store.submit(spec, "t")
    claimed = store.claim("default", "e1", lease_s=30, grace_s=5)
    assert store.finish(claimed.job_id, claimed.attempt, JobState.SUCCEEDED, exit_code=0, error=None, steps=[]) == "ok"
    turn(autoscaler, clock)
    hours = DemandHistory(store.client, store.keys).hours("default")
    assert sum(h.jobs for h in hours.values()) == 3  # a pool with no policy: its demand is kept all the same
    assert sum(sum(h.durations.values()) for h in hours.values()) == 1  # the attempt that ended
    summary = api.get("/v1/pools/default/history", headers=auth(TEAM)).json()
    assert (summary["jobs"], summary["hours"], summary["keep_weeks"], summary["seeded"]) == (3, 1, 8, 0)
    store.submit(spec, "t")  # a later turn adds to the same hour, not over it
    turn(autoscaler, clock)
    assert sum(h.jobs for h in DemandHistory(store.client, store.keys).hours("default").values()) == 4


def test_a_seeded_pool_switched_to_predictive_starts_from_the_seed_not_a_cold_week(farm, store):
    api, autoscaler, policies, clock = farm
    trace = bursty(9, start=1_600_000_000.0)  # nine days, long ago: the seed moves to end before now
    assert api.post("/v1/pools/default/policy/seed", json=seed_body(trace), headers=auth(TEAM)).status_code == 403
    r = api.post("/v1/pools/default/policy/seed", json=seed_body(trace), headers=auth(ADMIN))
    assert r.status_code == 200, r.text
    seed = r.json()
    assert (seed["jobs"], seed["seeded"], seed["hours_left_out"]) == (len(trace), 1, 0) and seed["weeks_moved"] > 0
    last = int(seed["last"][:4])  # moved into this week
    assert last == time.gmtime().tm_year or last == time.gmtime().tm_year - 1
    audit = api.get("/v1/pools/default/policy/history", headers=auth(TEAM)).json()["changes"]
    assert audit[0]["by"] == "admin" and audit[0]["seed"]["jobs"] == len(trace) and audit[0]["before"] is None

    r = api.put("/v1/pools/default/policy", json={"kind": "predictive", "target_p95_s": 15, "max": 50}, headers=auth(ADMIN))
    assert r.status_code == 200
    own = learned(autoscaler, clock)
    assert own.jobs_seen == len(trace) and not own.warming_up  # its plan by the hour, from its first turn
    d = turn(autoscaler, clock)["default"]
    assert "planned for hour-of-week" in d["reason"] or "fallback" in d["reason"], d["reason"]

    # a second seed (more weeks) is learned again; a policy change that keeps the target is not
    more = bursty(14, seed=2, start=1_600_000_000.0)
    assert api.post("/v1/pools/default/policy/seed", json=seed_body(more), headers=auth(ADMIN)).json()["seeded"] == 2
    own = learned(autoscaler, clock)
    assert own.jobs_seen >= len(more)
    api.put("/v1/pools/default/policy", json={"kind": "predictive", "target_p95_s": 15, "max": 60}, headers=auth(ADMIN))
    turn(autoscaler, clock)
    assert autoscaler.pools["default"].learning is None and autoscaler.pools["default"].memory.own is own
    # a new wait target: what was learned meant the old one, so it is learned again from the history
    api.put("/v1/pools/default/policy", json={"kind": "predictive", "target_p95_s": 30, "max": 60}, headers=auth(ADMIN))
    retargeted = learned(autoscaler, clock)
    assert retargeted is not own and retargeted.target_s == 30 and not retargeted.warming_up


def test_bad_seeds_are_refused_with_the_field_named(farm):
    api = farm[0]
    hour = {"hour": 470_000, "arrivals": [[1, 2]], "durations": [[40, 2]]}
    cases = [
        ({"hours": [{**hour, "arrivals": [[1, 2], [1, 3]]}]}, ["body", "hours", 0, "arrivals"]),
        ({"hours": [{**hour, "arrivals": [[3600, 1]]}]}, ["body", "hours", 0, "arrivals", 0, 0]),
        ({"hours": [hour, hour]}, ["body", "hours", 1, "hour"]),
        ({"hours": []}, ["body", "hours"]),
        ({"hours": [{**hour, "colour": "red"}]}, ["body", "hours", 0, "colour"]),
        # an hour is a JSON integer: false was taken as hour 0, "470000" as that hour
        ({"hours": [hour], "last_hour": False}, ["body", "last_hour"]),
        ({"hours": [hour], "last_hour": True}, ["body", "last_hour"]),
        ({"hours": [hour], "last_hour": "470000"}, ["body", "last_hour"]),
        ({"hours": [{**hour, "hour": False}]}, ["body", "hours", 0, "hour"]),
        ({"hours": [{**hour, "arrivals": [[True, 2]]}]}, ["body", "hours", 0, "arrivals", 0, 0]),
    ]
    for body, loc in cases:
        r = api.post("/v1/pools/default/policy/seed", json=body, headers=auth(ADMIN))
        assert r.status_code == 422, (body, r.text)
        assert any(e["loc"][: len(loc)] == loc for e in r.json()["detail"]), r.text
    assert api.post("/v1/pools/nope/policy/seed", json={"hours": [hour]}, headers=auth(ADMIN)).status_code == 404
    assert hour["hour"] * HOUR_S < time.time()


def test_the_history_summary_parses_only_the_hours_that_changed(farm, store, monkeypatch, caplog):
    """GET /v1/pools/{name}/history reads every kept hour but parses only those whose text
    changed since its last call (a bad one too: left out, and not warned about again); the
    answers are what parsing every hour gives. Bounded: with room for fewer hours than kept,
    what fell out is parsed again."""
    api = farm[0]
    parsed: list[str] = []
    real = sim_history.Hour.from_doc
    monkeypatch.setattr(sim_history.Hour, "from_doc", staticmethod(lambda doc, what="hour": parsed.append(what) or real(doc, what)))
    kept = DemandHistory(store.client, store.keys)
    now = int(time.time()) // HOUR_S
    hours = {now - 1 - i: sim_history.Hour({s: 1 for s in range(i + 1)}, {40: 1}) for i in range(24)}
    kept.put("default", hours)
    store.client.hset(store.keys.demand_history("default"), "junk", "{")

    def summary():
        r = api.get("/v1/pools/default/history", headers=auth(TEAM))
        assert r.status_code == 200, r.text
        return r.json()

    first = summary()
    assert (first["jobs"], first["hours"], len(parsed)) == (sum(range(1, 25)), 24, 24)  # "junk" is no hour: left out
    assert caplog.text.count("demand history hour 'junk' left out") == 1
    parsed.clear()
    assert summary() == first and parsed == []
    assert caplog.text.count("demand history hour 'junk' left out") == 1
    kept.put("default", {now - 1: hours[now - 1].merge(sim_history.Hour({7: 2}, {}))})  # one hour changed
    again = summary()
    assert parsed == [f"history {now - 1}"] and again["jobs"] == first["jobs"] + 2
    assert again == {**first, "jobs": first["jobs"] + 2}
    assert sum(h.jobs for h in kept.hours("default").values()) == again["jobs"]  # as parsing every hour says

    store.client.hdel(store.keys.demand_history("default"), "junk")
    small = DemandHistory(store.client, store.keys, cache_hours=10)
    assert small.jobs_by_hour("default") == {h: x.jobs for h, x in kept.hours("default").items()}
    parsed.clear()
    assert small.jobs_by_hour("default") == {h: x.jobs for h, x in kept.hours("default").items()}
    assert len(parsed) == 24 + (24 - 10)  # kept.hours parses all 24; the small cache held 10 of them
