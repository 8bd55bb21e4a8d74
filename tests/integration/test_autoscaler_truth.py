"""A live side that tells the truth (issue 28, item 4), on a real Redis with a fake clock and
a stub fleet: a job its concurrency group holds is not demand; a seed takes effect on the
next decision and is one entry in the policy's history, however many parts it is sent in;
the lead time measured before a restart is the one decided with after it; a pool learning
its history holds up no other pool's decision."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from farm.api import create_app
from farm.autoscale.live import Autoscaler
from farm.cli import app
from farm.client import FarmClient
from farm.models import JobSpec
from farm.ray_seam import StubFleet
from farm.sim.history import HOUR_S, WEEK_HOURS, from_trace
from farm.store.executors import ExecutorRegistry, ExecutorState
from farm.store.policies import PolicyStore
from tests.conftest import wait_for
from tests.unit.test_history import bursty

T0 = 1_800_000_000.0
ADMIN = "truth-admin"


@pytest.fixture
def farm(store, make_settings):
    """(a new autoscaler, as a restarted process makes one; the API; the clock)"""
    settings = make_settings(admin_token=ADMIN, executors={"count": 0}, autoscaler={"start_timeout_s": 30, "learn_wait_s": 120})
    clock = {"now": T0}

    def autoscaler() -> Autoscaler:
        return Autoscaler(settings, store=store, registry=ExecutorRegistry(store.client, store.keys),
                          policies=PolicyStore(store.client, store.keys), fleet=StubFleet(), clock=lambda: clock["now"])  # fmt: skip

    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN}"}) as api:
        yield autoscaler, api, clock


def turn(a: Autoscaler, clock: dict, advance: float = 2.0) -> dict:
    clock["now"] += advance
    return a.run_once()["default"]


def grouped() -> JobSpec:
    return JobSpec.model_validate({"steps": [{"name": "s", "run": "true"}], "concurrency": {"group": "deploy", "limit": 1}})


def test_a_job_its_concurrency_group_holds_starts_no_executor(farm, store):
    autoscaler, api, clock = farm
    a = autoscaler()
    PolicyStore(store.client, store.keys).put("default", {"kind": "reactive", "max": 10, "scale_down_delay_s": 0}, by="test")
    for _ in range(3):
        store.enqueue(grouped(), "t")
    assert store.claim("default", "e-holder", lease_s=60, grace_s=5) is not None  # the group's one slot is taken
    d = turn(a, clock)
    # The other two are still in the claimable queue (no claim met them yet): held all the same.
    assert (d["inputs"]["queued"], d["inputs"]["held"], d["desired"], d["started"]) == (0, 2, 1, [])
    assert "2 queued not counted: their concurrency group is at its limit" in d["reason"]
    assert store.claim("default", "e-other", lease_s=60, grace_s=5) is None  # a claim parks them
    assert turn(a, clock)["started"] == []  # parked: still not demand
    store.enqueue(JobSpec.model_validate({"steps": [{"name": "s", "run": "true"}]}), "t")  # a job that can start
    d = turn(a, clock)
    assert (d["inputs"]["queued"], d["inputs"]["held"], len(d["started"])) == (1, 2, 1)


def test_a_reason_names_the_max_that_held_desired_down(farm, store):
    autoscaler, api, clock = farm
    a = autoscaler()
    PolicyStore(store.client, store.keys).put("default", {"kind": "reactive", "max": 2}, by="test")
    for _ in range(5):
        store.enqueue(JobSpec.model_validate({"steps": [{"name": "s", "run": "true"}]}), "t")
    d = turn(a, clock)
    assert d["desired"] == 2 and "held to max 2: 5 → 2" in d["reason"], d["reason"]


def test_a_seeded_pools_next_decision_uses_the_seed(farm, store):
    autoscaler, api, clock = farm
    a = autoscaler()
    assert api.put("/v1/pools/default/policy", json={"kind": "predictive", "target_p95_s": 15}).status_code == 200
    cold = turn(a, clock)
    assert "until a day of history" in cold["reason"], cold["reason"]
    trace = bursty(3, start=1_600_000_000.0)
    hours = [
        {"hour": h, "arrivals": d["a"], "durations": d["d"]}
        for h, d in ((h, x.to_doc()) for h, x in sorted(from_trace(trace).items()))
    ]
    r = api.post("/v1/pools/default/policy/seed", json={"hours": hours})
    assert r.status_code == 200 and r.json()["seeded"] == 1, r.text
    d = turn(a, clock)  # the very next decision: learned from the seed, not still warming up
    assert a.pools["default"].memory.own.jobs_seen == len(trace)
    assert "until a day of history" not in d["reason"] and "learning" not in d["reason"], d["reason"]


def test_a_seed_sent_in_parts_is_one_audit_entry(farm, store, tmp_path, monkeypatch):
    autoscaler, api, clock = farm

    def served() -> FarmClient:
        c = FarmClient.__new__(FarmClient)
        c.url, c.token, c.source, c.http = "http://testserver", ADMIN, "the test", api
        return c

    monkeypatch.setattr("farm.cli.pools.FarmClient", served)
    monkeypatch.setattr("farm.cli.pools.SEED_PART_BYTES", 1)  # an hour a part
    last = 1_700_000_000 // HOUR_S * HOUR_S
    old = last - 10 * WEEK_HOURS * HOUR_S  # older than the 8 weeks kept: its part writes nothing
    rows = [(old + 60, 30), (last - HOUR_S + 5, 40), (last - HOUR_S + 9, 40), (last + 7, 50)]
    (tmp_path / "t.csv").write_text("submitted_ts,duration_s,pool,tenant\n" + "".join(f"{t},{d},default,t\n" for t, d in rows))
    r = CliRunner().invoke(app, ["policy", "seed", "default", "--trace", str(tmp_path / "t.csv")], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "part 3/3" in r.stderr and "seeded 3 of the trace's 4 jobs over 2 hours" in r.stdout, r.output
    seeds = [c for c in api.get("/v1/pools/default/policy/history").json()["changes"] if c.get("seed")]
    assert len(seeds) == 1, seeds  # not one per part (a "seed: 0 jobs, 0 hours" for the part left out)
    assert {k: seeds[0]["seed"][k] for k in ("jobs", "hours", "hours_left_out")} == {"jobs": 3, "hours": 2, "hours_left_out": 1}
    assert api.get("/v1/pools/default/history").json()["seeded"] == 1
    r = CliRunner().invoke(app, ["pools", "history", "default"], env={"COLUMNS": "200"})
    assert "seeded 1×" in r.stdout, r.output
    part = {"hours": [{"hour": last // HOUR_S, "arrivals": [[1, 1]], "durations": [[10, 1]]}], "more": True}
    assert api.post("/v1/pools/default/policy/seed", json=part).status_code == 422  # parts name their seed's last hour


def test_the_lead_measured_before_a_restart_is_decided_with_after_it(farm, store):
    autoscaler, api, clock = farm
    first = autoscaler()
    PolicyStore(store.client, store.keys).put("default", {"kind": "reactive", "max": 10}, by="test")
    store.enqueue(JobSpec.model_validate({"steps": [{"name": "s", "run": "true"}]}), "t")
    (started,) = turn(first, clock)["started"]
    clock["now"] += 10.0  # it comes up 10 s after the ask (the assumed lead is 60 s)
    first.registry.report(started, "default", ExecutorState.IDLE)
    assert turn(first, clock, 0.0)["inputs"]["lead_s"] == pytest.approx(10.0, abs=0.1)
    second = autoscaler()  # a restart: nothing in memory (keep_learned_s is 300 s: kept as it was measured)
    assert turn(second, clock)["inputs"]["lead_s"] == pytest.approx(10.0, abs=0.1)


def test_a_pool_learning_its_history_does_not_hold_up_the_other_pools(store, make_settings):
    """The turn that starts a pool's replay of its history waits for it (so the pool's next
    decision uses it), but only that pool's decision waits: the other pools decide and
    start their executors first."""
    settings = make_settings(admin_token=ADMIN, executors={"count": 0}, pools=["default", "gpu"],
                             autoscaler={"learn_wait_s": 120})  # fmt: skip
    release, replaying = threading.Event(), threading.Event()

    class SlowLearner(Autoscaler):
        def _learn_history(self, pool: str, policy: Any, lead_s: float) -> Any:
            replaying.set()
            assert release.wait(60), "the test never let the replay finish"
            return super()._learn_history(pool, policy, lead_s)

    fleet = StubFleet()
    a = SlowLearner(settings, store=store, registry=ExecutorRegistry(store.client, store.keys),
                    policies=PolicyStore(store.client, store.keys), fleet=fleet, clock=lambda: T0)  # fmt: skip
    policies = PolicyStore(store.client, store.keys)
    policies.put("gpu", {"kind": "reactive", "buffer": 2}, by="test")
    policies.put("default", {"kind": "predictive", "target_p95_s": 15}, by="test")  # a switch: it learns its history first
    decided: dict = {}
    turn = threading.Thread(target=lambda: decided.update(a.run_once()), daemon=True)
    turn.start()
    try:
        assert replaying.wait(30), "the default pool's replay never started"
        wait_for(lambda: fleet.started == ["gpu-0", "gpu-1"], 10, what="the gpu pool to scale while default learns")
        assert turn.is_alive() and policies.decisions("default") == []  # default's decision still waits for its replay
        assert fleet.requested == [{"gpu": 2, "default": 0}]  # the cluster heard at once (default at what it has)
    finally:
        release.set()
        turn.join(30)
    assert not turn.is_alive() and set(decided) == {"default", "gpu"}
    assert "learning" not in decided["default"]["reason"], decided["default"]["reason"]  # its replay had ended when it decided
    assert fleet.requested[1:] == [{"gpu": 2, "default": decided["default"]["desired"]}]
