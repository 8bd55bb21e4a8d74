"""Caches over HTTP: the tier comes from the token, and a tenant sees and deletes its own
entries only."""

import time

import pytest
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.cache import archive
from farm.cache.scope import Scope, Tier
from farm.settings import hash_token

ADMIN, ALICE, ALICE_PROTECTED, BOB = "admin-secret", "alice-pr", "alice-main", "bob-secret"


@pytest.fixture
def api(make_settings):
    settings = make_settings(admin_token=ADMIN, tenants=[
        {"name": "alice", "token_sha256": hash_token(ALICE), "protected_token_sha256": hash_token(ALICE_PROTECTED)},
        {"name": "bob", "token_sha256": hash_token(BOB)},
    ])  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_the_cache_tier_comes_from_the_token_not_the_spec(api, store):
    body = {"steps": [{"name": "s", "run": "true"}], "source": {"git": {"url": "https://git.example/r.git", "ref": "main"}}}
    pr = api.post("/v1/jobs", json=body, headers=auth(ALICE)).json()
    main = api.post("/v1/jobs", json=body, headers=auth(ALICE_PROTECTED)).json()
    assert store.client.hget(store.keys.job(pr["id"]), "tier") == "unprotected"  # naming main claims nothing
    assert store.client.hget(store.keys.job(main["id"]), "tier") == "protected"
    r = api.post("/v1/jobs", json={**body, "tier": "protected"}, headers=auth(ALICE))
    assert r.status_code == 422  # not a field a job can set


def test_a_tenant_lists_and_deletes_its_own_entries_only(api, tmp_path):
    index = api.app.state.caches
    (tmp_path / "deps").mkdir()
    (tmp_path / "deps" / "f").write_bytes(b"x" * 100)
    for tenant, key, ref in (("alice", "deps-1", "main"), ("alice", "deps-1", "pr-2"), ("bob", "deps-1", "main")):
        index.commit(Scope(tenant, "-", Tier.PROTECTED, ref), key, archive.save(tmp_path, ["deps"], index.blobs))
        time.sleep(0.005)  # "most recently used first" is by millisecond: commits in one would tie
    listed = api.get("/v1/caches", headers=auth(ALICE)).json()
    assert [(e["key"], e["ref"]) for e in listed["entries"]] == [("deps-1", "pr-2"), ("deps-1", "main")]
    assert listed["bytes"]["protected"] == 200 and listed["tenant"] == "alice"
    assert api.delete("/v1/caches/deps-1", params={"ref": "pr-2"}, headers=auth(ALICE)).json()["deleted"]
    assert [e["ref"] for e in api.get("/v1/caches", headers=auth(ALICE)).json()["entries"]] == ["main"]
    assert api.delete("/v1/caches/nope", headers=auth(ALICE)).status_code == 404
    assert len(api.get("/v1/caches", headers=auth(BOB)).json()["entries"]) == 1  # bob's untouched
    assert api.get("/v1/caches", params={"tenant": "bob"}, headers=auth(ALICE)).json()["tenant"] == "alice"  # not bob's
    assert api.get("/v1/caches", params={"tenant": "bob"}, headers=auth(ADMIN)).json()["tenant"] == "bob"
