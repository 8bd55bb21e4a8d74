"""Runs as pipelines: a job that `needs` others starts only once they all succeeded, and is
cancelled with `needs_failed` (never run) when one did not; the graph is checked at submit
(a 422 naming the job) and shown on the run. Through the real API, store and executors."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from farm.api import create_app
from tests.conftest import wait_for

ADMIN = "admin-needs"


def job(name, run="true", needs=(), **kw):
    return {"name": name, "needs": list(needs), "steps": [{"name": name, "run": run}], **kw}


@pytest.fixture
def settings(make_settings):
    return make_settings(admin_token=ADMIN, api={"run_reaper": False}, webhooks={"enabled": False})


@pytest.fixture
def api(settings):
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        yield client


def ended(api, run_id):
    return api.get(f"/v1/runs/{run_id}").json()["finished_at"] is not None


@pytest.mark.parametrize(
    ("jobs", "says"),
    [
        ([job("a", needs=["b"]), job("b", needs=["a"])], "cycle"),
        ([job("a", needs=["a"])], "needs itself"),
        ([job("a"), job("b", needs=["nope"])], "jobs[1]: needs 'nope'"),
        ([job("a"), job("a")], "jobs[1]: the name 'a' is taken by jobs[0]"),
        ([job("a"), job("b", needs=["a", "a"])], "needs names a job twice"),
    ],
)
def test_a_graph_that_cannot_run_is_a_422_naming_the_job(api, store, jobs, says):
    r = api.post("/v1/runs", json={"name": "r", "jobs": jobs})
    assert r.status_code == 422 and says in r.text, r.text
    assert store.client.zcard(store.keys.jobs) == 0


def test_a_job_alone_has_no_needs(api):
    r = api.post("/v1/jobs", json=job("a", needs=["b"]))
    assert r.status_code == 422 and "POST /v1/runs" in r.text and r.json()["detail"][0]["loc"] == ["body", "needs"]


def test_jobs_start_in_the_order_their_needs_say(api, settings, run_executor, tmp_path):
    """lint -> three shards -> image -> deploy, on three executors: each starts only after
    what it needs ended, whatever the submission order."""
    order = tmp_path / "order"
    for i in range(3):
        run_executor(settings, f"ex-{i}")
    mark = lambda name: f"echo {name} start >> {order}; sleep 0.3; echo {name} end >> {order}"  # noqa: E731
    shards = [job(f"test-{i}", mark(f"test-{i}"), needs=["lint"]) for i in range(3)]
    spec = {"name": "pipeline", "jobs": [job("deploy", mark("deploy"), needs=["image"]),
                                         job("image", mark("image"), needs=[s["name"] for s in shards]),
                                         *shards, job("lint", mark("lint"))]}  # fmt: skip
    run = api.post("/v1/runs", json=spec).json()
    graph = {n["name"]: n for n in run["graph"]}
    assert graph["deploy"]["waiting_on"] == ["image"] and graph["deploy"]["state"] == "queued" and not graph["lint"]["waiting_on"]
    wait_for(lambda: ended(api, run["id"]), 60, what="the run to end")
    done = api.get(f"/v1/runs/{run['id']}").json()
    assert done["state"] == "succeeded" and done["counts"]["succeeded"] == 6, done
    lines = order.read_text().split("\n")
    at = {line: i for i, line in enumerate(lines)}
    for i in range(3):
        assert at["lint end"] < at[f"test-{i} start"] and at[f"test-{i} end"] < at["image start"]
    assert at["image end"] < at["deploy start"]
    assert len({at[f"test-{i} start"] for i in range(3)}) == 3 and max(at[f"test-{i} start"] for i in range(3)) < min(
        at[f"test-{i} end"] for i in range(3))  # the shards ran side by side  # fmt: skip
    assert all(n["state"] == "succeeded" and not n["waiting_on"] for n in done["graph"])


def test_a_failed_need_cancels_what_follows_it_and_the_run_fails_with_exact_counts(api, settings, run_executor, tmp_path):
    for i in range(2):
        run_executor(settings, f"ex-{i}")
    spec = {"name": "pipeline", "jobs": [job("lint"), job("test-0", needs=["lint"]), job("test-1", "exit 3", needs=["lint"]),
                                         job("test-2", "sleep 1", needs=["lint"]),
                                         job("image", f"touch {tmp_path}/image-ran", needs=["test-0", "test-1", "test-2"]),
                                         job("deploy", f"touch {tmp_path}/deploy-ran", needs=["image"]), job("docs")]}  # fmt: skip
    run = api.post("/v1/runs", json=spec).json()
    wait_for(lambda: ended(api, run["id"]), 60, what="the run to end")
    done = api.get(f"/v1/runs/{run['id']}").json()
    graph = {n["name"]: n for n in done["graph"]}
    assert done["state"] == "failed", done
    assert {k: v for k, v in done["counts"].items() if v} == {"succeeded": 4, "failed": 1, "cancelled": 2}, done["counts"]
    assert graph["test-1"]["state"] == "failed" and graph["test-2"]["state"] == "succeeded"  # a sibling is not cancelled
    for name in ("image", "deploy"):
        assert graph[name]["state"] == "cancelled" and graph[name]["error"] == "needs_failed", graph[name]
    assert not (tmp_path / "image-ran").exists() and not (tmp_path / "deploy-ran").exists()
    image_log = api.get(f"/v1/jobs/{graph['image']['id']}/log").text
    assert "not run: it needs test-1, which ended failed" in image_log, image_log


def test_cancelling_a_run_cancels_its_waiting_jobs_as_cancelled(api, settings, run_executor):
    run_executor(settings)
    run = api.post("/v1/runs", json={"name": "r", "jobs": [job("a", "sleep 30"), job("b", needs=["a"])]}).json()
    wait_for(lambda: api.get(f"/v1/jobs/{run['jobs'][0]}").json()["state"] == "running", 20, what="a to run")
    assert api.post(f"/v1/runs/{run['id']}/cancel").status_code == 202
    wait_for(lambda: ended(api, run["id"]), 20, what="the run to end")
    graph = api.get(f"/v1/runs/{run['id']}").json()["graph"]
    assert [(n["state"], n["error"]) for n in graph] == [("cancelled", "cancelled"), ("cancelled", "cancelled")]


def test_a_waiting_job_is_not_queued_work_for_the_pool(api, settings, store):
    """Until its needs succeed, a job is off the queue: no executor can claim it, and it is
    not demand the pool's autoscaler should scale for."""
    run = api.post("/v1/runs", json={"name": "r", "jobs": [job("a", "sleep 5"), job("b", needs=["a"])]}).json()
    first = store.claim("default", "ex-x", lease_s=10, grace_s=5)
    assert first is not None and first.job_id == run["jobs"][0]
    assert store.claim("default", "ex-y", lease_s=10, grace_s=5) is None
    queue = api.get("/v1/queue").json()["pools"][0]
    assert queue["queued"] == 0, queue
