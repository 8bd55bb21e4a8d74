"""The portal in a real browser (chromium, headless), against a real farm: the API served by
uvicorn on 127.0.0.1, a real Redis, and one executor running steps with the local runtime.

Set FARM_SCREENSHOTS=docs/portal to write the main pages' screenshots there (the README
shows them); without it nothing is written.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from farm.api import create_app
from farm.settings import hash_token
from tests.conftest import REPO, wait_for

ADMIN, ALICE, BOB = "portal-admin-token", "portal-alice-token", "portal-bob-token"
SHOTS = os.environ.get("FARM_SCREENSHOTS")

pytestmark = pytest.mark.timeout(180)


class Farm:
    def __init__(self, url: str, app: Any) -> None:
        self.url, self.app = url, app

    def api(self, token: str = ALICE) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=20)

    def submit(self, run: str, token: str = ALICE, **spec: Any) -> dict[str, Any]:
        r = self.api(token).post("/v1/jobs", json={"steps": [{"name": "main", "run": run}], **spec})
        assert r.status_code == 201, r.text
        return r.json()

    def state(self, job_id: str) -> str:
        return self.api(ADMIN).get(f"/v1/jobs/{job_id}").json()["state"]

    def wait_state(self, job_id: str, *states: str, timeout: float = 30) -> None:
        wait_for(lambda: self.state(job_id) in states, timeout, interval=0.1, what=f"job {job_id[:12]} to be {'/'.join(states)}")


@pytest.fixture
def farm(make_settings, serve_app, run_executor) -> Farm:
    settings = make_settings(admin_token=ADMIN, tenants=[{"name": "alice", "token_sha256": hash_token(ALICE)},
                                                         {"name": "bob", "token_sha256": hash_token(BOB)}])  # fmt: skip
    app = create_app(settings)
    served = serve_app(app)
    run_executor(settings, "ex-portal")  # one executor: a second job waits for the first
    return Farm(served.url, app)


def log_in(page: Any, farm: Farm, token: str, then: str = "/ui") -> None:
    page.goto(farm.url + then)
    assert "/ui/login" in page.url  # not logged in: the form, which comes back here after
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(farm.url + then) + r"$"))


def until(page: Any, expression: str, timeout_s: float = 15) -> None:
    """Until `expression` is true in the page. Not page.wait_for_function: Playwright runs
    its predicate through eval, which the portal's CSP forbids (as it should)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if page.evaluate(expression):
                return
        except Exception as e:  # noqa: BLE001  # the page was reloading: look again
            if "context was destroyed" not in str(e) and "navigat" not in str(e):
                raise
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {expression}"
        time.sleep(0.1)


def csp_violations(page: Any) -> list[str]:
    return [e for e in page.errors if "Content Security Policy" in e or "Refused to" in e]


def shoot(page: Any, name: str) -> None:
    if SHOTS:
        out = (REPO / SHOTS) if not Path(SHOTS).is_absolute() else Path(SHOTS)
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / f"{name}.png"), full_page=name == "pool")


def test_log_in_with_a_token_and_see_the_queue_live(farm, new_page):
    page = new_page()
    page.goto(farm.url + "/ui/login")
    page.fill("#token", "not a token")
    page.click("button[type=submit]")
    assert page.text_content("#login-error") == "farm does not know this token"
    log_in(page, farm, ALICE)
    assert page.text_content("#who") == "alice"
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["farm_session"]["httpOnly"] and cookies["farm_session"]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads the session
    assert page.text_content("[data-cell='default|queued']") == "0"
    farm.submit("sleep 3")
    farm.submit("sleep 3")
    # The counts change without a reload: one running, one queued.
    until(page, "document.querySelector(\"[data-cell='default|queued']\").textContent === '1'", 10)
    assert page.text_content("[data-cell='default|busy']") == "1"
    assert csp_violations(page) == []


def test_a_jobs_log_streams_into_the_page_as_it_is_written(farm, new_page):
    job = farm.submit("for i in 1 2 3 4 5 6; do echo tick-$i; sleep 0.7; done")
    page = new_page()
    log_in(page, farm, ALICE, f"/ui/jobs/{job['id']}")
    farm.wait_state(job["id"], "running")
    page.reload()
    assert page.text_content("#job-state") == "running"
    first = page.text_content("#log-text")
    assert "tick-6" not in first
    page.evaluate("window.__sameLoad = true")  # gone if the page reloads
    until(page, "document.getElementById('log-text').textContent.includes('tick-5')", 15)
    assert page.evaluate("window.__sameLoad") is True  # the lines came in without a reload
    shoot(page, "job")
    # When the job ends the page shows its end state (and its whole end, from the server).
    until(page, "document.getElementById('job-state').textContent === 'succeeded'", 15)
    text = page.text_content("#log-text")
    assert all(f"tick-{i}\n" in text for i in range(1, 7))
    assert csp_violations(page) == []


def test_a_queued_jobs_wait_reason_changes_when_the_executor_frees(farm, new_page):
    first = farm.submit("sleep 4")
    farm.wait_state(first["id"], "running")
    second = farm.submit("echo second-ran")
    page = new_page()
    log_in(page, farm, ALICE, f"/ui/jobs/{second['id']}")
    assert page.text_content("#job-state") == "queued"
    codes = page.eval_on_selector_all("#wait-reasons li", "els => els.map(e => e.dataset.code)")
    assert "no_idle_executor" in codes, codes
    before = page.text_content("#wait-summary")
    assert before
    shoot(page, "job-waiting")
    # The executor frees: the box says so, or the page has moved on to the job running.
    until(page, """(() => {
        const s = document.getElementById('job-state').textContent;
        const box = document.getElementById('wait-summary');
        return s !== 'queued' || (box && box.textContent !== %r);
    })()""" % before, 20)  # fmt: skip
    until(page, "['running', 'succeeded'].includes(document.getElementById('job-state').textContent)", 20)
    assert page.query_selector("#wait") is None
    until(page, "document.getElementById('log-text').textContent.includes('second-ran')", 20)
    assert csp_violations(page) == []


def test_cancel_a_run_from_its_page(farm, new_page):
    spec = {"name": "push main@3f2a1c", "labels": {"branch": "main"},
            "jobs": [{"name": "build", "steps": [{"name": "build", "run": "sleep 30"}]},
                     {"name": "test", "needs": ["build"], "steps": [{"name": "test", "run": "sleep 30"}]},
                     {"name": "lint", "steps": [{"name": "lint", "run": "sleep 30"}]}]}  # fmt: skip
    run = farm.api().post("/v1/runs", json=spec).json()
    farm.wait_state(run["jobs"][0], "running")
    page = new_page()
    log_in(page, farm, ALICE, f"/ui/runs/{run['id']}")
    assert page.text_content("#run-state") == "running"
    assert page.locator("tr[data-job]").count() == 3
    shoot(page, "run")
    page.click("#cancel-run")
    page.wait_for_url(farm.url + f"/ui/runs/{run['id']}")
    deadline = time.monotonic() + 15
    while page.text_content("#run-state") != "cancelled":
        assert time.monotonic() < deadline, "the run was not cancelled"
        time.sleep(0.3)
        page.reload()
    assert page.query_selector("#cancel-run") is None
    assert all(farm.state(j) == "cancelled" for j in run["jobs"])
    assert csp_violations(page) == []


def test_another_tenant_finds_none_of_the_first_tenants_jobs(farm, new_page):
    job = farm.submit("echo alice-secret-output")
    farm.wait_state(job["id"], "succeeded")
    alice = new_page()
    log_in(alice, farm, ALICE, f"/ui/jobs/{job['id']}")
    assert "alice-secret-output" in alice.text_content("#log-text")
    bob = new_page()
    log_in(bob, farm, BOB)
    for path in (f"/ui/jobs/{job['id']}", f"/ui/jobs/{job['id'][:12]}"):
        answer = bob.goto(farm.url + path)
        assert answer.status == 404 and "alice-secret-output" not in bob.content()
    bob.goto(farm.url + "/ui/jobs")
    assert job["id"][:12] not in bob.content() and bob.locator("tr[data-job]").count() == 0
    bob.select_option("select[name=state]", "succeeded")
    bob.click(".filters button[type=submit]")
    bob.wait_for_url(re.compile(r".*state=succeeded.*"))
    assert job["id"][:12] not in bob.content() and bob.locator("tr[data-job]").count() == 0
    assert bob.evaluate(f"fetch('/ui/jobs/{job['id']}/log.json').then(r => r.status)") == 404


def test_markup_and_terminal_escapes_in_a_log_show_as_text(farm, new_page):
    evil = r"<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2> \033[31mred\033[0m"
    job = farm.submit(f"sleep 1.5; printf '%b\\n' '{evil}'; sleep 1.5; printf '%b\\n' 'again {evil}'")
    page = new_page()
    log_in(page, farm, ALICE, f"/ui/jobs/{job['id']}")
    farm.wait_state(job["id"], "running")
    page.reload()
    page.evaluate("window.__sameLoad = true")
    shown = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2> ␛[31mred␛[0m"
    until(page, "document.getElementById('log-text').textContent.includes('again <script>')", 15)
    assert page.evaluate("window.__sameLoad") is True  # this came in live, through the event stream
    assert shown in page.text_content("#log-text") and f"again {shown}" in page.text_content("#log-text")
    assert page.evaluate("document.getElementById('log-text').children.length") == 0  # text, not elements
    assert page.evaluate("window.__pwned") is None
    until(page, "document.getElementById('job-state').textContent === 'succeeded'", 15)
    text = page.text_content("#log-text")  # now from the server's page, after the reload
    assert shown in text and "\x1b" not in text
    assert page.evaluate("document.getElementById('log-text').children.length") == 0
    assert page.evaluate("window.__pwned") is None and page.evaluate("document.scripts.length") == 1
    assert csp_violations(page) == []


def test_the_main_pages_render_without_a_csp_violation(farm, new_page):
    """Queue, jobs, a job with its log, a run, a pool with its policy and decisions; with
    FARM_SCREENSHOTS set, each is saved there."""
    admin = farm.api(ADMIN)
    assert admin.put("/v1/pools/default/policy", json={"kind": "reactive", "buffer": 1, "max": 8}).status_code == 200
    assert admin.put("/v1/pools/default/policy", json={"kind": "reactive", "buffer": 2, "max": 8},
                     headers={"If-Match": "1"}).status_code == 200  # fmt: skip
    for i, (current, desired, why) in enumerate([(1, 3, "2 queued + 1 running + buffer 2 = 5, capped by the cluster: start 2"),
                                                  (3, 3, "steady: 3 busy, 0 queued, buffer 2 held by 0 idle"),
                                                  (3, 1, "idle for 60 s past scale_down_delay_s: drain 2")]):  # fmt: skip
        farm.app.state.policies.record_decision("default", {
            "at": f"2026-05-04T09:0{i}:00.000Z", "policy": "reactive", "version": 2, "current": current, "desired": desired,
            "reason": why, "inputs": {"queued": 2, "running": 1, "starting": 0, "idle": 0, "arrivals": 3, "lead_s": 4.2}})  # fmt: skip
    done = farm.submit("printf 'compiling %s\\n' a b c d; echo '\\033[32mok\\033[0m 41 passed'", name="unit-tests")
    farm.wait_state(done["id"], "succeeded")
    run = farm.api().post("/v1/runs", json={"name": "push main@9e1f0a", "labels": {"branch": "main", "sha": "9e1f0a"},
                                            "jobs": [{"name": "lint", "steps": [{"name": "lint", "run": "echo lint ok"}]},
                                                     {"name": "test", "needs": ["lint"], "steps": [{"name": "test", "run": "sleep 20"}]},
                                                     {"name": "deploy", "needs": ["test"], "steps": [{"name": "deploy", "run": "true"}]}]}).json()  # fmt: skip
    farm.wait_state(run["jobs"][1], "running")
    farm.submit("sleep 20", name="integration")
    page = new_page()
    log_in(page, farm, ALICE)
    page.wait_for_timeout(2300)  # one poll of the live counts
    assert page.text_content("[data-cell='default|busy']") == "1"
    shoot(page, "queue")
    for path, name, check in [("/ui/jobs", "jobs", "unit-tests"), (f"/ui/jobs/{done['id']}", "job-ended", "41 passed"),
                              (f"/ui/runs/{run['id']}", "run", "push main@9e1f0a"), ("/ui/runs", "runs", "branch=main"),
                              ("/ui/pools/default", "pool", "drain 2"), ("/ui/pools", "pools", "reactive")]:  # fmt: skip
        answer = page.goto(farm.url + path)
        assert answer.status == 200 and check in page.content(), path
        shoot(page, name)
    assert csp_violations(page) == []
    farm.api().post(f"/v1/runs/{run['id']}/cancel")
