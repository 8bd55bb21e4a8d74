"""The portal (/ui) over HTTP, on a real server and a real Redis: sessions, CSRF, the
security headers, escaping of job output, tenant scoping, and the log's windows and live
events. What a browser does with it is tests/browser/test_portal.py's."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from farm.api import create_app
from farm.api.ui.logpage import WINDOW
from farm.models import JobState, StepResult
from farm.settings import hash_token
from farm.store.sessions import _digest

ADMIN, ALICE, BOB = "ui-admin-token", "ui-alice-token", "ui-bob-token"
EVIL = "<script>alert(1)</script> \x1b[31mred\x1b[0m & <b>bold</b>\n"


@pytest.fixture
def settings(make_settings):
    return make_settings(admin_token=ADMIN, pools=["default", "big"],
                         tenants=[{"name": "alice", "token_sha256": hash_token(ALICE)}, {"name": "bob", "token_sha256": hash_token(BOB)}])  # fmt: skip


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def served(app, serve_app):
    return serve_app(app)


def browser(served) -> httpx.Client:
    """A client as a browser is: it asks for pages, keeps cookies, does not follow redirects."""
    return httpx.Client(base_url=served.url, headers={"Accept": "text/html"}, follow_redirects=False, timeout=20)


def logged_in(served, token: str) -> httpx.Client:
    client = browser(served)
    r = client.post("/ui/login", data={"token": token, "next": "/ui"})
    assert r.status_code == 303, r.text
    return client


def csrf(client: httpx.Client, page: str = "/ui") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(page).text)[1]


def api(served, token: str) -> httpx.Client:
    return httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {token}"}, timeout=20)


def submit(served, token: str = ALICE, **spec) -> dict:
    r = api(served, token).post("/v1/jobs", json={"steps": [{"name": "build", "run": "true"}], **spec})
    assert r.status_code == 201, r.text
    return r.json()


def run_with_log(app, job_id: str, log: str, *, finish: bool = True, cap: int = 10 * 1024 * 1024) -> None:
    store = app.state.store
    claim = store.claim("default", "ex-ui", lease_s=60, grace_s=5)
    assert claim is not None and claim.job_id == job_id
    store.append_log(job_id, claim.attempt, log, cap=cap)
    if finish:
        assert store.finish(job_id, claim.attempt, JobState.SUCCEEDED, exit_code=0, error=None,
                            steps=[StepResult(name="build", exit_code=0, duration_s=1.5)], log_cap=cap) == "ok"  # fmt: skip


def test_login_sets_an_httponly_strict_cookie_naming_a_session_not_the_token(served, app):
    client = browser(served)
    r = client.post("/ui/login", data={"token": ALICE, "next": "/ui/jobs"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/jobs"
    cookie = r.headers["set-cookie"]
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "samesite", "path"} <= attrs and "secure" not in attrs  # http here: Secure only over https
    assert "samesite=strict" in cookie.lower() and "path=/ui" in cookie.lower()
    session_id = client.cookies["farm_session"]
    assert len(session_id) >= 40 and ALICE not in cookie
    stored = app.state.store.client.hgetall(f"farm:session:{_digest(session_id)}")
    assert stored["token"] == hash_token(ALICE) and stored["csrf"] and ALICE not in json.dumps(stored)
    assert not app.state.store.client.exists(f"farm:session:{session_id}")  # the key holds the cookie's digest only
    assert 0 < app.state.store.client.ttl(f"farm:session:{_digest(session_id)}") <= 12 * 3600
    page = client.get("/ui")
    assert page.status_code == 200 and 'id="who">alice<' in page.text


def test_a_bad_token_is_the_form_again_with_why_and_no_session(served, app):
    client = browser(served)
    for token in ("not-a-token", ""):
        r = client.post("/ui/login", data={"token": token})
        assert r.status_code == 401 and "farm does not know this token" in r.text
        assert "set-cookie" not in r.headers
    assert not app.state.store.client.keys("farm:session:*")
    assert client.get("/ui").status_code == 303


def test_without_a_session_a_page_asks_to_log_in_and_a_feed_is_a_401(served):
    client = browser(served)
    r = client.get("/ui/jobs?state=queued")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstate%3Dqueued"
    assert client.get(r.headers["location"]).status_code == 200
    feed = httpx.get(f"{served.url}/ui/queue.json")
    assert feed.status_code == 401 and feed.json()["detail"]
    forged = browser(served)
    forged.cookies.set("farm_session", "made-up", path="/ui")
    assert forged.get("/ui").status_code == 303
    # A bearer token is not a session: the portal is for browsers.
    assert httpx.get(f"{served.url}/ui/queue.json", headers={"Authorization": f"Bearer {ALICE}"}).status_code == 401


def test_a_post_without_this_sessions_csrf_token_or_from_another_site_is_refused(served, app):
    job = submit(served)
    client = logged_in(served, ALICE)
    token = csrf(client, f"/ui/jobs/{job['id']}")
    for data in ({}, {"csrf": ""}, {"csrf": "x" * 43}, {"csrf": token[:-1]}):
        r = client.post(f"/ui/jobs/{job['id']}/cancel", data=data)
        assert r.status_code == 403, data
    other = logged_in(served, ALICE)  # another session of the same tenant: its own token
    assert other.post(f"/ui/jobs/{job['id']}/cancel", data={"csrf": token}).status_code == 403
    cross = client.post(f"/ui/jobs/{job['id']}/cancel", data={"csrf": token}, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    site = client.post(f"/ui/jobs/{job['id']}/cancel", data={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"})
    assert site.status_code == 403
    assert app.state.store.get(job["id"]).state is JobState.QUEUED
    login = browser(served).post("/ui/login", data={"token": ALICE}, headers={"Origin": "http://evil.example"})
    assert login.status_code == 403 and "set-cookie" not in login.headers
    ok = client.post(f"/ui/jobs/{job['id']}/cancel", data={"csrf": token}, headers={"Origin": served.url})
    assert ok.status_code == 303 and ok.headers["location"] == f"/ui/jobs/{job['id']}"
    assert app.state.store.get(job["id"]).state is JobState.CANCELLED


def test_every_ui_answer_carries_a_csp_without_inline_script(served, app):
    job = submit(served)
    client = logged_in(served, ALICE)
    answers = [client.get(p) for p in ("/ui", "/ui/jobs", f"/ui/jobs/{job['id']}", "/ui/runs", "/ui/pools", "/ui/pools/default",
                                       "/ui/static/portal.js", "/ui/static/portal.css", "/ui/jobs/" + "f" * 32, "/ui/nothing-here")]
    answers += [browser(served).get("/ui/login"), browser(served).get("/ui"), httpx.get(f"{served.url}/ui/queue.json")]
    for r in answers:
        csp = r.headers["content-security-policy"]
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, r.url
        assert "script-src 'self'" in csp and "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "same-origin"
        if "text/html" in r.headers.get("content-type", ""):
            assert r.headers["cache-control"] == "no-store"
            assert not re.search(r"<script(?![^>]*\bsrc=)", r.text), f"inline script in {r.url}"
            assert not re.search(r"\s(style|on[a-z]+)=", r.text), f"inline style or handler in {r.url}"
    assert answers[-1].status_code == 401 and answers[-2].status_code == 303
    assert answers[-4].status_code == 404 and answers[-5].status_code == 404
    assert "/ui" not in json.dumps(httpx.get(f"{served.url}/openapi.json").json()["paths"])  # pages are not API


def _sse(client: httpx.Client, path: str, until: str = "end", limit: int = 50) -> list[tuple[str, str]]:
    events, name = [], None
    with client.stream("GET", path, headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert "'unsafe-inline'" not in r.headers["content-security-policy"]
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, line[6:]))
                if name == until or len(events) >= limit:
                    break
    return events


def test_job_output_is_escaped_in_every_answer_that_carries_it(served, app):
    job = submit(served, steps=[{"name": "<img src=x>", "run": "echo"}])
    client = logged_in(served, ALICE)
    queued = client.get(f"/ui/jobs/{job['id']}")
    assert queued.status_code == 200 and "&lt;img src=x&gt;" in queued.text and "<img src=x>" not in queued.text
    run_with_log(app, job["id"], EVIL, finish=False)
    running = client.get(f"/ui/jobs/{job['id']}")
    events_url = re.search(r'data-events="([^"]+)"', running.text)[1].replace("&amp;", "&")
    app.state.store.append_log(job["id"], 1, "more " + EVIL, cap=1 << 20)
    app.state.store.finish(job["id"], 1, JobState.SUCCEEDED, exit_code=0, error=None, steps=[], log_cap=1 << 20)
    after = re.search(r"after=([0-9-]+)", events_url)[1]
    events = _sse(client, events_url)
    assert [n for n, _ in events] == ["log", "end"] and json.loads(events[0][1])["text"] == "more " + EVIL.replace("\x1b", "␛")
    from_start = _sse(client, f"/ui/jobs/{job['id']}/log/events?after=-")
    assert [n for n, _ in from_start] == ["log", "end"] and json.loads(from_start[-1][1]) == {"state": "succeeded"}
    ended = client.get(f"/ui/jobs/{job['id']}")
    window = client.get(f"/ui/jobs/{job['id']}/log.json")
    bodies = {"running page": running.text, "ended page": ended.text, "window": window.text,
              "events": "".join(d for _, d in events), "events from the start": "".join(d for _, d in from_start)}  # fmt: skip
    for what, body in bodies.items():
        assert "<script>" not in body and "<b>" not in body and "\x1b" not in body, what  # not a byte of markup, nor ESC
        assert "␛[31m" in (body if "page" in what else body.encode().decode("unicode_escape")), what
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in ended.text and "&amp; &lt;b&gt;bold&lt;/b&gt;" in ended.text
    assert json.loads(window.text)["text"].endswith(EVIL.replace("\x1b", "␛") + "more " + EVIL.replace("\x1b", "␛"))
    assert after


def test_a_tenant_sees_none_of_another_tenants_jobs_or_runs(served, app):
    theirs = submit(served, BOB)
    run = api(served, BOB).post("/v1/runs", json={"name": "bobs", "labels": {"team": "b"}, "jobs": [{"steps": [{"name": "s", "run": "true"}]}]}).json()
    mine = submit(served, ALICE)
    alice = logged_in(served, ALICE)
    token = csrf(alice)
    for path in (f"/ui/jobs/{theirs['id']}", f"/ui/jobs/{theirs['id'][:12]}", f"/ui/jobs/{theirs['id']}/log.json",
                 f"/ui/jobs/{theirs['id']}/wait.json", f"/ui/jobs/{theirs['id']}/log/events", f"/ui/runs/{run['id']}",
                 f"/ui/jobs/{theirs['id']}/artifacts/x", f"/ui/jobs?run={run['id']}"):  # fmt: skip
        assert alice.get(path).status_code == 404, path
    for path in (f"/ui/jobs/{theirs['id']}/cancel", f"/ui/jobs/{theirs['id']}/rerun", f"/ui/runs/{run['id']}/cancel"):
        assert alice.post(path, data={"csrf": token}).status_code == 404, path
    assert app.state.store.get(theirs["id"]).state is JobState.QUEUED
    for path in ("/ui/jobs", "/ui/jobs?state=queued", "/ui/jobs?label=team%3Db", "/ui/runs", "/ui/"):
        page = alice.get(path, follow_redirects=True).text
        assert theirs["id"][:12] not in page and run["id"][:12] not in page, path
    assert mine["id"][:12] in alice.get("/ui/jobs").text
    admin = logged_in(served, ADMIN)
    assert admin.get(f"/ui/jobs/{theirs['id']}").status_code == 200 and theirs["id"][:12] in admin.get("/ui/jobs").text


def test_logout_ends_the_session_and_a_revoked_token_ends_its_sessions(served, app):
    client = logged_in(served, ALICE)
    session_id = client.cookies["farm_session"]
    r = client.post("/ui/logout", data={"csrf": csrf(client)})
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert 'farm_session=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    assert not app.state.store.client.exists(f"farm:session:{_digest(session_id)}")
    replay = browser(served)
    replay.cookies.set("farm_session", session_id, path="/ui")
    assert replay.get("/ui").status_code == 303
    # Bob's token (farm.yaml's, seeded as an account) is revoked: his session ends at its next page.
    bob = logged_in(served, BOB)
    assert bob.get("/ui").status_code == 200
    app.state.accounts.revoke("cfg-" + hash_token(BOB)[:12])
    assert bob.get("/ui").status_code == 303
    assert not app.state.store.client.exists(f"farm:session:{_digest(bob.cookies['farm_session'])}")


def test_a_long_log_opens_on_its_end_and_pages_back_to_its_start_exactly_once(served, app):
    job = submit(served)
    lines = "".join(f"line {i:06d} {'x' * 60}\n" for i in range(4000))  # ~280 KiB, in entries of 16 KiB
    store = app.state.store
    claim = store.claim("default", "ex-ui", lease_s=60, grace_s=5)
    for i in range(0, len(lines), 16 * 1024):
        store.append_log(job["id"], claim.attempt, lines[i : i + 16 * 1024], cap=1 << 30)
    big = "".join(f"big {i:06d} {'z' * 60}\n" for i in range(2000))  # one entry over two windows long
    store.append_log(job["id"], claim.attempt, big + lines[:100], cap=1 << 30)
    lines += big + lines[:100]
    client = logged_in(served, ALICE)
    page = client.get(f"/ui/jobs/{job['id']}").text
    shown = re.search(r'<pre id="log-text">(.*?)</pre>', page, re.S)[1]
    assert len(shown) <= WINDOW and shown.endswith(lines[:100]) and "line 001000" not in shown
    cursor = re.search(r'data-before="([^"]+)"', page)[1]
    parts = [shown]
    while cursor:
        got = client.get(f"/ui/jobs/{job['id']}/log.json", params={"before": cursor}).json()
        assert 0 < len(got["text"]) <= WINDOW
        parts.insert(0, got["text"])
        cursor = got["earlier"]
    whole = api(served, ALICE).get(f"/v1/jobs/{job['id']}/log").text  # the API's whole log, as the windows must add up to
    assert whole.endswith(lines) and "".join(parts) == whole
    assert len(parts) >= 7


def test_a_log_over_its_cap_shows_the_cut_marker(served, app):
    job = submit(served)
    cap = 64 * 1024
    store = app.state.store
    claim = store.claim("default", "ex-ui", lease_s=60, grace_s=5)
    for i in range(40):
        store.append_log(job["id"], claim.attempt, f"chunk {i:03d} " + "y" * 4000 + "\n", cap=cap)
    client = logged_in(served, ALICE)
    text = ""
    cursor = None
    while True:
        got = client.get(f"/ui/jobs/{job['id']}/log.json", params={"before": cursor or ""}).json()
        text = got["text"] + text
        if not (cursor := got["earlier"]):
            break
    assert "chunk 000" in text and "chunk 039" in text and "chunk 020" not in text
    assert re.search(r"\[farm\] --- [0-9,]+ bytes of output cut here", text)


def test_pages_show_runs_pools_and_filters(served, app):
    spec = {"name": "push main", "labels": {"branch": "main"},
            "jobs": [{"name": "lint", "steps": [{"name": "lint", "run": "true"}]},
                     {"name": "test", "needs": ["lint"], "pool": "big", "steps": [{"name": "test", "run": "true"}]}]}  # fmt: skip
    run = api(served, ALICE).post("/v1/runs", json=spec).json()
    other = api(served, ALICE).post("/v1/runs", json={**spec, "labels": {"branch": "dev"}}).json()
    alone = submit(served)
    admin = api(served, ADMIN)
    assert admin.put("/v1/pools/big/policy", json={"kind": "reactive", "buffer": 2, "max": 7}).status_code == 200
    app.state.policies.record_decision("big", {"at": "2026-01-01T00:00:00.000Z", "policy": "reactive", "version": 1, "current": 0,
                                               "desired": 2, "reason": "2 queued <b>and</b> a buffer of 2", "started": ["e1", "e2"]})  # fmt: skip
    client = logged_in(served, ALICE)
    page = client.get(f"/ui/runs/{run['id'][:10]}")
    assert page.status_code == 200 and "push main" in page.text and 'id="cancel-run"' in page.text
    assert "lint" in page.text and "waits on lint" in page.text
    listed = client.get("/ui/jobs", params={"label": "branch=main"}).text
    assert all(j[:12] in listed for j in run["jobs"]) and not any(j[:12] in listed for j in other["jobs"]) and alone["id"][:12] not in listed
    in_run = client.get("/ui/jobs", params={"run": run["id"][:12], "pool": "big"}).text
    assert run["jobs"][1][:12] in in_run and run["jobs"][0][:12] not in in_run
    assert alone["id"][:12] in client.get("/ui/jobs", params={"state": "queued", "pool": "default"}).text
    assert client.get("/ui/jobs", params={"state": "nope"}).status_code == 422
    assert client.get("/ui/jobs", params={"label": "nolabel"}).status_code == 422
    runs = client.get("/ui/runs").text
    assert run["id"][:12] in runs and "branch=main" in runs
    pool = client.get("/ui/pools/big")
    assert pool.status_code == 200 and "reactive" in pool.text and "2 queued &lt;b&gt;and&lt;/b&gt; a buffer of 2" in pool.text
    assert "<code>buffer</code>: – → 2" in pool.text
    assert client.get("/ui/pools/nope").status_code == 404
    queue = client.get("/ui/queue.json").json()["cells"]
    assert queue["big|queued"] == "0" and queue["default|queued"] == "3"  # a job waiting on its needs is off the queue
    assert 'data-cell="default|queued">3<' in client.get("/ui").text
    token = csrf(client)
    assert client.post(f"/ui/runs/{run['id']}/cancel", data={"csrf": token}).status_code == 303
    assert app.state.runs.get(run["id"]).state.value == "cancelled"
    rerun = client.post(f"/ui/jobs/{alone['id']}/rerun", data={"csrf": token})
    assert rerun.status_code == 303 and rerun.headers["location"] != f"/ui/jobs/{alone['id']}"
    assert "Re-run of" in client.get(rerun.headers["location"]).text


def test_a_queued_job_says_why_it_waits(served, app):
    job = submit(served)
    client = logged_in(served, ALICE)
    page = client.get(f"/ui/jobs/{job['id']}").text
    assert 'id="wait"' in page and 'data-code="no_executors"' in page
    box = client.get(f"/ui/jobs/{job['id'][:10]}/wait.json").json()
    assert box["state"] == "queued" and box["waiting"] and box["summary"] and "no_executors" in [r["code"] for r in box["reasons"]]


def test_an_artifact_downloads_through_the_session(served, app, tmp_path):
    job = submit(served)
    store = app.state.store
    claim = store.claim("default", "ex-ui", lease_s=60, grace_s=5)
    (tmp_path / "a.html").write_bytes(b"<script>alert(1)</script>")
    info = app.state.artifacts.put(job["id"], claim.attempt, "dist/a.html", tmp_path / "a.html")
    store.finish(job["id"], claim.attempt, JobState.SUCCEEDED, exit_code=0, error=None, steps=[], artifacts=[info])
    client = logged_in(served, ALICE)
    assert f'href="/ui/jobs/{job["id"]}/artifacts/dist/a.html"' in client.get(f"/ui/jobs/{job['id']}").text
    got = client.get(f"/ui/jobs/{job['id']}/artifacts/dist/a.html")
    assert got.status_code == 200 and got.content == b"<script>alert(1)</script>"
    assert got.headers["content-disposition"].startswith("attachment") and got.headers["content-type"] == "application/octet-stream"
    assert got.headers["x-content-type-options"] == "nosniff" and "'unsafe-inline'" not in got.headers["content-security-policy"]
