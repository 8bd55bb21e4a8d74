"""The HTTP API on a real Redis, with a real executor loop behind it."""

import pytest
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.settings import hash_token
from tests.conftest import wait_for

ADMIN, ALICE, BOB = "admin-secret", "alice-secret", "bob-secret"


@pytest.fixture
def settings(make_settings):
    return make_settings(
        admin_token=ADMIN,
        pools=["default", "big"],
        tenants=[{"name": "alice", "token_sha256": hash_token(ALICE)}, {"name": "bob", "token_sha256": hash_token(BOB)}],
    )


@pytest.fixture
def api(settings):
    with TestClient(create_app(settings)) as client:
        yield client


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def submit(api, token=ALICE, **spec):
    body = {"steps": [{"name": "s", "run": "echo hello-from-farm"}], **spec}
    r = api.post("/v1/jobs", json=body, headers=auth(token))
    assert r.status_code == 201, r.text
    return r.json()


def test_health_and_metrics_need_no_token(api):
    assert api.get("/healthz").json() == {"status": "ok", "reasons": []}
    assert api.get("/metrics").status_code == 200


def test_a_method_a_path_does_not_have_is_a_405_naming_every_method_it_has(api):
    """FastAPI makes a route per method; the 405's Allow lists all of the path's, not only
    those of the first route that matched (OPTIONS on a policy said `Allow: GET`)."""
    for path, allow in [("/v1/pools/default/policy", "GET, PUT"), ("/v1/jobs", "GET, POST"), ("/v1/runs", "GET, POST"),
                        ("/v1/jobs/j1", "GET"), ("/v1/caches/k", "DELETE"), ("/healthz", "GET")]:  # fmt: skip
        for method in ("OPTIONS", "PATCH", "DELETE", "HEAD"):
            if method in allow:
                continue
            r = api.request(method, path, headers=auth(ADMIN))
            assert (r.status_code, r.headers.get("allow")) == (405, allow), (method, path)


def test_auth_is_required_and_checked(api):
    assert api.get("/v1/queue").status_code == 401
    r = api.get("/v1/queue", headers=auth("wrong"))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert api.get("/v1/queue", headers={"Authorization": "Basic abc"}).status_code == 401


def test_submit_returns_the_queued_job(api):
    job = submit(api, priority=70)
    assert job["state"] == "queued" and job["attempt"] == 1 and job["tenant"] == "alice"
    assert job["queued_at"].endswith("Z") and job["spec"]["priority"] == 70


@pytest.mark.parametrize(
    "body,loc",
    [
        ({"steps": [{"name": "s", "run": "true"}], "bogus": 1}, ["body", "bogus"]),
        ({"steps": [{"name": "s"}]}, ["body", "steps", 0, "run"]),
        ({"steps": [{"name": "s", "run": "true"}], "pool": "nope"}, ["body", "pool"]),
    ],
)
def test_bad_input_is_422_with_the_field_path(api, body, loc):
    r = api.post("/v1/jobs", json=body, headers=auth(ALICE))
    assert r.status_code == 422
    assert loc in [d["loc"] for d in r.json()["detail"]]


def test_tenants_see_only_their_own_jobs_and_admin_sees_all(api):
    a, b = submit(api, ALICE), submit(api, BOB)
    assert api.get(f"/v1/jobs/{a['id']}", headers=auth(BOB)).status_code == 404
    assert api.post(f"/v1/jobs/{a['id']}/cancel", headers=auth(BOB)).status_code == 404
    assert api.get(f"/v1/jobs/{a['id']}/log", headers=auth(BOB)).status_code == 404
    assert [j["id"] for j in api.get("/v1/jobs", headers=auth(BOB)).json()["jobs"]] == [b["id"]]
    assert {j["id"] for j in api.get("/v1/jobs", headers=auth(ADMIN)).json()["jobs"]} == {a["id"], b["id"]}


def test_list_paginates_with_a_cursor_and_filters(api):
    ids = [submit(api)["id"] for _ in range(7)]
    api.post(f"/v1/jobs/{ids[0]}/cancel", headers=auth(ALICE))
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/jobs", params=params, headers=auth(ALICE)).json()
        seen += [j["id"] for j in page["jobs"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == ids[::-1]
    cancelled = api.get("/v1/jobs", params={"state": "cancelled"}, headers=auth(ALICE)).json()["jobs"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    assert api.get("/v1/jobs", params={"state": "bogus"}, headers=auth(ALICE)).status_code == 422


def test_cancel_is_202_then_409(api):
    job = submit(api)
    r = api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(ALICE))
    assert r.status_code == 202 and r.json()["state"] == "cancelled" and r.json()["error"] == "cancelled"
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(ALICE)).status_code == 409
    assert api.get("/v1/jobs/nope", headers=auth(ALICE)).status_code == 404


def test_queue_shows_pools_and_executors(api, settings, run_executor):
    run_executor(settings, "ex-q")
    wait_for(lambda: api.get("/v1/queue", headers=auth(ALICE)).json()["pools"][0]["executors"]["idle"] == 1, 5, what="idle")
    submit(api, pool="big")
    pools = {p["name"]: p for p in api.get("/v1/queue", headers=auth(ALICE)).json()["pools"]}
    assert set(pools) == {"default", "big"}
    assert pools["big"]["queued"] == 1 and pools["big"]["oldest_wait_s"] >= 0
    assert set(pools["default"]["executors"]) == {"starting", "idle", "busy", "draining"}


def test_a_job_runs_and_its_log_is_served_and_followed(api, settings, run_executor):
    run_executor(settings, "ex-log")
    job = submit(api, steps=[{"name": "s", "run": "echo line-1; sleep 0.5; echo line-2"}])
    with api.stream("GET", f"/v1/jobs/{job['id']}/log", params={"follow": "true"}, headers=auth(ALICE)) as r:
        assert r.headers["content-type"].startswith("text/plain")
        followed = "".join(r.iter_text())
    assert followed.index("line-1") < followed.index("line-2")
    done = api.get(f"/v1/jobs/{job['id']}", headers=auth(ALICE)).json()
    assert done["state"] == "succeeded" and done["steps"][0]["exit_code"] == 0
    r = api.get(f"/v1/jobs/{job['id']}/log", headers=auth(ALICE))
    assert r.headers["content-type"].startswith("text/plain") and "line-2" in r.text
    metrics = api.get("/metrics").text
    assert 'farm_jobs_finished_total{outcome="succeeded",pool="default"} 1.0' in metrics
    assert 'farm_queue_wait_seconds_count{pool="default"} 1.0' in metrics
    assert 'farm_executors{pool="default",state="idle"} 1.0' in metrics


def test_idempotency_key_over_http(api):
    from concurrent.futures import ThreadPoolExecutor

    body = {"steps": [{"name": "s", "run": "true"}]}
    headers = auth(ALICE) | {"Idempotency-Key": "push-abc"}

    def post(_):
        r = api.post("/v1/jobs", json=body, headers=headers)
        return r.status_code, r.json()["id"]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(post, range(200)))
    assert len({job_id for _, job_id in results}) == 1
    assert sorted(code for code, _ in results) == [200] * 199 + [201]
    r = api.post("/v1/jobs", json=body | {"priority": 1}, headers=headers)
    assert r.status_code == 409 and "different body" in r.json()["detail"]
    assert api.post("/v1/jobs", json=body, headers=auth(BOB) | {"Idempotency-Key": "push-abc"}).status_code == 201


def test_concurrency_and_queue_timeout_fields_are_validated(api):
    base = {"steps": [{"name": "s", "run": "true"}]}
    r = api.post("/v1/jobs", json=base | {"concurrency": {"group": "g", "limit": 0}}, headers=auth(ALICE))
    assert r.status_code == 422 and ["body", "concurrency", "limit"] in [d["loc"] for d in r.json()["detail"]]
    r = api.post("/v1/jobs", json=base | {"concurrency": {"group": "g", "on_full": "drop"}}, headers=auth(ALICE))
    assert r.status_code == 422
    r = api.post("/v1/jobs", json=base | {"queue_timeout_s": 0}, headers=auth(ALICE))
    assert r.status_code == 422
    ok = api.post("/v1/jobs", json=base | {"concurrency": {"group": "deploy-prod"}, "queue_timeout_s": 600}, headers=auth(ALICE))
    assert ok.status_code == 201 and ok.json()["spec"]["concurrency"] == {"group": "deploy-prod", "limit": 1, "on_full": "queue"}


def test_a_setting_the_runtime_would_ignore_is_refused_with_its_path(api):
    """Seen by a user: `--image alpine:3` on the local runtime was silently ignored, and the
    host's OS answered."""
    r = api.post("/v1/jobs", json={"steps": [{"name": "s", "run": "cat /etc/os-release", "image": "alpine:3"}]}, headers=auth(ALICE))
    assert r.status_code == 422
    (e,) = r.json()["detail"]
    assert e["loc"] == ["body", "steps", 0, "image"] and "runs steps on the host" in e["msg"]
    r = api.post("/v1/jobs", json={"kind": "image", "source": {"git": {"url": "https://git.example.com/a.git"}},
                                   "build": {"tags": ["alice/a:1"]}}, headers=auth(ALICE))  # fmt: skip
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "kind"]
