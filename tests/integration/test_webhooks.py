"""Result webhooks arrive signed, are retried, and go only to allowlisted hosts."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.settings import hash_token
from farm.webhooks import Deliverer, allowed, signature, verify
from tests.conftest import wait_for

TOKEN, SECRET = "hook-tenant-token", "whsec-test"


class Receiver:
    """A real HTTP server on 127.0.0.1 that records what it gets; fails the first `fail` posts."""

    def __init__(self, fail: int = 0) -> None:
        self.got: list[tuple[dict, bytes]] = []
        self.fail = fail
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.fail > 0:
                    outer.fail -= 1
                    self.send_response(503)
                else:
                    outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver(fail=2)
    yield r
    r.close()


@pytest.fixture
def settings(make_settings, receiver):
    return make_settings(
        tenants=[{"name": "hooked", "token_sha256": hash_token(TOKEN), "webhook_secret": SECRET,
                  "webhook_hosts": [f"127.0.0.1:{receiver.port}"]}],
        webhooks={"backoff_s": 0.05, "interval_s": 0.05},
        api={"run_reaper": False},
    )


def test_webhook_arrives_signed_after_retries(settings, receiver, run_executor):
    run_executor(settings)
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        job = api.post("/v1/jobs", json={"steps": [{"name": "s", "run": "exit 3"}],
                                         "callback_url": f"http://127.0.0.1:{receiver.port}/farm-hook?x=1"}).json()
        wait_for(lambda: receiver.got, 20, what="the webhook")
        headers, body = receiver.got[0]
        assert verify(SECRET, headers["x-farm-timestamp"], body, headers["x-farm-signature"])
        assert not verify("other-secret", headers["x-farm-timestamp"], body, headers["x-farm-signature"])
        payload = json.loads(body)
        assert (payload["id"], payload["state"], payload["exit_code"]) == (job["id"], "failed", 3)
        assert headers["x-farm-event"] == "job.finished"
        wait_for(lambda: api.get(f"/v1/jobs/{job['id']}").json()["webhook"] == "delivered", 5, what="delivered")
        assert len(receiver.got) == 1


def test_callbacks_outside_the_allowlist_are_refused(settings, receiver):
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        for url in ["http://127.0.0.1:1/x", "http://169.254.169.254/latest/meta-data", f"http://user@127.0.0.1:{receiver.port}/",
                    "file:///etc/passwd", "ftp://127.0.0.1/"]:
            r = api.post("/v1/jobs", json={"steps": [{"name": "s", "run": "true"}], "callback_url": url})
            assert r.status_code == 422, url


def test_delivery_gives_up_after_max_attempts(store, make_settings):
    dead = Receiver(fail=100)
    settings = make_settings(
        tenants=[{"name": "t", "token_sha256": hash_token("x"), "webhook_secret": SECRET, "webhook_hosts": [f"127.0.0.1:{dead.port}"]}],
        webhooks={"backoff_s": 0.01, "max_attempts": 3},
    )
    from farm.models import JobSpec

    job = store.enqueue(JobSpec(steps=[{"name": "s", "run": "true"}], callback_url=f"http://127.0.0.1:{dead.port}/"), "t")
    store.cancel(job.id)
    deliverer = Deliverer(store, settings)
    try:
        wait_for(lambda: deliverer.run_once() == 0 and store.get(job.id).webhook == "failed", 10, interval=0.05, what="give up")
        assert store.client.hget(store.keys.job(job.id), "webhook_attempts") == "3"
    finally:
        deliverer.close()
        dead.close()


def test_signature_and_allowlist_rules():
    assert signature("s", "1700000000", b"{}") == signature("s", "1700000000", b"{}")
    assert not verify("s", "1700000000", b"{}", signature("s", "1700000000", b"{}"), now=1700001000)
    assert allowed("https://ci.example.com/hook", ["ci.example.com"])
    assert allowed("http://ci.example.com:8080/hook", ["ci.example.com:8080"])
    assert not allowed("http://ci.example.com:8081/hook", ["ci.example.com:8080"])
    assert not allowed("https://evil.example.com/", ["ci.example.com"])
    assert not allowed("https://ci.example.com.evil.net/", ["ci.example.com"])
