"""Runs over HTTP on a real Redis, with real executors: all or none, idempotent, cancelled and
superseded as one, their webhook and their metrics."""

import json
import math

import pytest
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.models import JobSpec, RunSpec
from farm.settings import hash_token
from farm.store.jobs import JobStore
from farm.store.runs import RunStore
from farm.webhooks import Deliverer, verify
from tests.conftest import wait_for
from tests.integration.test_webhooks import Receiver

ADMIN, ALICE, BOB = "admin-secret", "alice-secret", "bob-secret"
SECRET = "whsec-runs"


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def job(run="true", **kw):
    return {"steps": [{"name": "s", "run": run}], **kw}


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def settings(make_settings, receiver):
    return make_settings(
        admin_token=ADMIN,
        pools=["default", "big"],
        tenants=[{"name": "alice", "token_sha256": hash_token(ALICE), "webhook_secret": SECRET,
                  "webhook_hosts": [f"127.0.0.1:{receiver.port}"]},
                 {"name": "bob", "token_sha256": hash_token(BOB)}],
        api={"run_reaper": False, "max_run_jobs": 5},
        webhooks={"enabled": False},
        executors={"kill_grace_s": 0.2},
    )  # fmt: skip


@pytest.fixture
def api(settings):
    with TestClient(create_app(settings), headers=auth(ALICE)) as client:
        yield client


def jobs_in_redis(store):
    return store.client.zcard(store.keys.jobs)


def test_a_run_is_queued_whole_and_its_jobs_carry_it(api, store):
    r = api.post("/v1/runs", json={"name": "push main@abc", "labels": {"sha": "abc"}, "jobs": [job(), job(pool="big"), job()]})
    assert r.status_code == 201, r.text
    run = r.json()
    assert (run["name"], run["tenant"], run["state"], run["labels"]) == ("push main@abc", "alice", "queued", {"sha": "abc"})
    assert run["counts"]["queued"] == 3 and len(run["jobs"]) == 3
    for i, job_id in enumerate(run["jobs"]):
        j = api.get(f"/v1/jobs/{job_id}").json()
        assert j["run_id"] == run["id"]
        assert j["spec"]["pool"] == ("big" if i == 1 else "default")
    assert api.get(f"/v1/runs/{run['id']}").json() == run
    assert jobs_in_redis(store) == 3


@pytest.mark.parametrize(
    ("jobs", "loc"),
    [
        ([job(), {"steps": []}], ["body", "jobs", 1, "steps"]),
        ([job(), job(), job(pool="nope")], ["body", "jobs", 2, "pool"]),
        ([job(), job(timeout_s=0)], ["body", "jobs", 1, "timeout_s"]),
        ([job(secrets={"T": {"ref": "missing"}})], ["body", "jobs", 0, "secrets", "T"]),
        ([job()] * 6, ["body", "jobs"]),  # past api.max_run_jobs
        ([], ["body", "jobs"]),
    ],
)
def test_one_bad_job_refuses_the_whole_run_naming_it(api, store, jobs, loc):
    r = api.post("/v1/runs", json={"name": "r", "jobs": jobs})
    assert r.status_code == 422, r.text
    assert any(d["loc"][: len(loc)] == loc for d in r.json()["detail"]), r.json()
    assert jobs_in_redis(store) == 0
    assert api.get("/v1/runs").json()["runs"] == []


def test_a_forbidden_job_refuses_the_run_and_says_which(api, store):
    r = api.post("/v1/runs", json={"name": "r", "jobs": [job(), job(network="host")]})
    assert r.status_code == 403 and "jobs[1]" in r.json()["detail"]
    assert jobs_in_redis(store) == 0


def test_an_idempotency_key_makes_one_run(api, store):
    body = {"name": "r", "jobs": [job(), job()]}
    first = api.post("/v1/runs", json=body, headers={"Idempotency-Key": "push-1"})
    again = api.post("/v1/runs", json=body, headers={"Idempotency-Key": "push-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["jobs"] == first.json()["jobs"]
    other = api.post("/v1/runs", json={**body, "name": "other"}, headers={"Idempotency-Key": "push-1"})
    assert other.status_code == 409 and first.json()["id"] in other.json()["detail"]
    assert jobs_in_redis(store) == 2
    # a job's key and a run's never meet
    assert api.post("/v1/jobs", json=job(), headers={"Idempotency-Key": "push-1"}).status_code == 201


def test_tenants_see_their_own_runs(api):
    run = api.post("/v1/runs", json={"name": "r", "jobs": [job()]}).json()
    assert api.get(f"/v1/runs/{run['id']}", headers=auth(BOB)).status_code == 404
    assert api.post(f"/v1/runs/{run['id']}/cancel", headers=auth(BOB)).status_code == 404
    assert api.get("/v1/runs", headers=auth(BOB)).json()["runs"] == []
    assert api.get("/v1/runs", params={"tenant": "alice"}, headers=auth(BOB)).status_code == 403
    assert [r["id"] for r in api.get("/v1/runs", headers=auth(ADMIN)).json()["runs"]] == [run["id"]]


def test_runs_list_newest_first_with_filters_and_a_cursor(api):
    ids = [api.post("/v1/runs", json={"name": f"r{i % 2}", "jobs": [job()]}).json()["id"] for i in range(5)]
    api.post(f"/v1/runs/{ids[0]}/cancel")
    page = api.get("/v1/runs", params={"limit": 2}).json()
    assert [r["id"] for r in page["runs"]] == ids[::-1][:2]
    rest = api.get("/v1/runs", params={"limit": 10, "cursor": page["next_cursor"]}).json()
    assert [r["id"] for r in rest["runs"]] == ids[::-1][2:]
    assert [r["id"] for r in api.get("/v1/runs", params={"name": "r1"}).json()["runs"]] == [ids[3], ids[1]]
    assert [r["id"] for r in api.get("/v1/runs", params={"state": "cancelled"}).json()["runs"]] == [ids[0]]


def test_a_filtered_list_reads_its_runs_a_batch_per_round_trip(settings, store):
    """GET /v1/runs?name= scans up to 2,000 runs for matches: the runs' hashes are read a
    batch (200) per round trip, not one each; the pages are what they were."""
    runs = RunStore(store)
    spec = JobSpec.model_validate(job())
    fields = [JobStore._enqueue_fields(spec, "alice")]
    ids = [runs.submit(RunSpec(name="rare" if i in (3, 300) else "common", jobs=[spec]), "alice", fields).run.id for i in range(450)]
    with TestClient(create_app(settings, store=store), headers=auth(ALICE)) as api:
        pool = store.client.connection_pool
        taken = pool.get_connection
        trips = []
        pool.get_connection = lambda *a, **kw: trips.append(1) or taken(*a, **kw)  # a command or a pipeline: one trip
        try:
            page = api.get("/v1/runs", params={"name": "rare", "limit": 5}).json()
        finally:
            pool.get_connection = taken
        batches = math.ceil(len(ids) / 200)
        # per batch: the index's ids, then their hashes; and the token's lookup (this store has no asyncio client)
        assert len(trips) <= 2 * batches + 2, len(trips)
        assert [r["id"] for r in page["runs"]] == [ids[300], ids[3]] and page["next_cursor"] is None
        assert page["runs"] == [api.get(f"/v1/runs/{i}").json() for i in (ids[300], ids[3])]


def test_cancel_ends_queued_jobs_at_once_and_kills_running_ones(api, settings, run_executor):
    run_executor(settings)  # one executor: the first job runs, the second waits
    run = api.post("/v1/runs", json={"name": "r", "jobs": [job("sleep 60"), job("sleep 60")]}).json()
    first, second = run["jobs"]
    wait_for(lambda: api.get(f"/v1/jobs/{first}").json()["state"] == "running", 20, what="the first job running")
    assert api.get(f"/v1/runs/{run['id']}").json()["state"] == "running"
    r = api.post(f"/v1/runs/{run['id']}/cancel")
    assert r.status_code == 202
    assert api.get(f"/v1/jobs/{second}").json()["state"] == "cancelled"
    wait_for(lambda: api.get(f"/v1/runs/{run['id']}").json()["state"] == "cancelled", 10, what="the run cancelled")
    got = api.get(f"/v1/runs/{run['id']}").json()
    assert got["counts"]["cancelled"] == 2 and got["finished_at"] is not None
    # the running job's step was killed: its executor takes the next job
    nxt = api.post("/v1/jobs", json=job("echo next")).json()
    wait_for(lambda: api.get(f"/v1/jobs/{nxt['id']}").json()["state"] == "succeeded", 20, what="the executor freed")
    assert api.post(f"/v1/runs/{run['id']}/cancel").json()["state"] == "cancelled"  # again: nothing left to cancel


def test_a_newer_run_supersedes_the_older_in_its_group(api, settings, run_executor):
    run_executor(settings)
    old = api.post("/v1/runs", json={"name": "pr-7 @1", "supersede": {"group": "pr-7"}, "jobs": [job("sleep 60"), job("sleep 60")]}).json()
    other = api.post("/v1/runs", json={"name": "pr-8 @1", "supersede": {"group": "pr-8"}, "jobs": [job("true")]}).json()
    wait_for(lambda: api.get(f"/v1/jobs/{old['jobs'][0]}").json()["state"] == "running", 20, what="the old run running")
    new = api.post("/v1/runs", json={"name": "pr-7 @2", "supersede": {"group": "pr-7"}, "jobs": [job("echo new")]}).json()
    got = api.get(f"/v1/runs/{old['id']}").json()
    assert got["superseded_by"] == new["id"]
    for job_id in old["jobs"]:
        j = api.get(f"/v1/jobs/{job_id}").json()
        assert (j["state"], j["error"]) == ("cancelled", "superseded")
    wait_for(lambda: api.get(f"/v1/runs/{new['id']}").json()["state"] == "succeeded", 30, what="the new run")
    wait_for(lambda: api.get(f"/v1/runs/{other['id']}").json()["state"] == "succeeded", 30, what="the other group's run")
    assert api.get(f"/v1/runs/{other['id']}").json()["superseded_by"] is None
    # Bob's run in a group of the same name is his own
    bob = api.post("/v1/runs", json={"name": "b", "supersede": {"group": "pr-7"}, "jobs": [job()]}, headers=auth(BOB)).json()
    api.post("/v1/runs", json={"name": "pr-7 @3", "supersede": {"group": "pr-7"}, "jobs": [job()]})
    assert api.get(f"/v1/runs/{bob['id']}", headers=auth(BOB)).json()["superseded_by"] is None


def test_a_run_ends_once_with_a_signed_webhook_and_its_metrics(api, settings, store, receiver, run_executor):
    run_executor(settings)
    url = f"http://127.0.0.1:{receiver.port}/run-hook"
    run = api.post("/v1/runs", json={"name": "r", "callback_url": url, "jobs": [job("true"), job("exit 4")]}).json()
    wait_for(lambda: api.get(f"/v1/runs/{run['id']}").json()["finished_at"] is not None, 30, what="the run to end")
    got = api.get(f"/v1/runs/{run['id']}").json()
    assert (got["state"], got["counts"]["succeeded"], got["counts"]["failed"], got["webhook"]) == ("failed", 1, 1, "pending")
    deliverer = Deliverer(store, settings.model_copy(update={"webhooks": settings.webhooks.model_copy(update={"enabled": True})}))
    try:
        deliverer.drain()
    finally:
        deliverer.close()
    assert len(receiver.got) == 1
    headers, body = receiver.got[0]
    assert headers["x-farm-event"] == "run.finished" and headers["x-farm-delivery"] == f"run:{run['id']}"
    assert verify(SECRET, headers["x-farm-timestamp"], body, headers["x-farm-signature"])
    assert json.loads(body)["state"] == "failed" and json.loads(body)["id"] == run["id"]
    assert api.get(f"/v1/runs/{run['id']}").json()["webhook"] == "delivered"
    metrics = api.get("/metrics").text
    assert 'farm_runs_total{outcome="failed",pool="default"} 1.0' in metrics
    assert 'farm_runs_total{outcome="succeeded",pool="default"} 0.0' in metrics
    assert 'farm_run_duration_seconds_count{pool="default"} 1.0' in metrics
    assert 'farm_runs_submitted_total{pool="default"} 1.0' in metrics


def test_a_run_counts_once_in_the_pool_of_its_first_job(api):
    """Runs by pool, for the dashboards' pool variable: a run whose jobs span pools counts
    in its first job's pool only, so the pools' counts add up to the farm's."""
    spanning = api.post("/v1/runs", json={"name": "r", "jobs": [job(pool="big"), job()]}).json()
    plain = api.post("/v1/runs", json={"name": "r", "jobs": [job()]}).json()
    for run in (spanning, plain):
        assert api.post(f"/v1/runs/{run['id']}/cancel").status_code == 202
    metrics = api.get("/metrics").text
    assert 'farm_runs_total{outcome="cancelled",pool="big"} 1.0' in metrics
    assert 'farm_runs_total{outcome="cancelled",pool="default"} 1.0' in metrics
    assert 'farm_run_duration_seconds_count{pool="big"} 1.0' in metrics
    assert 'farm_run_duration_seconds_count{pool="default"} 1.0' in metrics
    assert 'farm_runs_submitted_total{pool="big"} 1.0' in metrics and 'farm_runs_submitted_total{pool="default"} 1.0' in metrics


def test_a_run_callback_must_be_on_the_allowlist(api, store):
    r = api.post("/v1/runs", json={"name": "r", "callback_url": "http://169.254.169.254/x", "jobs": [job()]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "callback_url"]
    assert jobs_in_redis(store) == 0


def test_retention_purges_ended_runs(api, store):
    run = api.post("/v1/runs", json={"name": "r", "jobs": [job()]}).json()
    api.post(f"/v1/runs/{run['id']}/cancel")
    assert store.purge(0) == run["jobs"]
    assert api.get(f"/v1/runs/{run['id']}").status_code == 404
    assert api.get("/v1/runs").json()["runs"] == []


def test_a_tenant_past_its_queue_quota_gets_a_429_and_others_do_not(make_settings, store, run_executor):
    """A tenant may have api.max_queued_per_tenant jobs queued (runs count every job): past
    it a 429 says so, other tenants and the admin go on, and the quota frees as jobs start
    or are cancelled."""
    settings = make_settings(admin_token=ADMIN, tenants=[{"name": "alice", "token_sha256": hash_token(ALICE)},
                                                         {"name": "bob", "token_sha256": hash_token(BOB)}],
                             api={"run_reaper": False, "max_queued_per_tenant": 5}, executors={"kill_grace_s": 0.2})  # fmt: skip
    with TestClient(create_app(settings), headers=auth(ALICE)) as api:
        run = api.post("/v1/runs", json={"name": "r", "jobs": [job("sleep 30")] * 4}).json()
        r = api.post("/v1/runs", json={"name": "r2", "jobs": [job()] * 2})
        assert r.status_code == 429 and "4 jobs queued" in r.json()["detail"] and "max_queued_per_tenant" in r.json()["detail"]
        assert api.post("/v1/jobs", json=job()).status_code == 201  # the fifth
        assert api.post("/v1/jobs", json=job()).status_code == 429
        assert api.post("/v1/runs", json={"name": "b", "jobs": [job()] * 5}, headers=auth(BOB)).status_code == 201
        assert api.post("/v1/runs", json={"name": "a", "jobs": [job()] * 5}, headers=auth(ADMIN)).status_code == 201
        api.post(f"/v1/jobs/{run['jobs'][3]}/cancel")  # a cancelled job leaves the queue
        assert api.post("/v1/jobs", json=job()).status_code == 201
        run_executor(settings)  # a started job leaves the queue too
        wait_for(lambda: api.get(f"/v1/jobs/{run['jobs'][0]}").json()["state"] == "running", 20, what="a job started")
        assert api.post("/v1/jobs", json=job()).status_code == 201
        assert api.post("/v1/jobs", json=job()).status_code == 429
        api.post(f"/v1/runs/{run['id']}/cancel")
    queued = {t: sum(1 for j in store.list(tenant=t, limit=100)[0] if j.state.value == "queued") for t in ("alice", "bob")}
    assert {t: int(store.client.hget(store.keys.tqueued, t) or 0) for t in queued} == queued  # the counter is the truth


def test_a_run_is_counted_on_its_own_hash_as_its_jobs_start_and_end(api, settings, store, run_executor):
    """GET /v1/runs/{id} reads one hash whatever the run's size: the jobs running and ended
    are counted there as they change."""
    run = api.post("/v1/runs", json={"name": "r", "jobs": [job("sleep 2"), job("true"), job("exit 1")]}).json()
    assert api.get(f"/v1/runs/{run['id']}").json()["counts"]["queued"] == 3
    run_executor(settings)
    wait_for(lambda: api.get(f"/v1/runs/{run['id']}").json()["counts"]["running"] == 1, 20, what="the first job running")
    got = api.get(f"/v1/runs/{run['id']}").json()
    assert (got["state"], got["counts"]["queued"], got["started_at"] is not None) == ("running", 2, True)
    wait_for(lambda: api.get(f"/v1/runs/{run['id']}").json()["finished_at"] is not None, 30, what="the run")
    got = api.get(f"/v1/runs/{run['id']}").json()
    assert {k: v for k, v in got["counts"].items() if v} == {"succeeded": 2, "failed": 1} and got["state"] == "failed"


@pytest.mark.parametrize(
    ("body", "in_job"),
    [
        ('{"name": "\\ud800", "jobs": [{"steps": [{"name": "s", "run": "true"}]}]}', False),
        ('{"name": "r", "labels": {"a": "\\udfff"}, "jobs": [{"steps": [{"name": "s", "run": "true"}]}]}', False),
        ('{"name": "r", "jobs": [{"steps": [{"name": "s", "run": "echo \\ud83d"}]}]}', True),
        ('{"name": "r", "jobs": [{"env": {"A": "\\ud800"}, "steps": [{"name": "s", "run": "true"}]}]}', True),
        ('{"name": "a\\u202eb", "jobs": [{"steps": [{"name": "s", "run": "true"}]}]}', False),
        ('{"name": "r", "jobs": [{"steps": [{"name": "\\u001b[31mred", "run": "true"}]}]}', True),
    ],
)
def test_text_that_cannot_be_stored_or_shown_as_is_is_a_422(api, store, body, in_job):
    """A lone surrogate (no UTF-8 for it) and control or format characters in a name (an
    escape sequence, a right-to-left override) are 422s, in a run and in a job alone."""
    r = api.post("/v1/runs", content=body.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert jobs_in_redis(store) == 0
    single = body.split('"jobs": [', 1)[1].rsplit("]", 1)[0]
    alone = api.post("/v1/jobs", content=single.encode(), headers={"Content-Type": "application/json"})
    assert alone.status_code == (422 if in_job else 201), alone.text


def test_a_runs_webhook_comes_after_every_job_webhook_of_it(api, settings, store, receiver, run_executor):
    """The first post fails (a job's): it is retried later, and the run's webhook, due at the
    same moment, waits for it instead of overtaking it."""
    run_executor(settings)
    url = f"http://127.0.0.1:{receiver.port}/hook"
    receiver.fail = 1
    run = api.post("/v1/runs", json={"name": "r", "callback_url": url,
                                     "jobs": [job("true", callback_url=url), job("true", callback_url=url)]}).json()  # fmt: skip
    wait_for(lambda: api.get(f"/v1/runs/{run['id']}").json()["finished_at"] is not None, 30, what="the run to end")
    fast = settings.webhooks.model_copy(update={"enabled": True, "backoff_s": 0.5})
    deliverer = Deliverer(store, settings.model_copy(update={"webhooks": fast}))
    try:
        wait_for(lambda: deliverer.run_once() >= 0 and len(receiver.got) == 3, 20, interval=0.2, what="three webhooks")
    finally:
        deliverer.close()
    events = [headers["x-farm-event"] for headers, _ in receiver.got]
    assert events == ["job.finished", "job.finished", "run.finished"], events
