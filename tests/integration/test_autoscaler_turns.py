"""The autoscaler's turns on a real Redis with a fake clock and a stub fleet (no Ray): what it
asks the fleet for, when it drains, how it measures the lead time, and how it gives up on
an executor that never comes. Fast and exact where the Ray tests (test_autoscaler.py) can
only wait."""

from __future__ import annotations

import pytest

from farm.autoscale.live import Autoscaler
from farm.models import JobSpec, JobState
from farm.ray_seam import StubFleet
from farm.store.executors import ExecutorRegistry, ExecutorState
from farm.store.policies import PolicyStore

T0 = 1_800_000_000.0


@pytest.fixture
def turns(store, make_settings):
    clock = {"now": T0}
    fleet = StubFleet()
    settings = make_settings(executors={"count": 0}, autoscaler={"start_timeout_s": 30, "interval_s": 2})
    registry = ExecutorRegistry(store.client, store.keys)
    policies = PolicyStore(store.client, store.keys)
    a = Autoscaler(settings, store=store, registry=registry, policies=policies, fleet=fleet, clock=lambda: clock["now"])

    def turn(advance: float = 2.0) -> dict:
        clock["now"] += advance
        return a.run_once()

    return a, fleet, registry, policies, turn, clock


def queue(store, n: int) -> None:
    spec = JobSpec.model_validate({"steps": [{"name": "s", "run": "true"}]})
    for _ in range(n):
        store.submit(spec, "t")


def test_it_starts_for_the_queue_measures_the_lead_and_drains_after_the_hold(turns, store):
    a, fleet, registry, policies, turn, clock = turns
    policies.put("default", {"kind": "reactive", "buffer": 0, "max": 10, "scale_down_delay_s": 60}, by="test")
    assert turn()["default"]["desired"] == 0 and fleet.started == []
    queue(store, 3)
    d = turn()["default"]
    assert (d["desired"], len(d["started"])) == (3, 3) and fleet.started == d["started"]
    assert fleet.requested[-1] == {"default": 3}  # asked of the cluster ahead of the executors
    assert turn()["default"]["started"] == []  # starting ones count: nothing more
    clock["now"] += 8.0  # they come up 10 s after the ask
    for executor_id in fleet.started:
        registry.report(executor_id, "default", ExecutorState.IDLE)
    turn(0.0)
    assert a.pools["default"].lead_s == pytest.approx(10.0, abs=0.1)
    # The jobs run and end: the queue is empty and the three idle ones wait out the hold.
    for claim in [store.claim("default", e, lease_s=60, grace_s=5) for e in fleet.started]:
        store.finish(claim.job_id, claim.attempt, JobState.SUCCEEDED, exit_code=0, error=None, steps=[])
    for executor_id in fleet.started:
        registry.report(executor_id, "default", ExecutorState.IDLE)
    held = turn()["default"]
    assert (held["desired"], held["drained"]) == (3, [])  # wants 0, holds the 3 for scale_down_delay_s
    assert policies.decisions("default")[0]["desired"] == 3
    turn(50.0)
    assert fleet.drained == []  # 52 s below: still held
    turn(10.0)
    assert sorted(fleet.drained) == sorted(fleet.started)  # past the 60 s hold: all three drained


def test_an_executor_that_never_comes_is_given_up_and_starts_back_off(turns, store):
    a, fleet, registry, policies, turn, clock = turns
    policies.put("default", {"kind": "reactive", "buffer": 1, "max": 5}, by="test")
    first = turn()["default"]["started"]
    assert len(first) == 1
    given_up = turn(31.0)["default"]  # past start_timeout_s (30 s), never reported
    assert fleet.killed == first
    assert given_up["started"] == [] and "starts held" in given_up["reason"] and "could not start" in given_up["reason"]
    assert turn(1.0)["default"]["started"] == []  # within the backoff (interval 2 s x 2^1)
    again = turn(4.0)["default"]["started"]
    assert len(again) == 1 and again != first  # the backoff passed: it tries again
