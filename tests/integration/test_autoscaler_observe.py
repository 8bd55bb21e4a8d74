"""The autoscaler's observe step reads and nothing more (issue 29): on a real Redis, with a
stub fleet and a fake clock, observing a pool twice writes nothing to Redis, asks nothing of
the fleet and leaves the pool's state as it was, however much there is to act on (arrivals
for the demand history, an executor that came up, one that never did). What it saw is
acted on by `take_in`; and loading a policy never seeds one."""

from __future__ import annotations

import copy
from dataclasses import fields

import pytest

from farm.autoscale.live import Autoscaler
from farm.models import JobSpec
from farm.ray_seam import StubFleet
from farm.store.client import connect
from farm.store.executors import ExecutorRegistry, ExecutorState
from farm.store.history import DemandHistory
from farm.store.jobs import JobStore
from farm.store.keys import Keys
from farm.store.policies import PolicyStore

T0 = 1_800_000_000.0


PREFIX = "observe:"  # this test's keys: a warden of the session's Ray cluster beats the default prefix's node key


@pytest.fixture
def store(redis_url) -> JobStore:
    return JobStore(connect(redis_url), Keys(prefix=PREFIX))


def redis_contents(client) -> dict:
    """Every key of this test's farm with its serialized value: any write shows as a difference."""
    return {key: client.dump(key) for key in client.scan_iter(match=PREFIX + "*", count=1000)}


def pool_state(p) -> dict:
    return {f.name: copy.deepcopy(getattr(p, f.name)) for f in fields(p) if f.name not in ("learning", "policy", "memory")}


@pytest.fixture
def scaler(store, make_settings):
    clock = {"now": T0}
    fleet = StubFleet()
    settings = make_settings(executors={"count": 0}, autoscaler={"start_timeout_s": 30, "interval_s": 2})
    registry = ExecutorRegistry(store.client, store.keys)
    policies = PolicyStore(store.client, store.keys)
    a = Autoscaler(settings, store=store, registry=registry, policies=policies, fleet=fleet, clock=lambda: clock["now"])
    yield a, fleet, registry, policies, clock
    a.close()


def test_observe_twice_writes_nothing_and_take_in_acts_on_what_it_saw(scaler, store):
    a, fleet, registry, policies, clock = scaler
    policies.put("default", {"kind": "reactive", "buffer": 0, "max": 10}, by="test")
    a.run_once()  # the policy loaded, the demand stream's cursor taken
    spec = JobSpec.model_validate({"steps": [{"name": "s", "run": "true"}]})
    for _ in range(2):
        store.submit(spec, "t")
    clock["now"] += 2.0
    came, never = a.run_once()["default"]["started"]
    clock["now"] += 31.0  # past start_timeout_s: the one that never reported is given up on
    registry.report(came, "default", ExecutorState.IDLE)
    for _ in range(3):
        store.submit(spec, "t")  # arrivals the demand history has not taken in yet
    p = a.pools["default"]
    p.trimmed_at = 0.0  # the history is due a trim as well
    before, state = redis_contents(store.client), pool_state(p)
    asked = (list(fleet.started), list(fleet.killed), list(fleet.drained), list(fleet.requested))

    now = clock["now"]
    first, second = a.observe(p, now), a.observe(p, now)

    assert redis_contents(store.client) == before
    assert pool_state(p) == state
    assert (fleet.started, fleet.killed, fleet.drained, fleet.requested) == asked
    assert first == second
    assert len(first.snapshot.arrivals) == 3 and first.snapshot.idle == 1 and first.snapshot.starting == 0
    assert [(x.executor_id, x.failure is None) for x in first.launches] == [(came, True), (never, False)]
    assert first.lead_s == pytest.approx(31.0)

    a.take_in(p, first, now)
    assert fleet.killed == [never]  # the act step ends the actor that never came
    assert p.launched == {} and p.lead_s == pytest.approx(31.0) and set(p.idle_since) == {came}
    assert p.cursor == first.demand.cursor and p.hold_starts_until > now
    assert DemandHistory(store.client, store.keys).hours("default")  # the arrivals went into the history
    assert a.observe(p, now).snapshot.arrivals == ()  # read past


def test_loading_a_policy_writes_no_seed_the_turn_seeds_it(store, make_settings):
    settings = make_settings(executors={"count": 0}, policies={"default": {"kind": "reactive", "min": 1}})
    policies = PolicyStore(store.client, store.keys)
    a = Autoscaler(settings, store=store, registry=ExecutorRegistry(store.client, store.keys), policies=policies,
                   fleet=StubFleet(), clock=lambda: T0)  # fmt: skip
    try:
        p = a.pools["default"]
        before = redis_contents(store.client)
        assert a._load_policy(p, policies.get("default")) is False  # nothing stored: none in force, nothing written
        assert redis_contents(store.client) == before
        stored = a._stored_policy(p)  # the explicit write: farm.yaml's policy becomes version 1
        assert (stored.version, stored.by) == (1, "farm.yaml")
        assert a._load_policy(p, stored) is True and p.policy.min == 1
        assert a._stored_policy(p).version == 1  # once: a stored policy is never seeded over
    finally:
        a.close()
