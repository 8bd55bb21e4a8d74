"""The live autoscaler on real Redis and Ray: observe -> decide -> act, stepped with run_once."""

import json

import pytest
import ray
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.autoscale.live import build_autoscaler, executor_name
from farm.models import JobSpec, JobState
from farm.settings import RAY_NAMESPACE
from farm.store.executors import ExecutorState
from farm.store.policies import PolicyStore
from tests.conftest import end_actors, wait_for
from tests.integration.test_executor_local import wait_done

pytestmark = pytest.mark.ray


@pytest.fixture
def autoscaler(ray_session, make_settings):
    made = []

    def make(**overrides):
        a = build_autoscaler(make_settings(**overrides))
        made.append(a)
        return a

    yield make
    left = []
    for a in made:  # whatever a failed test left behind
        for pool in a.settings.pools:
            for e in a.registry.list(pool):
                try:
                    left.append(ray.get_actor(executor_name(e.id), namespace=RAY_NAMESPACE))
                except ValueError:
                    pass
    end_actors(left)


def states(registry, pool="default"):
    return sorted(e.state.value for e in registry.list(pool))


def step_until(a, predicate, timeout, what):
    def turn():
        a.run_once()
        return predicate()

    return wait_for(turn, timeout, interval=0.2, what=what)


def test_scales_up_for_a_burst_and_drains_idle_executors_after_it(store, registry, autoscaler, tmp_path):
    PolicyStore(store.client).put("default", {"kind": "reactive", "buffer": 0, "scale_down_delay_s": 0}, by="test")
    a = autoscaler()
    assert a.run_once()["default"]["desired"] == 0
    flag = tmp_path / "go"
    jobs = [store.enqueue(JobSpec(steps=[{"name": "w", "run": f"while [ ! -e {flag} ]; do sleep 0.05; done"}]), "t")
            for _ in range(3)]  # fmt: skip
    first = a.run_once()["default"]
    assert first["desired"] == 3 and len(first["started"]) == 3 and first["inputs"]["arrivals"] == 3
    step_until(a, lambda: all(store.get(j.id).state is JobState.RUNNING for j in jobs), 60, "the burst to run")
    assert a.run_once()["default"]["started"] == []  # all three are busy: nothing more to start
    flag.touch()
    step_until(a, lambda: not registry.list("default"), 60, "the idle executors to drain and stop")
    for j in jobs:
        done = wait_done(store, j.id)
        assert done.state is JobState.SUCCEEDED and done.attempt == 1  # none killed, none retried
    decisions = a.policies.decisions("default")
    assert sum(len(d["drained"]) for d in decisions) == 3
    assert any(d["inputs"]["lead_s"] != a.settings.autoscaler.lead_s for d in decisions)  # the lead was measured
    with TestClient(create_app(a.settings)) as api:
        text = api.get("/metrics").text
    assert 'farm_pool_executors_target{bound="desired",pool="default"} 0.0' in text
    assert 'farm_pool_executors_target{bound="max",pool="default"} 50.0' in text  # a live policy's default cap
    assert 'farm_autoscaler_decisions_total{action="scale_up",policy="reactive",pool="default"} 1.0' in text
    assert 'farm_autoscaler_decisions_total{action="scale_down",policy="reactive",pool="default"}' in text


def test_a_new_policy_version_takes_effect_on_the_next_turn(store, registry, autoscaler):
    policies = PolicyStore(store.client)
    policies.put("default", {"kind": "reactive", "buffer": 2, "scale_down_delay_s": 0}, by="admin")
    a = autoscaler()
    step_until(a, lambda: states(registry) == ["idle", "idle"], 60, "a buffer of two idle executors")
    policies.put("default", {"kind": "reactive", "buffer": 0, "scale_down_delay_s": 0}, by="admin")
    step_until(a, lambda: not registry.list("default"), 60, "the buffer to drain")
    newest = a.policies.decisions("default")[0]
    assert newest["version"] == 2 and newest["desired"] == 0


def test_a_pool_without_a_policy_is_left_alone_and_farm_yaml_seeds_one(store, registry, autoscaler):
    a = autoscaler(pools=["default", "gpu"], policies={"gpu": {"kind": "reactive", "buffer": 1}})
    out = step_until(a, lambda: states(registry, "gpu") == ["idle"], 60, "the gpu pool's buffer")
    assert "default" not in a.run_once() and states(registry) == []
    stored = PolicyStore(store.client).get("gpu")
    assert stored.version == 1 and stored.by == "farm.yaml" and out
    assert all(e.state is ExecutorState.IDLE for e in registry.list("gpu"))


def test_a_restarted_autoscaler_resumes_what_the_policy_learned(store, registry, autoscaler):
    PolicyStore(store.client).put("default", {"kind": "predictive", "target_p95_s": 30, "max": 0}, by="admin")
    first = autoscaler(autoscaler={"lead_s": 60, "keep_learned_s": 0})
    first.run_once()  # starts reading the demand stream
    for _ in range(5):
        store.enqueue(JobSpec(steps=[{"name": "s", "run": "true"}]), "t")
    first.run_once()
    learned = first.pools["default"].memory.own
    assert learned is not None and learned.jobs_seen == 5  # five arrivals seen
    # What it kept is a JSON document that names its schema: text, not a pickle.
    key = first.store.keys.learned("default")
    kept = store.client.get(key)  # the store's client decodes to str: a pickle would not
    doc = json.loads(kept)
    assert kept.startswith("{") and doc["schema"] == 1 and doc["kind"] == "predictive" and doc["own"]["schema"] == 1
    assert len(doc["own"]["pending"]) == 5  # the five arrivals, their deficits not yet known
    second = autoscaler(autoscaler={"lead_s": 60})  # a new process: nothing in memory
    second.run_once()
    assert second.pools["default"].memory.own.jobs_seen == 5
    # A document this farm cannot take starts learning afresh, not a failed turn: another
    # schema version, one missing a field, a pickle an older farm kept.
    unreadable = [{**doc, "schema": 2}, {**doc, "own": {k: v for k, v in doc["own"].items() if k != "pending"}},
                  b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00"]  # fmt: skip
    for value in unreadable:
        store.client.set(key, value if isinstance(value, bytes) else json.dumps(value))
        older = autoscaler(autoscaler={"lead_s": 60})
        assert older.run_once()["default"]["policy"] == "predictive"
        assert older.pools["default"].memory.own.jobs_seen == 0
        assert json.loads(store.client.get(key))["schema"] == 1  # and what it learns since is kept anew
    PolicyStore(store.client).put("default", {"kind": "reactive", "max": 0}, by="admin")
    third = autoscaler()
    third.run_once()  # another kind learned nothing it could use
    assert third.pools["default"].memory is None or third.pools["default"].memory.own is None


def test_executors_that_cannot_start_are_reported_and_not_retried_every_turn(store, registry, autoscaler):
    from farm.store.summary import summarize

    PolicyStore(store.client).put("default", {"kind": "reactive", "buffer": 1, "scale_down_delay_s": 0}, by="test")
    # A dind runtime whose daemon never answers: every executor fails to start.
    # (interval_s only sets the backoff here: 2 x 30 s after one failure; the test turns by hand.)
    a = autoscaler(executors={"runtime": "dind"}, dind={"docker_host": "unix:///nonexistent/docker.sock", "start_timeout_s": 0.2},
                   autoscaler={"interval_s": 30})  # fmt: skip
    first = a.run_once()["default"]
    (failed,) = first["started"]
    def held_turn():
        d = a.run_once()["default"]
        return d if "starts held" in d["reason"] else None

    held = wait_for(held_turn, 60, interval=0.2, what="starts to be held")
    assert held["started"] == [] and held["desired"] == 1
    failure = summarize(store, registry, ["default"])[0].last_start_failure
    assert failure["executor"] == failed and "did not answer" in failure["reason"]  # why, for /v1/queue

    def gone():
        try:
            ray.get_actor(executor_name(failed), namespace=RAY_NAMESPACE)
            return False
        except ValueError:
            return True

    wait_for(gone, 30, what="the failed executor's actor to end")
    starts = sum(len(a.run_once()["default"]["started"]) for _ in range(5))
    assert starts == 0  # held: not a new actor every turn
    with TestClient(create_app(a.settings)) as api:
        assert 'farm_executor_start_failures_total{pool="default"} 1.0' in api.get("/metrics").text


def test_a_stopped_autoscaler_leaves_its_executors_to_the_next_one(store, registry, autoscaler):
    """The documented choice for `farm autoscaler` (the cluster's): stopping it leaves the
    ready executors serving (an upgrade of the autoscaler must not take running jobs down),
    and the next autoscaler adopts them instead of starting more. (`farm up` drains them:
    tests/e2e/test_multinode.py.)"""
    PolicyStore(store.client).put("default", {"kind": "reactive", "min": 2, "scale_down_delay_s": 600}, by="test")
    first = autoscaler()
    step_until(first, lambda: states(registry) == ["idle", "idle"], 60, "two idle executors")
    before = sorted(e.id for e in registry.list("default"))
    del first  # stopped: nothing drains them
    job = store.enqueue(JobSpec(steps=[{"name": "s", "run": "true"}]), "t")
    assert wait_done(store, job.id).state is JobState.SUCCEEDED  # they still serve
    second = autoscaler()
    for _ in range(5):
        decision = second.run_once()["default"]
        assert decision["started"] == [] and decision["drained"] == []
    assert sorted(e.id for e in registry.list("default")) == before


@pytest.mark.parametrize("kind", ["jenkins", "gitlab", "arc", "keda"])
def test_a_peer_kind_is_refused_as_a_live_policy_naming_the_kinds(make_settings, kind):
    """The peers are models for `farm simulate`; the live autoscaler runs farm's own kinds,
    so the API and farm.yaml refuse a peer kind instead of storing what no turn can run."""
    settings = make_settings(admin_token="adm")
    with TestClient(create_app(settings), headers={"Authorization": "Bearer adm"}) as api:
        r = api.put("/v1/pools/default/policy", json={"kind": kind})
        assert r.status_code == 422
        msg = str(r.json()["detail"])
        assert all(k in msg for k in ("reactive", "scheduled", "predictive")), msg
        assert api.get("/v1/pools/default/policy").json()["policy"] is None
    with pytest.raises(ValueError, match="reactive"):
        make_settings(policies={"default": {"kind": kind}})


def test_a_pool_whose_turn_raises_leaves_the_others_scaling(store, registry, autoscaler, monkeypatch):
    import farm.autoscale.live as live

    a = autoscaler(pools=["default", "broken"], executors={"count": 0}, admin_token="adm")
    policies = PolicyStore(store.client, store.keys)
    for pool in ("default", "broken"):
        policies.put(pool, {"kind": "reactive", "min": 1, "max": 2}, by="test")
    real = live.decide

    def decide(snap, policy, *, now):
        if a.pools["broken"].memory is snap.memory and a.pools["broken"].policy is policy:
            raise KeyError("a rule that does not exist")
        return real(snap, policy, now=now)

    monkeypatch.setattr(live, "decide", decide)
    out = a.run_once()
    assert out["default"]["desired"] == 1 and "broken" not in out
    step_until(a, lambda: states(registry) == ["idle"], 60, "the good pool's executor")
    failed = policies.decisions("broken")[0]
    assert failed["error"].startswith("KeyError") and "desired" not in failed
    with TestClient(create_app(a.settings), headers={"Authorization": "Bearer adm"}) as api:
        failures = len([d for d in policies.decisions("broken", 1000) if "error" in d])
        assert failures > 1 and f'farm_autoscaler_errors_total{{pool="broken"}} {failures}.0' in api.get("/metrics").text
        assert 'farm_autoscaler_errors_total{pool="default"} 0.0' in api.get("/metrics").text
        shown = api.get("/v1/pools/broken/decisions").json()["decisions"][0]
        assert shown["error"].startswith("KeyError")
    assert registry.list("broken") == []
