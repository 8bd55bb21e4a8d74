"""Accounts and roles against the real app and Redis: every /v1 route declares the role it
needs and is walked with a token of every role; tokens made, listed, revoked, rotated and
expired over the API; a disabled tenant; farm.yaml's tokens as seeded accounts."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.roles import ACTION_KEY, ROLE_KEY, Role
from farm.settings import hash_token
from tests.conftest import wait_for

ADMIN, TEAM = "roles-admin", "roles-team-token"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def settings(make_settings):
    return make_settings(admin_token=ADMIN, tenants=[{"name": "team", "token_sha256": hash_token(TEAM)}], api={"run_reaper": False})


@pytest.fixture
def api(settings):
    with TestClient(create_app(settings)) as client:
        yield client


def make_token(api, role: Role, tenant: str = "team", by: str = ADMIN, **body) -> dict:
    r = api.post("/v1/tokens", json={"tenant": tenant, "role": role.value, "name": f"{role}-token", **body}, headers=auth(by))
    assert r.status_code == 201, r.text
    return r.json()


def v1_operations(api) -> list[tuple[str, str, Role | None]]:
    """Every /v1 operation in the OpenAPI document (made from the routes), with the role it declares."""
    doc = api.get("/openapi.json").json()
    return [(method.upper(), path, Role(op[ROLE_KEY]) if op.get(ROLE_KEY) else None)
            for path, item in doc["paths"].items() if path.startswith("/v1/") for method, op in item.items()]  # fmt: skip


def test_every_route_declares_a_role_and_the_document_says_it(api):
    ops = v1_operations(api)
    assert len(ops) >= 30
    assert not [(m, p) for m, p, role in ops if role is None], "a /v1 route that declares no role"
    doc = api.get("/openapi.json").json()
    for method, path, role in ops:
        assert f"Needs the `{role}` role." in doc["paths"][path][method.lower()]["description"]


def test_every_route_walked_with_every_role(api):
    """A lesser role is a 403 that names the role needed, before the body is read; an equal or
    greater one passes the gate (whatever the route then answers: 404 for the ids made up
    here, 422 for the missing body, 200)."""
    tokens = {role: make_token(api, role, "admin" if role is Role.ADMIN else "team")["token"] for role in Role}
    seen = 0
    for method, path, needed in v1_operations(api):
        url = re.sub(r"\{[^}]+\}", "nothing-here", path)
        for role, token in tokens.items():
            r = api.request(method, url, headers=auth(token), params={"follow": "false"})
            if role.allows(needed):
                assert r.status_code != 403 or "needs the" not in r.text, (method, path, role, r.text)
                assert r.status_code not in (401, 500), (method, path, role, r.text)
            else:
                assert r.status_code == 403, (method, path, role, r.status_code)
                assert r.json()["detail"] == f"this needs the {needed} role (this token's is {role})"
            seen += 1
        assert api.request(method, url, headers=auth("farm_not-a-token")).status_code == 401
    assert seen >= 4 * 30
    # Every route that changes something names its action, and the walk left each in the trail.
    doc = api.get("/openapi.json").json()["paths"]
    actions = {op[ACTION_KEY] for path, item in doc.items() for op in item.values() if op.get(ACTION_KEY)}
    changing = [(m, p) for p, item in doc.items() if p.startswith("/v1/") for m, op in item.items() if m != "get" and not op.get(ACTION_KEY)]
    assert not changing, f"routes that change something but name no audit action: {changing}"
    recorded = {r.action for r in api.app.state.audit.export()}
    assert actions <= recorded, f"actions the walk did not leave in the audit trail: {sorted(actions - recorded)}"
    assert "auth.refused" in recorded  # the 401s


def test_a_viewer_cannot_cancel_and_a_submitter_can(api):
    viewer, submitter = make_token(api, Role.VIEWER), make_token(api, Role.SUBMITTER)
    job = api.post("/v1/jobs", json={"steps": [{"name": "s", "run": "true"}]}, headers=auth(submitter["token"])).json()
    assert api.get(f"/v1/jobs/{job['id']}", headers=auth(viewer["token"])).json()["tenant"] == "team"
    r = api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(viewer["token"]))
    assert r.status_code == 403 and "submitter" in r.json()["detail"]
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(submitter["token"])).json()["state"] == "cancelled"
    trail = api.get("/v1/audit", params={"action": "job."}, headers=auth(ADMIN)).json()
    got = [(e["action"], e["actor"], e["role"], e["status"], e["targets"]) for e in reversed(trail["records"])]
    assert got == [("job.submit", submitter["id"], "submitter", 201, [job["id"]]),
                   ("job.cancel", viewer["id"], "viewer", 403, [job["id"]]),
                   ("job.cancel", submitter["id"], "submitter", 202, [job["id"]])]  # fmt: skip
    submitted = trail["records"][-1]
    assert submitted["client"] == "testclient" and submitted["tenant"] == "team" and submitted["name"] == "submitter-token"
    assert len(submitted["body_sha256"]) == 64


def test_a_revoked_token_is_refused_at_its_next_request_and_a_rotated_one_changes_its_secret(api):
    made = make_token(api, Role.SUBMITTER)
    assert api.get("/v1/whoami", headers=auth(made["token"])).json()["token_id"] == made["id"]
    rotated = api.post(f"/v1/tokens/{made['id']}/rotate", headers=auth(ADMIN)).json()
    assert rotated["id"] == made["id"] and rotated["token"] != made["token"]
    r = api.get("/v1/whoami", headers=auth(made["token"]))
    assert r.status_code == 401 and r.json()["detail"] == "unknown token"
    assert api.get("/v1/whoami", headers=auth(rotated["token"])).status_code == 200
    assert api.post(f"/v1/tokens/{made['id']}/revoke", headers=auth(ADMIN)).json()["revoked_at_ms"]
    assert api.get("/v1/whoami", headers=auth(rotated["token"])).status_code == 401
    listed = {t["id"]: t for t in api.get("/v1/tokens", params={"tenant": "team"}, headers=auth(ADMIN)).json()["tokens"]}
    assert listed[made["id"]]["revoked_at_ms"] and "token" not in listed[made["id"]]
    assert made["token"] not in str(api.app.state.store.client.hgetall(f"farm:token:{made['id']}"))  # only its hash is kept


def refusals_of(api, token_id: str, reader: str = ADMIN) -> list[dict]:
    """The trail's refusals recorded under a token, as `reader` sees them (written just after the answer)."""
    return wait_for(lambda: [x for x in api.get("/v1/audit", params={"action": "auth.refused"}, headers=auth(reader)).json()["records"]
                             if x["actor"] == token_id], 10, what=f"the refusal of {token_id} in the trail")  # fmt: skip


def test_an_expired_token_is_refused(api):
    made = make_token(api, Role.VIEWER, expires_in="1s")
    assert made["expires_at_ms"] - made["created_at_ms"] == 1000
    time.sleep(1.2)
    r = api.get("/v1/whoami", headers=auth(made["token"]))
    assert r.status_code == 401 and r.json()["detail"] == "this token has expired"
    # Recorded under the token, so its tenant's maintainer (farm.yaml's TEAM) sees the attempt.
    (refused,) = refusals_of(api, made["id"], reader=TEAM)
    assert (refused["tenant"], refused["name"], refused["role"], refused["status"]) == ("team", "viewer-token", "viewer", 401)
    r = api.post("/v1/tokens", json={"role": "viewer", "name": "x", "expires_in": "soon"}, headers=auth(TEAM))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "expires_in"]


def test_a_maintainer_manages_its_own_tenant_only_and_never_above_itself(api):
    api.post("/v1/tenants", json={"name": "other"}, headers=auth(ADMIN)).raise_for_status()
    other = make_token(api, Role.SUBMITTER, tenant="other")
    lead = TEAM  # farm.yaml's token: a maintainer of team
    assert api.get("/v1/whoami", headers=auth(lead)).json()["role"] == "maintainer"
    r = api.post("/v1/tokens", json={"role": "admin", "name": "x"}, headers=auth(lead))
    assert r.status_code == 403
    r = api.post("/v1/tokens", json={"role": "viewer", "name": "x", "protected": True}, headers=auth(lead))
    assert r.status_code == 403 and "protected" in r.json()["detail"]
    assert api.post("/v1/tokens", json={"tenant": "other", "role": "viewer", "name": "x"}, headers=auth(lead)).status_code == 404
    assert api.post(f"/v1/tokens/{other['id']}/revoke", headers=auth(lead)).status_code == 404
    mine = api.post("/v1/tokens", json={"role": "viewer", "name": "dashboard"}, headers=auth(lead)).json()
    assert mine["tenant"] == "team" and mine["created_by"] == "cfg-" + hash_token(TEAM)[:12]
    assert {t["tenant"] for t in api.get("/v1/tokens", headers=auth(lead)).json()["tokens"]} == {"team"}
    assert api.post("/v1/tenants", json={"name": "mine"}, headers=auth(lead)).status_code == 403
    r = api.post("/v1/tokens", json={"role": "submitter", "name": "ci"}, headers=auth(ADMIN))  # the admin names the tenant
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tenant"]
    ops = make_token(api, Role.ADMIN, tenant="admin")
    assert ops["tier"] == "protected"  # as its principal is: an admin token listed as it acts
    assert api.post("/v1/tokens/..%2F..%2Fx/revoke", headers=auth(ADMIN)).status_code in (404, 422)
    assert api.post("/v1/tenants/%1b%5b31m/disable", headers=auth(ADMIN)).status_code == 422


def test_a_disabled_tenant_is_refused_and_enabled_again(api):
    api.post("/v1/tenants", json={"name": "acme", "weight": 2}, headers=auth(ADMIN)).raise_for_status()
    made = make_token(api, Role.SUBMITTER, tenant="acme")
    token = made["token"]
    assert api.get("/v1/jobs", headers=auth(token)).status_code == 200
    assert api.post("/v1/tenants/acme/disable", headers=auth(ADMIN)).json()["disabled"] is True
    r = api.get("/v1/jobs", headers=auth(token))
    assert r.status_code == 401 and "disabled" in r.json()["detail"]
    assert [x["tenant"] for x in refusals_of(api, made["id"])] == ["acme"]
    api.post("/v1/tenants/acme/enable", headers=auth(ADMIN)).raise_for_status()
    assert api.get("/v1/jobs", headers=auth(token)).status_code == 200
    assert api.post("/v1/tenants", json={"name": "acme"}, headers=auth(ADMIN)).status_code == 409
    assert api.post("/v1/tenants", json={"name": "admin"}, headers=auth(ADMIN)).status_code == 422


def test_farm_yaml_tokens_are_seeded_once_and_a_revocation_holds_across_restarts(settings, api):
    seeded = "cfg-" + hash_token(TEAM)[:12]
    listed = {t["id"]: t for t in api.get("/v1/tokens", headers=auth(ADMIN)).json()["tokens"]}
    assert listed[seeded]["name"] == "farm.yaml" and listed[seeded]["role"] == "maintainer"
    api.post(f"/v1/tokens/{seeded}/revoke", headers=auth(ADMIN)).raise_for_status()
    with TestClient(create_app(settings)) as again:  # a restart: farm.yaml still names the token
        assert again.get("/v1/whoami", headers=auth(TEAM)).status_code == 401
        assert again.get("/v1/whoami", headers=auth(ADMIN)).json()["role"] == "admin"


def test_a_token_that_cannot_be_looked_up_is_a_503_not_a_500(make_settings):
    """Redis away: a tenant's token (not the settings' admin token, resolved in memory) is
    answered 503 with Retry-After, as a handler's store failure is."""
    settings = make_settings(redis_url="redis://127.0.0.1:1", admin_token=ADMIN)
    r = TestClient(create_app(settings)).get("/v1/jobs", headers=auth(TEAM))
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
