"""GET /v1/jobs/{id}/wait names what really holds a job: each situation is built on the real
queue (jobs submitted through the API, claimed by claim.lua, executors reporting to the
registry as executors do) and the answer must name it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.models import JobState
from farm.settings import hash_token
from farm.store.executors import ExecutorState

ADMIN, ALICE, BOB = "admin-wait", "alice-wait", "bob-wait"


def job(name="j", **kw):
    return {"steps": [{"name": name, "run": "true"}], **kw}


@pytest.fixture
def settings(make_settings):
    return make_settings(
        admin_token=ADMIN, api={"run_reaper": False}, webhooks={"enabled": False},
        tenants=[{"name": "alice", "token_sha256": hash_token(ALICE)}, {"name": "bob", "token_sha256": hash_token(BOB)}],
    )  # fmt: skip


@pytest.fixture
def api(settings):
    with TestClient(create_app(settings)) as client:
        yield client


def as_(token):
    return {"Authorization": f"Bearer {token}"}


def submit(api, token=ALICE, **kw):
    r = api.post("/v1/jobs", json=job(**kw), headers=as_(token))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def why(api, job_id, token=ALICE):
    r = api.get(f"/v1/jobs/{job_id}/wait", headers=as_(token))
    assert r.status_code == 200, r.text
    return r.json()


def codes(answer):
    return [r["code"] for r in answer["reasons"]]


def executor(registry, name, state, pool="default"):
    registry.report(name, pool, state)
    return name


def claim(store, name):
    got = store.claim("default", name, lease_s=60, grace_s=5)
    assert got is not None
    return got


def finish(store, got):
    assert store.finish(got.job_id, got.attempt, JobState.SUCCEEDED, exit_code=0, error=None, steps=[]) == "ok"


def test_a_job_with_an_idle_executor_is_next(api, registry):
    executor(registry, "e1", ExecutorState.IDLE)
    answer = why(api, submit(api))
    assert answer["waiting"] and answer["position"] == 0 and codes(answer) == ["next"]
    assert answer["estimate"]["start_in_s"] == 0


def test_busy_executors_and_jobs_ahead_with_an_estimate_from_recent_durations(api, store, registry):
    executor(registry, "e1", ExecutorState.IDLE)
    for _ in range(3):  # the estimate goes on the durations of attempts that ended
        submit(api)
        finish(store, claim(store, "e1"))
    first, second, third = submit(api), submit(api), submit(api)
    claim(store, "e1")  # e1 busy with `first`
    answer = why(api, third)
    assert answer["position"] == 1 and answer["position_in_tenant"] == 1
    assert {"jobs_ahead", "no_idle_executor"} <= set(codes(answer)), answer
    assert "fair_share" not in codes(answer)
    assert answer["estimate"] is not None and "1 job(s) ahead" in answer["estimate"]["method"]
    assert why(api, second)["position"] == 0
    assert why(api, first)["waiting"] is False


def test_other_tenants_go_first_under_fair_share(api, registry):
    executor(registry, "e1", ExecutorState.STARTING)
    alices = [submit(api) for _ in range(3)]
    bobs = submit(api, token=BOB)
    # Stride order from equal passes: alice, bob, alice, alice.
    assert why(api, bobs, token=BOB)["position"] == 1
    last = why(api, alices[2])
    assert last["position"] == 3 and last["position_in_tenant"] == 2
    assert "fair_share" in codes(last) and "1 job(s) of other tenants" in " ".join(r["text"] for r in last["reasons"])
    assert "bob" not in str(last)  # the other tenant is counted, never named


def test_a_full_concurrency_group_names_the_jobs_holding_it(api, store, registry):
    executor(registry, "e1", ExecutorState.IDLE)
    executor(registry, "e2", ExecutorState.IDLE)
    group = {"concurrency": {"group": "deploy", "limit": 1}}
    holder = submit(api, **group)
    claim(store, "e1")
    waiting = submit(api, **group)
    answer = why(api, waiting)  # not yet parked: no claim has looked at it
    assert "concurrency_group" in codes(answer) and holder in answer["reasons"][0]["jobs"], answer
    assert "next" not in codes(answer) and answer["estimate"] is None
    assert store.claim("default", "e2", lease_s=60, grace_s=5) is None  # the claim parks it
    parked = why(api, waiting)
    assert codes(parked)[0] == "concurrency_group" and parked["reasons"][0]["jobs"] == [holder]


def test_an_executor_starting_and_a_pool_at_its_max(api, settings, store, registry):
    api.put("/v1/pools/default/policy", json={"kind": "reactive", "min": 0, "max": 2}, headers=as_(ADMIN)).raise_for_status()
    executor(registry, "e1", ExecutorState.IDLE)
    submit(api)
    claim(store, "e1")
    executor(registry, "e2", ExecutorState.STARTING)
    submit(api)
    answer = why(api, submit(api))
    assert {"executor_starting", "pool_at_max", "no_idle_executor"} <= set(codes(answer)), answer
    assert "the pool has 2 executor(s), its policy's max is 2" in str(answer)


def test_executors_that_cannot_start(api, registry):
    registry.start_failed("e9", "default", "image farm-missing not found")
    answer = why(api, submit(api))
    assert codes(answer) == ["cannot_start"] and "image farm-missing not found" in answer["reasons"][0]["text"]
    assert answer["estimate"] is None


def test_no_executors_at_all(api):
    answer = why(api, submit(api, queue_timeout_s=600))
    assert codes(answer) == ["no_executors"]
    assert 590 < answer["queue_timeout_left_s"] <= 600


def test_a_job_waiting_for_its_needs(api, store, registry):
    r = api.post("/v1/runs", headers=as_(ALICE), json={"name": "pipe", "jobs": [
        {"name": "build", **job()}, {"name": "test", "needs": ["build"], **job()}]})  # fmt: skip
    assert r.status_code == 201, r.text
    build, test = r.json()["jobs"]
    answer = why(api, test)
    assert codes(answer) == ["needs"] and answer["reasons"][0]["jobs"] == ["build"] and answer["position"] is None
    executor(registry, "e1", ExecutorState.IDLE)
    finish(store, claim(store, "e1"))
    assert why(api, test)["position"] == 0
    claim(store, "e1")
    started = why(api, test)
    assert not started["waiting"] and codes(started)[0] == "needs" and "build" in started["summary"]


def test_a_job_an_executor_started_for_says_so_once_it_runs(api, store, registry):
    executor(registry, "e1", ExecutorState.STARTING)
    job_id = submit(api)
    claim(store, "e1")
    answer = why(api, job_id)
    assert answer["state"] == "running" and not answer["waiting"]
    assert codes(answer) == ["executor_starting"] and "one started for it" in answer["summary"]


def test_a_job_cancelled_in_the_queue_never_started(api):
    job_id = submit(api)
    api.post(f"/v1/jobs/{job_id}/cancel", headers=as_(ALICE)).raise_for_status()
    assert "never started" in why(api, job_id)["summary"]


def test_another_tenants_job_is_not_found_and_a_prefix_works(api):
    job_id = submit(api)
    assert api.get(f"/v1/jobs/{job_id}/wait", headers=as_(BOB)).status_code == 404
    assert why(api, job_id[:8])["job"] == job_id
