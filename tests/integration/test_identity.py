"""Job identity end to end: a step of a real executor (local runtime) asks the served API for
its ID token with the env vars farm gave its attempt; a relying party verifies it with a
standard JOSE library (joserfc) against the JWKS it fetched over HTTP, and decides on its
claims: a job submitted with the protected token may deploy, a pull request's may not.
Also: the request token is never in the log and dies with its attempt; rotation keeps a
retired key published for the overlap and no longer; two replicas rotating at once make one key.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from joserfc import jws, jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet

from farm.api import create_app
from farm.settings import hash_token
from farm.store.client import connect
from farm.store.identity import IdentityStore, new_request_token
from farm.store.server import free_port
from tests.conftest import wait_for
from tests.integration.test_executor_local import full_log, wait_done

ADMIN, MAIN, PR = "ident-admin-token", "ident-main-token", "ident-pr-token"
AUDIENCE = "deploy.example.com"
# The step: what a CI tool's "get me an OIDC token" does, with Python's standard library
# (as `curl -H "Authorization: Bearer $FARM_ID_TOKEN_REQUEST_TOKEN" "$FARM_ID_TOKEN_REQUEST_URL?audience=..."`).
FETCH = """
import json, os, sys, time, urllib.request
req = urllib.request.Request(os.environ["FARM_ID_TOKEN_REQUEST_URL"] + "?audience=" + sys.argv[1],
                             headers={"Authorization": "Bearer " + os.environ["FARM_ID_TOKEN_REQUEST_TOKEN"]})
token = json.load(urllib.request.urlopen(req, timeout=10))["value"]
out = os.environ["OUT"]
open(os.path.join(out, "jwt"), "w").write(token)
open(os.path.join(out, "request-token"), "w").write(os.environ["FARM_ID_TOKEN_REQUEST_TOKEN"])
print("token=" + token)
print("request=" + os.environ["FARM_ID_TOKEN_REQUEST_TOKEN"])
sys.stdout.write("split=" + token[:200]); sys.stdout.flush(); time.sleep(0.3); print(token[200:])  # over two log flushes
"""


class Refused(Exception):
    pass


def relying_party(token: str, *, issuer: str, audience: str, action: str) -> dict:
    """A service that trusts farm's tokens: discovery and JWKS over HTTP, signature, issuer,
    audience and lifetime, then its own rule: a deploy needs the protected tier."""
    config = httpx.get(f"{issuer}/.well-known/openid-configuration").json()
    assert config["issuer"] == issuer and "RS256" in config["id_token_signing_alg_values_supported"]
    keys = KeySet.import_key_set(httpx.get(config["jwks_uri"]).json())
    claims = jwt.decode(token, keys, algorithms=["RS256"]).claims
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": issuer}, aud={"essential": True, "value": audience},
                          exp={"essential": True}, tier={"essential": True}).validate(claims)  # fmt: skip
    if action == "deploy" and claims["tier"] != "protected":
        raise Refused(f"deploy needs a protected job; {claims['sub']} is not")
    return claims


def git_repo(root: Path) -> str:
    work = root / "app"
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README").write_text("app\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    return f"file://{work}"


@pytest.fixture
def farm(make_settings, serve_app, tmp_path):
    """Settings naming the API's port (the issuer and the request URL derive from it), the
    app served there, and a git repository the tenant may check out."""
    port = free_port()
    settings = make_settings(admin_token=ADMIN, api={"port": port}, identity={"token_ttl_s": 5, "overlap_s": 5},
                             tenants=[{"name": "acme", "token_sha256": hash_token(PR), "protected_token_sha256": hash_token(MAIN),
                                       "git_url_prefixes": [f"file://{tmp_path}/"]}])  # fmt: skip
    app = create_app(settings)
    return settings, app, serve_app(app, port=port), git_repo(tmp_path)


def submit(url: str, token: str, spec: dict) -> str:
    r = httpx.post(f"{url}/v1/jobs", json=spec, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def ask(url: str, request_token: str, audience: str = AUDIENCE) -> httpx.Response:
    return httpx.get(f"{url}/id-token", params={"audience": audience}, headers={"Authorization": f"Bearer {request_token}"})


def test_a_protected_job_may_deploy_and_a_pull_requests_job_may_not(farm, run_executor, tmp_path):
    settings, app, served, repo = farm
    assert settings.id_issuer == served.url
    run_executor(settings)
    (tmp_path / "fetch.py").write_text(FETCH)
    jobs = {}
    for name, token in (("main", MAIN), ("pr", PR)):
        out = tmp_path / name
        out.mkdir()
        # The pull request's job names the default branch too: the ref is the job's word, the tier is farm's.
        jobs[name] = submit(served.url, token, {
            "id_token": True, "source": {"git": {"url": repo, "ref": "main"}}, "env": {"OUT": str(out)},
            "steps": [{"name": "token", "run": f'"{sys.executable}" "{tmp_path / "fetch.py"}" {AUDIENCE}'}],
        })  # fmt: skip
    absent = 'test -z "$FARM_ID_TOKEN_REQUEST_TOKEN$FARM_ID_TOKEN_REQUEST_URL"'  # a job that did not ask has neither
    plain = submit(served.url, MAIN, {"steps": [{"name": "none", "run": absent}]})
    store = app.state.store
    for job_id in [*jobs.values(), plain]:
        assert wait_done(store, job_id, timeout=60).state.value == "succeeded", full_log(store, job_id)

    main = relying_party((tmp_path / "main" / "jwt").read_text(), issuer=served.url, audience=AUDIENCE, action="deploy")
    assert {k: main[k] for k in ("tenant", "pool", "repository", "ref", "tier", "job_id", "run_id", "attempt")} == {
        "tenant": "acme", "pool": "default", "repository": repo, "ref": "main", "tier": "protected", "job_id": jobs["main"],
        "run_id": "", "attempt": 1}  # fmt: skip
    assert main["sub"] == f"tenant:acme:tier:protected:repo:{repo}:ref:main" and main["exp"] - main["iat"] == 5
    pr_token = (tmp_path / "pr" / "jwt").read_text()
    with pytest.raises(Refused, match="deploy needs a protected job"):
        relying_party(pr_token, issuer=served.url, audience=AUDIENCE, action="deploy")
    assert relying_party(pr_token, issuer=served.url, audience=AUDIENCE, action="read")["tier"] == "unprotected"
    with pytest.raises(Exception, match="aud"):
        relying_party(pr_token, issuer=served.url, audience="another.example.com", action="read")

    for name, job_id in jobs.items():
        log = full_log(store, job_id)
        request = (tmp_path / name / "request-token").read_text()
        jwt_text = (tmp_path / name / "jwt").read_text()
        assert request not in log and "request=***" in log, log
        assert "token=***" in log and "split=***" in log and jwt_text.split(".")[2][:16] not in log, log
        assert ask(served.url, request).status_code == 401  # its attempt ended: refused, and the grant is gone
        assert not store.client.keys(store.keys.id_request("*"))


def test_a_token_verifies_within_the_overlap_and_not_past_it(farm, store, tmp_path):
    """Done when: an ID token verifies against the JWKS, and fails after rotation past the overlap."""
    settings, app, served, _ = farm
    job_id = submit(served.url, MAIN, {"id_token": True, "steps": [{"name": "s", "run": "true"}]})
    claim = store.claim("default", "ex-ident", lease_s=60, grace_s=5)
    assert claim is not None and claim.job_id == job_id
    identity = IdentityStore(store.client, store.keys)
    request = new_request_token()
    identity.grant(request, job_id, claim.attempt, ttl_s=60)
    r = ask(served.url, request)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store", r.text
    token = r.json()["value"]
    claims = relying_party(token, issuer=served.url, audience=AUDIENCE, action="deploy")
    old_kid = jws.extract_compact(token.encode()).protected["kid"]

    identity.rotate(rotate_s=settings.identity.rotate_s, overlap_s=settings.identity.overlap_s)
    kids = [k["kid"] for k in httpx.get(f"{served.url}/.well-known/jwks.json").json()["keys"]]
    assert len(kids) == 2 and kids[1] == old_kid  # the new key first, the retired one still published
    assert relying_party(token, issuer=served.url, audience=AUDIENCE, action="deploy")["jti"] == claims["jti"]
    newer = ask(served.url, request).json()["value"]
    assert jws.extract_compact(newer.encode()).protected["kid"] == kids[0]

    wait_for(lambda: old_kid not in httpx.get(f"{served.url}/.well-known/jwks.json").text, 15, interval=0.2,
             what="the retired key to leave the JWKS")  # fmt: skip
    with pytest.raises(InvalidKeyIdError):
        relying_party(token, issuer=served.url, audience=AUDIENCE, action="deploy")
    assert relying_party(ask(served.url, request).json()["value"], issuer=served.url, audience=AUDIENCE, action="deploy")
    assert len(store.client.hkeys(store.keys.signing_keys)) == 1  # the next rotation step dropped it from the store too


def test_a_request_token_is_refused_for_anything_but_its_running_attempt(make_settings, store):
    settings = make_settings(admin_token=ADMIN, api={"run_reaper": False})  # the test lets the lease lapse itself
    identity = IdentityStore(store.client, store.keys)
    with TestClient(create_app(settings)) as api:
        job_id = submit_local(api, {"id_token": True, "steps": [{"name": "s", "run": "true"}]})
        first = store.claim("default", "ex-ident", lease_s=0.2, grace_s=5)
        old = new_request_token()
        identity.grant(old, job_id, first.attempt, ttl_s=60)
        assert get_token(api, old).status_code == 200
        assert get_token(api, old, audience="").status_code == 422
        assert get_token(api, old, audience="a b").status_code == 422
        assert get_token(api, "x" * 43).status_code == 401 and get_token(api, None).status_code == 401
        # The lease lapses and the job runs again: attempt 2's token works, attempt 1's no longer.
        time.sleep(0.3)
        store.reap(node_timeout_s=0.1)
        second = store.claim("default", "ex-ident-2", lease_s=60, grace_s=5)
        assert second is not None and second.attempt == first.attempt + 1
        new = new_request_token()
        identity.grant(new, job_id, second.attempt, ttl_s=60)
        assert get_token(api, old).status_code == 401 and get_token(api, new).status_code == 200
        # A job that did not ask for identity gets no token, even with a grant.
        other = submit_local(api, {"steps": [{"name": "s", "run": "true"}]})
        claimed = store.claim("default", "ex-ident-3", lease_s=60, grace_s=5)
        assert claimed is not None and claimed.job_id == other
        stray = new_request_token()
        identity.grant(stray, other, claimed.attempt, ttl_s=60)
        r = get_token(api, stray)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_an_attempt_asking_too_often_is_told_to_wait_and_no_other_is(make_settings, store):
    """/id-token is outside the gate's per-tenant caps and each answer is a signature: one
    attempt gets identity.requests_per_minute a minute, then 429s; another attempt is
    counted apart, and a token farm never granted leaves no count behind."""
    settings = make_settings(admin_token=ADMIN, identity={"requests_per_minute": 3})
    identity = IdentityStore(store.client, store.keys)
    with TestClient(create_app(settings)) as api:
        first, second = (submit_local(api, {"id_token": True, "steps": [{"name": "s", "run": "true"}]}) for _ in range(2))
        tokens = {}
        for executor in ("ex-rate-1", "ex-rate-2"):
            claim = store.claim("default", executor, lease_s=60, grace_s=5)
            tokens[claim.job_id] = new_request_token()
            identity.grant(tokens[claim.job_id], claim.job_id, claim.attempt, ttl_s=60)
        assert [get_token(api, tokens[first]).status_code for _ in range(4)] == [200, 200, 200, 429]
        r = get_token(api, tokens[first])
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60 and "requests_per_minute" in r.json()["detail"]
        assert get_token(api, tokens[second]).status_code == 200  # counted apart
        for _ in range(5):
            assert get_token(api, new_request_token()).status_code == 401
        counts = sorted(k for k in store.client.scan_iter(store.keys.id_rate("*")))
        assert counts == sorted(store.keys.id_rate(hashlib.sha256(t.encode()).hexdigest()) for t in tokens.values())
        assert all(0 < store.client.ttl(k) <= 60 for k in counts)  # each count ends with its minute


def test_audiences_can_be_limited_and_identity_turned_off(make_settings, store):
    settings = make_settings(admin_token=ADMIN, identity={"audiences": ["vault"]})
    identity = IdentityStore(store.client, store.keys)
    with TestClient(create_app(settings)) as api:
        job_id = submit_local(api, {"id_token": True, "steps": [{"name": "s", "run": "true"}]})
        claim = store.claim("default", "ex-ident", lease_s=60, grace_s=5)
        request = new_request_token()
        identity.grant(request, job_id, claim.attempt, ttl_s=60)
        r = get_token(api, request)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "audience"], r.text
        assert get_token(api, request, audience="vault").status_code == 200
    off = make_settings(admin_token=ADMIN, identity={"enabled": False})
    with TestClient(create_app(off)) as api:
        for path in ("/.well-known/openid-configuration", "/.well-known/jwks.json", "/id-token?audience=vault"):
            assert api.get(path, headers={"Authorization": f"Bearer {request}"}).status_code == 404, path


def test_two_replicas_rotating_at_once_make_one_key(redis_url):
    """Every replica finds no key (or a due one) at once: one key is made, and all sign with it."""
    replicas = [IdentityStore(connect(redis_url)) for _ in range(4)]
    got: list[str] = []

    def sign_now(replica: IdentityStore) -> None:
        got.append(replica.signing_key(rotate_s=3600, overlap_s=600)[0].kid)

    threads = [threading.Thread(target=sign_now, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 4 and len(set(got)) == 1
    assert replicas[0].client.hkeys(replicas[0].keys.signing_keys) == [got[0]]


def submit_local(api: TestClient, spec: dict) -> str:
    r = api.post("/v1/jobs", json=spec, headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def get_token(api: TestClient, request_token: str | None, audience: str = AUDIENCE) -> httpx.Response:
    headers = {"Authorization": f"Bearer {request_token}"} if request_token else {}
    return api.get("/id-token", params={"audience": audience}, headers=headers)
