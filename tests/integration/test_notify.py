"""Notifications on real servers: an SMTP server (aiosmtpd) and HTTP receivers on 127.0.0.1,
a real Redis, the API as a client calls it. A branch that fails and is then fixed mails once
and posts one chat message; a run is told of by its name, once, naming the jobs that did not
succeed; a receiver that keeps failing is retried with backoff, then listed as a dead letter;
a job's end only queues its notification (and costs a tenant without subscriptions nothing);
two notifiers never send one delivery twice; mail goes over STARTTLS with a login; the CLI
manages subscriptions against a served farm whose own loop sends."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import threading
import time
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.models import ErrorCode, JobState, StepResult
from farm.notifier import Notifier, send_mail
from farm.settings import NotifySettings, hash_token
from farm.store.server import free_port
from farm.webhooks import verify
from tests.conftest import require_tool, wait_for

ADMIN, TEAM, OTHER, SECRET = "notify-admin", "notify-team", "notify-other", "whsec-notify"
STEP = [{"name": "s", "run": "true"}]
REPO = Path(__file__).resolve().parents[2]


class Receiver:
    """A real HTTP server on 127.0.0.1 recording what it is sent; answers `status` (after
    `delay_s`)."""

    def __init__(self, status: int = 204, delay_s: float = 0.0) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.status, self.delay_s = status, delay_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(outer.delay_s)
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """A real SMTP server (aiosmtpd) on 127.0.0.1: every message it accepts, with its recipients."""

    def __init__(self, **smtp: object) -> None:
        self.got: list[tuple[list[str], Message]] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
                outer.got.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **smtp)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture
def mailbox():
    box = Mailbox()
    yield box
    box.close()


@pytest.fixture
def chat():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hook():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def make(make_settings, mailbox, chat, hook):
    def settings(**notify: object):
        return make_settings(
            admin_token=ADMIN,
            tenants=[{"name": "team", "token_sha256": hash_token(TEAM), "webhook_secret": SECRET,
                      "webhook_hosts": [f"127.0.0.1:{chat.port}", f"127.0.0.1:{hook.port}"]},
                     {"name": "other", "token_sha256": hash_token(OTHER)}],
            notify={"enabled": False, "smtp_host": "127.0.0.1", "smtp_port": mailbox.port, "backoff_s": 0.01,
                    "max_backoff_s": 0.05, "max_attempts": 3, "timeout_s": 5, "max_subscriptions": 5, **notify},
            api={"run_reaper": False}, webhooks={"enabled": False},
        )  # fmt: skip

    return settings


@pytest.fixture
def settings(make):
    return make()


@pytest.fixture
def api(settings):
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {TEAM}"}) as client:
        yield client


@pytest.fixture
def notifier(api, store, settings):
    n = Notifier(store, settings)
    yield n
    n.close()


def subscribe(api, body: dict, **kw) -> str:
    r = api.post("/v1/notifications", json=body, **kw)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def submit(api, branch: str | None, token: str = TEAM) -> str:
    body = {"steps": STEP, **({"labels": {"branch": branch}} if branch else {})}
    r = api.post("/v1/jobs", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def finish(store, job_id: str, ok: bool) -> None:
    """The job's executor reports its end (as tests/integration/test_readme_routes.py does)."""
    claim = store.claim("default", "ex-notify", lease_s=30, grace_s=5)
    assert claim is not None and claim.job_id == job_id
    state, code = (JobState.SUCCEEDED, 0) if ok else (JobState.FAILED, 1)
    assert store.finish(job_id, claim.attempt, state, exit_code=code, error=None if ok else ErrorCode.STEP_FAILED,
                        steps=[StepResult(name="s", exit_code=code, duration_s=0.1)]) == "ok"  # fmt: skip


def queued(store) -> list[str]:
    return store.client.zrange(store.keys.notify_queue, 0, -1)


def test_a_branch_failed_then_fixed_mails_once_and_chats_once(api, store, notifier, mailbox, chat, hook):
    subscribe(api, {"on": ["fixed"], "email": ["team@example.com", "lead@example.com"], "branch": "main"})
    subscribe(api, {"on": ["fixed"], "chat": chat.url("/hooks/T0/B0/x")})
    failures = subscribe(api, {"on": ["failed"], "webhook": hook.url("/farm")})

    first = submit(api, "main")
    finish(store, first, ok=False)
    notifier.drain()
    assert not mailbox.got and not chat.got  # a failure: only the webhook subscribed to failures hears
    [(headers, body)] = hook.got
    assert verify(SECRET, headers["x-farm-timestamp"], body, headers["x-farm-signature"])
    sent = json.loads(body)
    assert (headers["x-farm-event"], sent["id"], sent["subscription"], sent["state"]) == ("job.failed", first, failures, "failed")

    second = submit(api, "main")
    finish(store, second, ok=True)
    notifier.drain()
    [(to, mail)] = mailbox.got
    assert sorted(to) == ["lead@example.com", "team@example.com"]
    assert mail["Subject"] == f"[farm] job {second[:12]} on main is fixed"
    assert second in mail.get_payload() and "with the same branch and name failed" in mail.get_payload()
    [(headers, body)] = chat.got
    assert headers["content-type"] == "application/json"
    text = json.loads(body)["text"]
    assert "on `main` is fixed" in text and second[:12] in text
    assert len(hook.got) == 1  # a fix is no failure

    # Fixed once: a success after a success says nothing; another branch has a history of its own.
    finish(store, submit(api, "main"), ok=True)
    finish(store, submit(api, "dev"), ok=False)
    finish(store, submit(api, "dev"), ok=True)
    notifier.drain()
    assert len(mailbox.got) == 1 and len(chat.got) == 2 and len(hook.got) == 2  # dev's fix chats (any branch), its failure posts
    assert "`dev`" in json.loads(chat.got[1][1])["text"]
    assert queued(store) == []


def test_a_run_is_told_of_by_its_name_once_naming_what_failed(api, store, notifier, mailbox):
    subscribe(api, {"on": ["failed", "fixed"], "email": ["team@example.com"]})
    run = {"name": "ci", "labels": {"branch": "main"},
           "jobs": [{"name": "build", "steps": STEP}, {"name": "test", "needs": ["build"], "steps": STEP}]}  # fmt: skip
    broken = api.post("/v1/runs", json=run).json()
    finish(store, broken["jobs"][0], ok=False)  # its test is cancelled (needs_failed): the run failed
    notifier.drain()
    [(_, mail)] = mailbox.got  # the run's, not one a job
    assert mail["Subject"] == "[farm] run ci on main failed"
    assert "build (failed, step_failed)" in mail.get_payload() and "test (cancelled, needs_failed)" in mail.get_payload()

    fixed = api.post("/v1/runs", json=run).json()
    finish(store, fixed["jobs"][0], ok=True)
    finish(store, fixed["jobs"][1], ok=True)
    notifier.drain()
    assert [m["Subject"] for _, m in mailbox.got] == ["[farm] run ci on main failed", "[farm] run ci on main is fixed"]
    assert fixed["id"] in mailbox.got[1][1].get_payload()


def test_a_failing_receiver_is_retried_then_kept_as_a_dead_letter(api, store, notifier, chat, hook):
    chat.status, hook.status = 500, 410
    retried = subscribe(api, {"on": ["always"], "chat": chat.url("/hooks/down")})
    gone = subscribe(api, {"on": ["always"], "webhook": hook.url("/gone")})
    job = submit(api, None)
    finish(store, job, ok=True)
    wait_for(lambda: notifier.run_once() == 0 and len(chat.got) == 3, 10, what="three tries")
    letters = api.get("/v1/notifications/dead-letters").json()["dead_letters"]
    by_sub = {d["subscription"]: d for d in letters}
    assert by_sub[retried] | {"at": ""} == {
        "id": f"job:{job}/{retried}",
        "subscription": retried,
        "channel": "chat",
        "kind": "job",
        "target": job,
        "what": "succeeded",
        "error": "HTTP 500",
        "attempts": 3,
        "at": "",
    }
    assert (by_sub[gone]["error"], by_sub[gone]["attempts"], len(hook.got)) == ("HTTP 410", 1, 1)  # a 4xx: retrying cannot help
    assert queued(store) == []
    assert not store.client.keys(store.keys.notify_message("*"))
    assert api.get("/v1/notifications/dead-letters", params={"tenant": "other"}).status_code == 403
    assert api.get("/v1/notifications/dead-letters", params={"limit": 1}).json()["dead_letters"] == letters[:1]


def test_a_jobs_end_only_queues_and_costs_others_nothing(api, store, settings, chat):
    chat.delay_s = 2.0
    subscribe(api, {"on": ["always"], "chat": chat.url("/slow")})
    job = submit(api, "main")
    t0 = time.monotonic()
    finish(store, job, ok=True)
    assert time.monotonic() - t0 < 1.0 and not chat.got
    assert queued(store) == [f"job:{job}"]

    quiet = submit(api, "main", token=OTHER)
    finish(store, quiet, ok=False)
    assert queued(store) == [f"job:{job}"] and not store.client.exists(store.keys.outcomes("other"))

    # Two notifiers (two API replicas) claim what is due at once: the slow post is sent once.
    a, b = Notifier(store, settings), Notifier(store, settings)
    try:
        sending = threading.Thread(target=a.drain)
        sending.start()
        wait_for(lambda: chat.got or store.client.zscore(store.keys.notify_queue, f"job:{job}") is None, 5, what="a's claim")
        b.drain()
        sending.join(10)
        b.drain()
    finally:
        a.close()
        b.close()
    assert len(chat.got) == 1 and queued(store) == []


def test_the_edge_refuses_what_a_tenant_may_not_subscribe(api, chat):
    def refused(body, **kw):
        r = api.post("/v1/notifications", json=body, **kw)
        assert r.status_code == 422, r.text
        return [e["loc"] for e in r.json()["detail"]]

    assert refused({"on": ["fixed"], "chat": "http://127.0.0.2:8080/x"}) == [["body", "chat"]]  # not on the allowlist
    assert refused({"on": ["fixed"], "email": ["a@example.com", "not an address"]}) == [["body", "email", 1]]
    assert refused({"on": ["never"], "email": ["a@example.com"]}) == [["body", "on", 0]]
    assert refused({"on": ["fixed"]}) == [["body"]]  # no channel
    other = {"Authorization": f"Bearer {OTHER}"}
    assert refused({"on": ["fixed"], "webhook": chat.url("/x")}, headers=other) == [
        ["body", "webhook"]
    ]  # no secret, no allowlist

    ids = [subscribe(api, {"on": ["failed"], "email": [f"n{i}@example.com"]}) for i in range(5)]
    r = api.post("/v1/notifications", json={"on": ["failed"], "email": ["six@example.com"]})
    assert r.status_code == 409 and "max_subscriptions" in r.json()["detail"]
    assert [s["id"] for s in api.get("/v1/notifications").json()["subscriptions"]] == ids

    # A tenant sees and changes its own only; the admin names the tenant.
    assert api.get("/v1/notifications", headers=other).json() == {"subscriptions": []}
    assert api.get("/v1/notifications", params={"tenant": "team"}, headers=other).status_code == 403
    assert api.delete(f"/v1/notifications/{ids[0]}", headers=other).status_code == 404
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert len(api.get("/v1/notifications", params={"tenant": "team"}, headers=admin).json()["subscriptions"]) == 5
    assert subscribe(api, {"on": ["fixed"], "email": ["ops@example.com"]}, params={"tenant": "other"}, headers=admin)
    assert api.delete(f"/v1/notifications/{ids[0]}").json()["id"] == ids[0]
    assert api.delete(f"/v1/notifications/{ids[0]}").status_code == 404
    assert api.delete("/v1/notifications/not-an-id").status_code == 422


def test_mail_goes_over_starttls_with_a_login(tmp_path):
    """The seam itself (farm.notifier.send_mail) against a server that demands STARTTLS and a
    login over it: the CA is checked, and a password never goes over plain text."""
    import ssl

    openssl = require_tool("openssl", "openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret")

    box = Mailbox(tls_context=context, require_starttls=True, authenticator=authenticator, auth_require_tls=True)
    plain = Mailbox(authenticator=authenticator, auth_require_tls=False)
    try:
        conf = NotifySettings(smtp_host="127.0.0.1", smtp_port=box.port, smtp_from="farm@ci.example.com", smtp_starttls="required",
                              smtp_username="farm", smtp_password="s3cret", smtp_ca_file=cert, timeout_s=5)  # fmt: skip
        send_mail(conf, ["team@example.com"], "[farm] over TLS", "hello\n")
        [(to, mail)] = box.got
        assert (to, mail["Subject"], mail["From"], logins) == (["team@example.com"], "[farm] over TLS", "farm@ci.example.com",
                                                              [(b"farm", b"s3cret")])  # fmt: skip
        with pytest.raises(ssl.SSLError):  # a certificate the system's CAs do not sign
            send_mail(conf.model_copy(update={"smtp_ca_file": None}), ["team@example.com"], "x", "x")
        with pytest.raises(Exception, match="over TLS only"):  # no STARTTLS offered: the password is not sent
            send_mail(
                conf.model_copy(update={"smtp_port": plain.port, "smtp_starttls": "when_offered"}), ["t@example.com"], "x", "x"
            )
        assert len(logins) == 1 and not plain.got
    finally:
        box.close()
        plain.close()


def test_the_cli_manages_subscriptions_and_the_farm_sends(make, store, serve_app, mailbox):
    served = serve_app(create_app(make(enabled=True, interval_s=0.05)))
    env = {**os.environ, "FARM_URL": served.url, "FARM_TOKEN": TEAM, "COLUMNS": "100"}

    def farm(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "farm.cli", "notify", *args], env=env, capture_output=True, text=True, timeout=60,
                           cwd=REPO)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    sub_id = farm(
        "add", "--on", "failed", "--on", "fixed", "--email", "team@example.com, lead@example.com", "--branch", "main"
    ).strip()
    assert len(sub_id) == 12
    listed = farm("ls")
    assert sub_id in listed and "failed,fixed" in listed and "team@example.com" in listed
    with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {TEAM}"}) as client:
        job = submit(client, "main")
        finish(store, job, ok=False)
    wait_for(lambda: mailbox.got, 10, what="the farm's own notifier to mail")
    assert mailbox.got[0][1]["Subject"] == f"[farm] job {job[:12]} on main failed"
    assert json.loads(farm("dead-letters", "--json")) == {"dead_letters": []}
    assert f"removed {sub_id}" in farm("rm", sub_id)
    assert json.loads(farm("ls", "--json")) == {"subscriptions": []}
