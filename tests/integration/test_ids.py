"""Ids as people type them (farm.store.ids): a unique prefix of 8 characters or more names a
job or a run in the store, in every API route that takes one and in the CLI; an ambiguous
one is a 409 listing the matches; another tenant's ids are never matched. Ids are chosen
here (the scripts take the id they are given) so prefixes can be made to collide."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from farm.api import create_app
from farm.cli import app as cli
from farm.errors import Ambiguous, NotFound
from farm.models import JobSpec, JobState, RunSpec
from farm.settings import hash_token
from farm.store.jobs import JobStore
from farm.store.runs import RunStore

ADMIN, ALICE, BOB = "ids-admin", "ids-alice", "ids-bob"
STEP = {"steps": [{"name": "s", "run": "true"}]}


def job_with_id(store: JobStore, job_id: str, tenant: str = "alice") -> str:
    fields = {**JobStore._enqueue_fields(JobSpec.model_validate(STEP), tenant), "id": job_id}
    assert store._call("enqueue", json.dumps(fields))[0] == "created"
    return job_id


def run_with_id(store: JobStore, run_id: str, tenant: str = "alice") -> str:
    spec = RunSpec(name="r", jobs=[JobSpec.model_validate(STEP)])
    args = json.loads(RunStore._args(spec, tenant, [JobStore._enqueue_fields(spec.jobs[0], tenant)], None, None))
    assert store._call("run_submit", json.dumps({**args, "id": run_id}))[0] == "created"
    return run_id


def end(store: JobStore, job_id: str) -> None:
    claim = store.claim("default", "ex-ids", lease_s=60, grace_s=5)
    assert claim is not None and claim.job_id == job_id
    assert store.finish(job_id, claim.attempt, JobState.SUCCEEDED, exit_code=0, error=None, steps=[]) == "ok"


A1, A2 = "aaaaaaaa1" + "0" * 23, "aaaaaaaa2" + "0" * 23  # share 8 characters
B = "bbbbbbbb" + "0" * 24


# -- the store ---------------------------------------------------------------------------------


def test_a_unique_prefix_resolves_an_ambiguous_one_lists_the_matches(store):
    for job_id in (A1, A2, B):
        job_with_id(store, job_id)
    store.cancel(A2)
    assert store.resolve("bbbbbbbb") == B and store.resolve("bbbbbbbb00") == B
    assert store.resolve("aaaaaaaa1") == A1
    with pytest.raises(Ambiguous) as e:
        store.resolve("aaaaaaaa")
    assert e.value.matches == [(A1, "queued"), (A2, "cancelled")]
    assert A1 in str(e.value) and "cancelled" in str(e.value)


def test_too_short_unknown_and_not_hex_are_not_found(store):
    job_with_id(store, B)
    with pytest.raises(NotFound, match="8 characters"):
        store.resolve("bbbbbbb")  # 7
    for typed in ("cccccccc", "nope", "BBBBBBBB", "bbbbbbbb-", "b" * 33):
        with pytest.raises(NotFound):
            store.resolve(typed)


def test_a_whole_id_is_taken_as_it_is_without_a_lookup(store):
    """Whole ids cost nothing more than before, and name jobs made before the index (which
    have no entry: only their whole id finds them)."""
    job_with_id(store, B)
    store.client.zrem(store.keys.job_ids, B)  # as a job submitted before the upgrade
    calls = []
    store.client.zrangebylex = lambda *a, **kw: calls.append(a)  # type: ignore[method-assign]
    assert store.resolve(B) == B and store.resolve("f" * 32) == "f" * 32
    assert calls == []
    del store.client.zrangebylex
    with pytest.raises(NotFound):
        store.resolve(B[:12])


def test_an_ambiguous_prefix_lists_ten_matches_at_most(store):
    made = [job_with_id(store, f"cccccccc{i:024x}") for i in range(12)]
    with pytest.raises(Ambiguous) as e:
        store.resolve("cccccccc")
    assert [m for m, _ in e.value.matches] == made[:10]
    assert "more than 10" in str(e.value)


def test_a_prefix_resolves_among_the_tenants_ids_only(store):
    """Bob's ids sharing alice's prefix are absent for her, even past a page of them."""
    bobs = [job_with_id(store, f"dddddddd{i:024x}", "bob") for i in range(15)]
    alices = job_with_id(store, "dddddddd" + "f" * 24, "alice")
    assert store.resolve("dddddddd", tenant="alice") == alices
    with pytest.raises(NotFound) as e:
        store.resolve("dddddddd0000", tenant="alice")
    assert not any(b in str(e.value) for b in bobs)
    with pytest.raises(Ambiguous) as amb:
        store.resolve("dddddddd", tenant="bob")
    assert alices not in str(amb.value) and all(m in bobs for m, _ in amb.value.matches)
    with pytest.raises(Ambiguous):
        store.resolve("dddddddd")  # the admin's: every tenant's


def test_a_purged_id_is_out_of_the_index(store):
    job_with_id(store, B)
    end(store, B)
    assert store.resolve("bbbbbbbb") == B
    assert store.purge(retention_s=0) == [B]
    with pytest.raises(NotFound):
        store.resolve("bbbbbbbb")
    assert store.client.zcard(store.keys.job_ids) == 0


def test_runs_resolve_by_prefix_and_leave_the_index_when_purged(store):
    runs = RunStore(store)
    r1, r2 = run_with_id(store, A1), run_with_id(store, A2, "bob")
    assert runs.resolve("aaaaaaaa", tenant="alice") == r1 and runs.resolve("aaaaaaaa2") == r2
    with pytest.raises(Ambiguous) as e:
        runs.resolve("aaaaaaaa")
    assert e.value.matches == [(r1, "queued"), (r2, "queued")]
    runs.cancel(r1)
    runs.cancel(r2)
    store.purge(retention_s=0)
    with pytest.raises(NotFound):
        runs.resolve("aaaaaaaa1")
    assert store.client.zcard(store.keys.run_ids) == 0


# -- the API -----------------------------------------------------------------------------------


@pytest.fixture
def settings(make_settings):
    return make_settings(admin_token=ADMIN, tenants=[{"name": "alice", "token_sha256": hash_token(ALICE)},
                                                     {"name": "bob", "token_sha256": hash_token(BOB)}])  # fmt: skip


@pytest.fixture
def farm_app(settings):
    return create_app(settings)


@pytest.fixture
def api(farm_app):
    with TestClient(farm_app) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_job_route_takes_a_prefix(api, farm_app):
    store = farm_app.state.store
    job = api.post("/v1/jobs", json=STEP, headers=auth(ALICE)).json()
    short = job["id"][:12]
    assert api.get(f"/v1/jobs/{short}", headers=auth(ALICE)).json()["id"] == job["id"]
    assert api.get(f"/v1/jobs/{job['id'][:8]}/artifacts", headers=auth(ALICE)).json() == []
    store.append_log(job["id"], 1, "hello by prefix\n", cap=1 << 20)
    assert "hello by prefix" in api.get(f"/v1/jobs/{short}/log", headers=auth(ALICE)).text
    again = api.post(f"/v1/jobs/{short}/rerun", headers=auth(ALICE))
    assert again.status_code == 201 and again.json()["rerun_of"] == job["id"]  # the whole id, not what was typed
    r = api.post(f"/v1/jobs/{short}/cancel", headers=auth(ALICE))
    assert r.status_code == 202 and r.json()["id"] == job["id"] and r.json()["state"] == "cancelled"
    r = api.get(f"/v1/jobs/{short}/artifacts/dist/app.bin", headers=auth(ALICE))
    assert r.status_code == 404 and job["id"] in r.json()["detail"]  # the job was found; it has no such artifact


def test_an_ambiguous_prefix_is_a_409_listing_the_matches(api, farm_app):
    store = farm_app.state.store
    for job_id in (A1, A2):
        job_with_id(store, job_id)
    store.cancel(A2)
    for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/log"), ("GET", "/artifacts"), ("POST", "/rerun")):
        r = api.request(method, f"/v1/jobs/aaaaaaaa{path}", headers=auth(ALICE))
        assert r.status_code == 409, (method, path, r.text)
        assert r.json()["matches"] == [{"id": A1, "state": "queued"}, {"id": A2, "state": "cancelled"}]
        assert A1 in r.json()["detail"]
    assert api.get(f"/v1/jobs/{A1[:9]}", headers=auth(ALICE)).json()["id"] == A1
    # An id's state still conflicts as before, in the same body shape.
    r = api.post(f"/v1/jobs/{A2[:9]}/cancel", headers=auth(ALICE))
    assert r.status_code == 409 and "already ended" in r.json()["detail"] and "matches" not in r.json()


def test_too_short_or_unknown_stays_a_404(api, farm_app):
    job = api.post("/v1/jobs", json=STEP, headers=auth(ALICE)).json()
    for typed in (job["id"][:7], "nope", "0" * 8, "0" * 32):
        assert api.get(f"/v1/jobs/{typed}", headers=auth(ALICE)).status_code == 404, typed
        assert api.post(f"/v1/jobs/{typed}/cancel", headers=auth(ALICE)).status_code == 404, typed
    assert "8 characters" in api.get(f"/v1/jobs/{job['id'][:7]}", headers=auth(ALICE)).json()["detail"]


def test_a_prefix_never_reveals_another_tenants_ids(api, farm_app):
    store = farm_app.state.store
    mine, bobs = job_with_id(store, A1, "alice"), job_with_id(store, A2, "bob")
    # Alice's prefix is unique among her jobs: bob's job sharing it is not there for her.
    assert api.get("/v1/jobs/aaaaaaaa", headers=auth(ALICE)).json()["id"] == mine
    assert api.get("/v1/jobs/aaaaaaaa", headers=auth(BOB)).json()["id"] == bobs
    for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/log"), ("GET", "/artifacts"), ("POST", "/rerun")):
        r = api.request(method, f"/v1/jobs/{bobs[:9]}{path}", headers=auth(ALICE))
        assert r.status_code == 404 and bobs not in r.text, (method, path)
    r = api.get("/v1/jobs/aaaaaaaa", headers=auth(ADMIN))  # the admin sees both
    assert r.status_code == 409 and {m["id"] for m in r.json()["matches"]} == {mine, bobs}
    assert api.get(f"/v1/jobs/{bobs}", headers=auth(BOB)).json()["state"] == "queued"  # nothing was cancelled


def test_run_routes_take_a_prefix(api, farm_app):
    store = farm_app.state.store
    r1, r2, bobs = run_with_id(store, A1), run_with_id(store, A2), run_with_id(store, B, "bob")
    assert api.get(f"/v1/runs/{r1[:9]}", headers=auth(ALICE)).json()["id"] == r1
    r = api.get("/v1/runs/aaaaaaaa", headers=auth(ALICE))
    assert r.status_code == 409 and [m["id"] for m in r.json()["matches"]] == [r1, r2]
    r = api.post(f"/v1/runs/{r2[:12]}/cancel", headers=auth(ALICE))
    assert r.status_code == 202 and r.json()["id"] == r2 and r.json()["state"] == "cancelled"
    for path in (f"/v1/runs/{bobs[:8]}", f"/v1/runs/{bobs[:8]}/cancel"):
        r = api.request("GET" if path.count("/") == 3 else "POST", path, headers=auth(ALICE))
        assert r.status_code == 404 and bobs not in r.text
    assert api.get(f"/v1/runs/{bobs[:8]}", headers=auth(BOB)).json()["state"] == "queued"


# -- the CLI -----------------------------------------------------------------------------------


def test_farm_get_takes_the_id_as_farm_jobs_ls_prints_it(farm_app, serve_app, tmp_path):
    served = serve_app(farm_app)
    env = {"FARM_URL": served.url, "FARM_TOKEN": ALICE, "FARM_CONFIG_DIR": str(tmp_path), "COLUMNS": "80"}
    runner = CliRunner()
    whole = farm_app.state.store.enqueue(JobSpec.model_validate(STEP), "alice").id
    listed = runner.invoke(cli, ["jobs", "ls"], env=env)
    [printed] = re.findall(r"\b[0-9a-f]{12}\b", listed.stdout)
    assert printed == whole[:12]
    got = runner.invoke(cli, ["get", printed], env=env)
    assert got.exit_code == 0, got.output
    assert f"job {whole} queued" in got.stdout
    assert runner.invoke(cli, ["cancel", printed[:8]], env=env).stdout.split() == [whole, "cancelled"]
    job_with_id(farm_app.state.store, whole[:8] + "f" * 24)
    amb = runner.invoke(cli, ["get", printed[:8]], env=env)
    assert amb.exit_code == 2 and "409" in amb.output and whole in amb.output
