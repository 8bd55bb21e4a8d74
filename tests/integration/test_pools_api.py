"""Pools and their capacity policies over HTTP: admin-only, validated, versioned, audited."""

import pytest
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.settings import hash_token

ADMIN, TEAM = "pool-admin", "pool-team"


@pytest.fixture
def api(make_settings):
    settings = make_settings(
        admin_token=ADMIN, pools=["default", "gpu"],
        tenants=[{"name": "team", "token_sha256": hash_token(TEAM)}],
        policies={"gpu": {"kind": "reactive", "buffer": 1, "max": 4}},
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_pools_list_with_policies_seeded_from_settings(api):
    pools = {p["name"]: p for p in api.get("/v1/pools", headers=auth(TEAM)).json()["pools"]}
    assert set(pools) == {"default", "gpu"}
    assert pools["default"]["policy"]["version"] == 0 and pools["default"]["policy"]["policy"] is None
    gpu = pools["gpu"]["policy"]
    assert gpu["version"] == 1 and gpu["updated_by"] == "farm.yaml" and gpu["policy"]["buffer"] == 1
    assert set(pools["gpu"]["executors"]) == {"starting", "idle", "busy", "draining"}


def test_admin_changes_a_policy_and_the_change_is_audited(api):
    body = {"kind": "predictive", "target_p95_s": 30, "min": 1, "max": 20}
    assert api.put("/v1/pools/default/policy", json=body, headers=auth(TEAM)).status_code == 403
    r = api.put("/v1/pools/default/policy", json=body, headers=auth(ADMIN))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["policy"]["kind"] == "predictive" and r.json()["updated_by"] == "admin"
    r = api.put("/v1/pools/default/policy", json={"kind": "reactive", "buffer": 3}, headers=auth(ADMIN) | {"If-Match": "1"})
    assert r.status_code == 200 and r.json()["version"] == 2
    stale = api.put("/v1/pools/default/policy", json={"kind": "reactive", "buffer": 9}, headers=auth(ADMIN) | {"If-Match": "1"})
    assert stale.status_code == 409
    history = api.get("/v1/pools/default/policy/history", headers=auth(TEAM)).json()["changes"]
    assert [c["version"] for c in history] == [2, 1]
    assert history[0]["before"]["kind"] == "predictive" and history[0]["after"]["buffer"] == 3
    assert history[1]["before"] is None and history[0]["at"].endswith("Z")


def test_bad_policies_and_unknown_pools_are_refused(api):
    r = api.put("/v1/pools/default/policy", json={"kind": "reactive", "buffer": -1}, headers=auth(ADMIN))
    assert r.status_code == 422
    r = api.put("/v1/pools/default/policy", json={"kind": "magic"}, headers=auth(ADMIN))
    assert r.status_code == 422
    r = api.put("/v1/pools/default/policy", json={"kind": "reactive", "colour": "red"}, headers=auth(ADMIN))
    assert r.status_code == 422
    assert api.get("/v1/pools/nope/policy", headers=auth(ADMIN)).status_code == 404
    assert api.get("/v1/pools/default/decisions", headers=auth(TEAM)).json() == {"decisions": []}


def test_a_policy_with_min_over_max_is_refused_and_the_audit_keeps_lists(make_settings):
    settings = make_settings(admin_token="admin-secret")
    with TestClient(create_app(settings), headers={"Authorization": "Bearer admin-secret"}) as client:
        r = client.put("/v1/pools/default/policy", json={"kind": "reactive", "min": 5, "max": 2})
        assert r.status_code == 422 and "min (5) is over max (2)" in r.text
        r = client.put("/v1/pools/default/policy", json={"kind": "scheduled", "idle": 1, "windows": []})
        assert r.status_code == 200, r.text
        (change, *_) = client.get("/v1/pools/default/policy/history").json()["changes"]
        assert change["after"]["windows"] == []


def test_the_document_says_min_must_not_exceed_max_and_lists_the_422(api):
    """A JSON schema cannot compare two fields: each live policy's `min` and `max` say the
    rule in words, and PUT documents the 422 (in the validation shape) that breaking it is."""
    doc = api.get("/openapi.json").json()
    put = doc["paths"]["/v1/pools/{name}/policy"]["put"]
    assert put["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ValidationErrorBody"
    }
    assert "`min` exceeds its `max` is refused with 422" in " ".join(put["description"].split())
    for ref in put["requestBody"]["content"]["application/json"]["schema"]["oneOf"]:
        fields = doc["components"]["schemas"][ref["$ref"].rpartition("/")[2]]["properties"]
        assert "must not exceed `max`" in fields["min"]["description"], ref
        assert "must not be below `min`" in fields["max"]["description"], ref
    r = api.put("/v1/pools/default/policy", json={"kind": "predictive", "min": 3, "max": 1}, headers=auth(ADMIN))
    assert r.status_code == 422 and [e["type"] for e in r.json()["detail"]] == ["value_error"], r.text


def test_a_field_close_to_a_known_one_is_named_in_the_422(api):
    r = api.put("/v1/pools/default/policy", json={"kind": "predictive", "target_p95": 30}, headers=auth(ADMIN))
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error == {"loc": ["body", "predictive", "target_p95"], "msg": "unknown field (did you mean target_p95_s?)",
                     "type": "extra_forbidden", "input": "30"}  # the shape every 422 has
    r = api.put("/v1/pools/default/policy", json={"kind": "scheduled", "windows": [{"cron": "0 8 * * *", "duration": 60}]},
                headers=auth(ADMIN))  # fmt: skip
    assert "unknown field (did you mean duration_s?)" in [e["msg"] for e in r.json()["detail"]]
    r = api.put("/v1/pools/default/policy", json={"kind": "reactive", "colour": "red"}, headers=auth(ADMIN))
    assert r.json()["detail"][0]["msg"] == "unknown field"  # nothing close: no guess
    r = api.post("/v1/jobs", json={"steps": [{"name": "a", "run": "true"}], "timout_s": 3}, headers=auth(TEAM))
    assert r.json()["detail"][0]["msg"] == "unknown field (did you mean timeout_s?)"  # any body, not only policies


def test_the_policy_version_is_its_etag_and_if_match_takes_it_in_every_form(api):
    r = api.get("/v1/pools/default/policy", headers=auth(TEAM))
    assert r.headers["etag"] == '"0"'  # no policy yet
    r = api.put("/v1/pools/default/policy", json={"kind": "reactive", "buffer": 1}, headers=auth(ADMIN) | {"If-Match": '"0"'})
    assert r.status_code == 200 and r.headers["etag"] == '"1"' and r.json()["version"] == 1
    tag = api.get("/v1/pools/default/policy", headers=auth(TEAM)).headers["etag"]
    assert tag == '"1"'
    for version, if_match in ((2, tag), (3, "2"), (4, 'W/"3"'), (5, ' "4" '), (6, '"1", "5"'), (7, "*")):
        r = api.put("/v1/pools/default/policy", json={"kind": "reactive", "buffer": version},
                    headers=auth(ADMIN) | {"If-Match": if_match})  # fmt: skip
        assert r.status_code == 200, (if_match, r.text)
        assert r.json()["version"] == version and r.headers["etag"] == f'"{version}"'
    for stale in ('"6"', "6", 'W/"6"', '"1", "2"'):
        r = api.put("/v1/pools/default/policy", json={"kind": "reactive"}, headers=auth(ADMIN) | {"If-Match": stale})
        assert r.status_code == 409 and "at version 7" in r.json()["detail"], (stale, r.text)
    for garbled in ('"7', "seven", 'W/7x', "", '"-7"'):
        r = api.put("/v1/pools/default/policy", json={"kind": "reactive"}, headers=auth(ADMIN) | {"If-Match": garbled})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["header", "if-match"], (garbled, r.text)
    assert api.get("/v1/pools/default/policy", headers=auth(TEAM)).json()["version"] == 7  # none of those changed it


def test_if_match_star_needs_a_policy_and_the_document_names_the_etag(api):
    r = api.put("/v1/pools/default/policy", json={"kind": "reactive"}, headers=auth(ADMIN) | {"If-Match": "*"})
    assert r.status_code == 409 and "no policy" in r.json()["detail"]
    r = api.put("/v1/pools/gpu/policy", json={"kind": "reactive"}, headers=auth(ADMIN) | {"If-Match": "*"})
    assert r.status_code == 200 and r.json()["version"] == 2  # the gpu pool has farm.yaml's
    doc = api.get("/openapi.json").json()["paths"]["/v1/pools/{name}/policy"]
    assert "ETag" in doc["get"]["responses"]["200"]["headers"] and "ETag" in doc["put"]["responses"]["200"]["headers"]
    (header,) = [p for p in doc["put"]["parameters"] if p["in"] == "header"]
    assert header["name"] == "if-match" and "*" in header["description"]


def test_a_policy_without_max_is_capped_at_the_live_default(api):
    r = api.put("/v1/pools/default/policy", json={"kind": "predictive"}, headers=auth(ADMIN))
    assert r.json()["policy"]["max"] == 50
