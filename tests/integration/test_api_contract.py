"""The OpenAPI document tells the truth.

A bounded schemathesis run against the real app (uvicorn on 127.0.0.1, real Redis), with
the admin token, with a tenant's and with one farm never issued, checks every operation: no
request is a server error, and every status, content type, header and body the server
answers is one the document lists for that operation. Valid and invalid requests are both
generated.

Bounded and reproducible: MAX_EXAMPLES per operation, derandomized, no example
database. No executor runs, so submitted jobs stay queued; one job is finished by hand (a
log, an artifact) and the path parameters are drawn from values that exist (and a prefix
of a job's id) as well as generated ones, so the routes answer more than 404.
`?follow=true` is generated like any other value: the app is built with
`api.follow_max_s` = 0.2, so a follow of a queued job ends within a second instead of
streaming until the job ends.
"""

from __future__ import annotations

import json

import httpx
import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from farm.api import create_app
from farm.cache import archive
from farm.cache.scope import Scope, Tier
from farm.models import JobState, StepResult
from farm.settings import hash_token
from farm.store.nodes import NodeBook

ADMIN, ALICE = "contract-admin", "contract-alice"
TOKENS = {"admin": ADMIN, "tenant": ALICE, "stranger": "not-a-farm-token"}  # a stranger: 401s, with WWW-Authenticate
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]  # fmt: skip
MAX_EXAMPLES = 25
STEP = {"steps": [{"name": "s", "run": "true"}]}
SPECS = [STEP, {**STEP, "pool": "gpu", "priority": 90}, {**STEP, "network": "host"}, {**STEP, "pool": "nope"}]
KNOWN_HEADERS = {"idempotency-key": ["contract-key"], "if-match": ["1", "99"]}

# Every operation, and the error statuses it documents besides COMMON's 401/408/413/422/429/503.
EXTRA_ERRORS: dict[tuple[str, str], set[str]] = {
    ("POST", "/v1/jobs"): {"403", "409"},
    ("GET", "/v1/jobs"): {"403"},
    ("GET", "/v1/executors"): {"403", "404"},
    ("POST", "/v1/jobs/{job_id}/rerun"): {"403", "404", "409"},
    ("GET", "/v1/jobs/{job_id}"): {"404", "409"},
    ("GET", "/v1/jobs/{job_id}/wait"): {"404", "409"},
    ("POST", "/v1/jobs/{job_id}/cancel"): {"403", "404", "409"},
    ("GET", "/v1/jobs/{job_id}/artifacts"): {"404", "409"},
    ("GET", "/v1/jobs/{job_id}/artifacts/{name}"): {"404", "409"},
    ("GET", "/v1/jobs/{job_id}/log"): {"404", "409"},
    ("GET", "/v1/queue"): set(),
    ("GET", "/v1/pools"): set(),
    ("GET", "/v1/pools/{name}/policy"): {"404"},
    ("PUT", "/v1/pools/{name}/policy"): {"403", "404", "409"},
    ("GET", "/v1/pools/{name}/policy/history"): {"404"},
    ("GET", "/v1/pools/{name}/decisions"): {"404"},
    ("POST", "/v1/pools/{name}/policy/seed"): {"403", "404"},
    ("GET", "/v1/pools/{name}/history"): {"404"},
    ("GET", "/v1/caches"): set(),
    ("DELETE", "/v1/caches/{key}"): {"403", "404"},
    ("POST", "/v1/runs"): {"403", "409"},
    ("GET", "/v1/runs"): {"403"},
    ("GET", "/v1/runs/{run_id}"): {"404", "409"},
    ("POST", "/v1/runs/{run_id}/cancel"): {"403", "404", "409"},
    ("GET", "/v1/whoami"): set(),
    ("POST", "/v1/login"): set(),
    ("POST", "/v1/tenants"): {"403", "409"},
    ("GET", "/v1/tenants"): {"403"},
    ("POST", "/v1/tenants/{name}/disable"): {"403", "404"},
    ("POST", "/v1/tenants/{name}/enable"): {"403", "404"},
    ("POST", "/v1/tokens"): {"403", "404", "409"},
    ("GET", "/v1/tokens"): {"403", "404"},
    ("POST", "/v1/tokens/{id}/revoke"): {"403", "404"},
    ("POST", "/v1/tokens/{id}/rotate"): {"403", "404", "409"},
    ("GET", "/v1/audit"): {"403"},
    ("POST", "/v1/notifications"): {"403", "409"},
    ("GET", "/v1/notifications"): {"403"},
    ("DELETE", "/v1/notifications/{sub_id}"): {"403", "404"},
    ("GET", "/v1/notifications/dead-letters"): {"403"},
}
COMMON_ERRORS = {"401", "408", "413", "422", "429", "503"}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def settings(make_settings):
    return make_settings(
        admin_token=ADMIN, pools=["default", "gpu"],
        tenants=[{"name": "alice", "token_sha256": hash_token(ALICE)}],
        policies={"gpu": {"kind": "reactive", "buffer": 1, "max": 4}},
        api={"follow_max_s": 0.2, "run_reaper": False},
    )  # fmt: skip


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def served(app, serve_app):
    return serve_app(app)


@pytest.fixture
def token(request) -> str:
    return TOKENS[request.param]


@pytest.fixture
def known(app, served, tmp_path) -> dict[str, list[str]]:
    """Things that exist, by the path parameter that names them: a finished job of the
    tenant's with a log and an artifact, a queued job of the tenant's and one of the admin's
    (a 404 for the tenant), both pools and the artifact's name, a cache entry's key. Also a
    decision, a start failure and a restart, so every body has something in it."""
    st_ = app.state
    with httpx.Client(base_url=served.url, timeout=10) as c:
        done = c.post("/v1/jobs", json={**STEP, "pool": "gpu", "artifacts": ["dist/*"]}, headers=auth(ALICE)).json()
        queued = [c.post("/v1/jobs", json=STEP, headers=auth(tok)).json()["id"] for tok in (ALICE, ADMIN)]
    claim = st_.store.claim("gpu", "ex-contract", lease_s=60, grace_s=5)
    assert claim is not None and claim.job_id == done["id"]
    st_.store.append_log(claim.job_id, claim.attempt, "hello from the contract test\n", cap=1 << 20)
    (tmp_path / "app.bin").write_bytes(b"binary")
    artifact = st_.artifacts.put(claim.job_id, claim.attempt, "dist/app.bin", tmp_path / "app.bin")
    steps = [StepResult(name="s", exit_code=0, duration_s=0.1)]
    assert st_.store.finish(claim.job_id, claim.attempt, JobState.SUCCEEDED, exit_code=0, error=None, steps=steps,
                            artifacts=[artifact]) == "ok"  # fmt: skip
    (tmp_path / "deps").mkdir()
    (tmp_path / "deps" / "f").write_bytes(b"x" * 100)
    st_.caches.commit(Scope("alice", "-", Tier.PROTECTED, "main"), "deps-1", archive.save(tmp_path, ["deps"], st_.caches.blobs))
    st_.policies.record_decision("gpu", {
        "at": "2030-01-01T00:00:00.000Z", "policy": "reactive", "version": 1,
        "inputs": {"queued": 1, "running": 0, "starting": 0, "idle": 0, "arrivals": 1, "lead_s": 30.0},
        "current": 0, "desired": 1, "reason": "queued 1", "started": ["ex-1"], "drained": [],
    })  # fmt: skip
    st_.registry.start_failed("ex-2", "gpu", "no such image")
    NodeBook(st_.store.client, st_.store.keys).restarted("executor")
    return {"job_id": [done["id"], *queued, done["id"][:8]], "name": ["default", "gpu", "dist/app.bin"], "key": ["deps-1"]}


@pytest.fixture
def contract_schema(served, token):
    config = schemathesis.Config.from_dict({
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none",
                       "with-security-parameters": False},
        "phases": {"stateful": {"enabled": False}},
        "headers": auth(token),
        "request-timeout": 10,
    })  # fmt: skip
    return schemathesis.openapi.from_url(f"{served.url}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("contract_schema")


@pytest.mark.parametrize("token", sorted(TOKENS), indirect=True)
@schema.parametrize()
@schema.given(data=st.data())
@hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None)
def test_every_answer_is_in_the_document(case, data, known):
    # Generated values, or ones that exist: a job, a pool, an idempotency key used before, a
    # policy version (1, or one far ahead: a 409), a body that submits (or needs a permission).
    for param, values in known.items():
        if param in (case.path_parameters or {}):
            case.path_parameters[param] = data.draw(st.sampled_from([*values, case.path_parameters[param]]), label=param)
    for header, values in KNOWN_HEADERS.items():
        if header in (case.headers or {}):
            case.headers[header] = data.draw(st.sampled_from([*values, case.headers[header]]), label=header)
    if case.operation.label == "POST /v1/jobs":
        case.body = data.draw(st.sampled_from([*SPECS, case.body]), label="spec")
    case.call_and_validate(checks=CHECKS)


def test_the_document_lists_every_error_status_with_its_body(app):
    doc = app.openapi()
    operations = {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items()}
    assert {k for k in operations if k[1].startswith("/v1/")} == set(EXTRA_ERRORS)
    for key, extra in EXTRA_ERRORS.items():
        responses = operations[key]["responses"]
        errors = {code for code in responses if code[0] in "45"}
        assert errors == COMMON_ERRORS | extra, key
        for code in errors:
            content = responses[code]["content"]
            assert list(content) == ["application/json"], (key, code)
            body = "ValidationErrorBody" if code == "422" else "ErrorBody"
            if code == "409" and "_id}" in key[1]:
                body = "AmbiguousBody"  # a route that takes an id: an ambiguous prefix lists the ids it begins
            assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{body}"}, (key, code)
        assert responses["401"]["headers"]["WWW-Authenticate"]["required"]
    assert operations[("GET", "/v1/jobs/{job_id}/log")]["responses"]["429"]["headers"]["Retry-After"]["required"]
    for key in (("GET", "/healthz"), ("GET", "/metrics")):
        assert set(operations[key]["responses"]) == {"200", "503"}
    assert list(operations[("GET", "/metrics")]["responses"]["200"]["content"]) == ["text/plain"]
    assert list(operations[("GET", "/v1/pools")]["responses"]["200"]["content"]["application/json"]["schema"].values()) == [
        "#/components/schemas/PoolsPublic"
    ]


def test_a_tenant_gets_403_on_an_admin_route_before_its_body_is_validated(app):
    with TestClient(app) as c:
        r = c.put("/v1/pools/default/policy", json={"kind": "no-such-kind", "junk": 1}, headers=auth(ALICE))
        assert r.status_code == 403 and r.json() == {"detail": "this needs the admin role (this token's is maintainer)"}
        r = c.put("/v1/pools/default/policy", content=b"\xff{", headers=auth(ALICE) | {"Content-Type": "application/json"})
        assert r.status_code == 403


def test_a_body_that_is_not_utf8_is_a_422_in_the_validation_shape(app):
    with TestClient(app) as c:
        r = c.post("/v1/jobs", content=b'{"steps": "\xff\xfe"}', headers=auth(ALICE) | {"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        [error] = r.json()["detail"]
        assert error["loc"] == ["body"] and error["type"] == "json_invalid"
        assert json.dumps(r.json()).isascii()  # the undecodable bytes are not echoed


ONE = [{"name": "s", "run": "true"}]
BUILD = {"tags": ["team/app:1"]}
# (spec, whether the API takes it): the rules across fields JobSpec's validators check.
KIND_RULES = [
    ({"steps": ONE}, True), ({"kind": "image", "build": BUILD}, True), ({"kind": "image", "build": BUILD, "steps": ONE}, True),
    ({"steps": ONE, "build": None}, True), ({"steps": []}, False), ({}, False), ({"kind": "build"}, False),
    ({"kind": "image"}, False), ({"kind": "image", "steps": ONE}, False), ({"steps": ONE, "build": BUILD}, False),
]  # fmt: skip


def test_the_document_refuses_the_specs_the_api_refuses(app):
    """A build job without steps, an image job without `build`, a build job with one: the
    schema of POST /v1/jobs and of POST /v1/runs says so (OpenAPI 3.1's if/then/else), so a
    body valid by the document is not a 422 of the model, nor the other way round."""
    doc = app.openapi()

    def schema(path: str) -> Draft202012Validator:
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        return Draft202012Validator({**body, "components": doc["components"]})

    jobs, runs = schema("/v1/jobs"), schema("/v1/runs")
    assert doc["components"]["schemas"]["JobSpec"]["else"]["properties"]["steps"] == {"minItems": 1}
    with TestClient(app) as c:
        for spec, taken in KIND_RULES:
            assert jobs.is_valid(spec) is taken, spec
            assert runs.is_valid({"name": "r", "jobs": [spec]}) is taken, spec
            if not taken:
                for path, body in (("/v1/jobs", spec), ("/v1/runs", {"name": "r", "jobs": [spec]})):
                    r = c.post(path, json=body, headers=auth(ALICE))
                    assert r.status_code == 422, (path, spec, r.text)
