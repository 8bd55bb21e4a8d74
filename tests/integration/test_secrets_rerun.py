"""Secrets reach the steps, never the log or the API; a rerun is a new job linked to the old."""

import pytest
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.settings import hash_token
from tests.integration.test_executor_local import full_log, wait_done

TOKEN = "secret-tenant-token"


@pytest.fixture
def settings(make_settings):
    return make_settings(tenants=[{"name": "t", "token_sha256": hash_token(TOKEN), "secrets": {"db-pass": "pa55-from-vault"}}])


@pytest.fixture
def api(settings):
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def test_secrets_are_in_the_env_and_masked_everywhere(api, settings, run_executor):
    run_executor(settings)
    r = api.post("/v1/jobs", json={
        "secrets": {"API_TOKEN": "tok-123456789", "DB_PASS": {"ref": "db-pass"}},
        "steps": [{"name": "use", "run":
            'echo "token=$API_TOKEN db=$DB_PASS"; printf "tok-1234"; sleep 0.3; printf "56789 split\\n";'
            ' [ ${#DB_PASS} -eq 15 ] && echo db-ok'}],
    })
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["spec"]["secrets"] == {"API_TOKEN": "***", "DB_PASS": {"ref": "db-pass"}}
    done = wait_done(api.app.state.store, job["id"])
    log = full_log(api.app.state.store, job["id"])
    assert done.state.value == "succeeded", log
    assert "token=*** db=***" in log and "*** split" in log and "db-ok" in log
    assert "tok-123456789" not in log and "pa55-from-vault" not in log
    shown = api.get(f"/v1/jobs/{job['id']}").text + api.get("/v1/jobs").text
    assert "tok-123456789" not in shown and "pa55-from-vault" not in shown


def test_unknown_secret_reference_is_422(api):
    r = api.post("/v1/jobs", json={"secrets": {"X": {"ref": "nope"}}, "steps": [{"name": "s", "run": "true"}]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "secrets", "X"]


def test_rerun_submits_the_same_spec_as_a_new_linked_job(api, settings, run_executor):
    run_executor(settings)
    first = api.post("/v1/jobs", json={"secrets": {"K": "value-of-k"}, "priority": 70,
                                       "steps": [{"name": "s", "run": '[ "$K" = value-of-k ] && echo same-secret'}]}).json()
    wait_done(api.app.state.store, first["id"])
    r = api.post(f"/v1/jobs/{first['id']}/rerun")
    assert r.status_code == 201
    again = r.json()
    assert again["id"] != first["id"] and again["rerun_of"] == first["id"] and again["spec"] == first["spec"]
    assert wait_done(api.app.state.store, again["id"]).state.value == "succeeded"
    assert "same-secret" in full_log(api.app.state.store, again["id"])
    assert api.post("/v1/jobs/nope/rerun").status_code == 404
