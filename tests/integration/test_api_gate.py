"""The API's trust boundary on a real server: who may send what, how much, and how long a
tenant may hold the server (uvicorn on 127.0.0.1, real Redis)."""

from __future__ import annotations

import ipaddress
import json
import socket
import time

import httpx
import pytest

from farm.api import create_app
from farm.api.server import BoundedHttpToolsProtocol
from farm.settings import hash_token
from tests.conftest import IN_CI, wait_for

ADMIN, ALICE, BOB, MIRROR = "admin-secret", "alice-secret", "bob-secret", "mirror-secret"
STEP = {"steps": [{"name": "s", "run": "true"}]}


@pytest.fixture
def app(make_settings):
    settings = make_settings(
        admin_token=ADMIN,
        tenants=[
            {"name": "alice", "token_sha256": hash_token(ALICE)},
            {"name": "bob", "token_sha256": hash_token(BOB)},
            {"name": "mirror", "token_sha256": hash_token(MIRROR), "allow_host_network": True,
             "git_url_prefixes": ["file:///srv/mirrors/"]},
        ],
        api={"max_followers_per_tenant": 20},
    )  # fmt: skip
    return create_app(settings)


@pytest.fixture
def served(app, serve_app):
    return serve_app(app)


def client(served, token=ALICE) -> httpx.Client:
    return httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_a_body_over_the_limit_is_413_and_unread(served):
    big = b'{"steps": [{"name": "s", "run": "' + b"x" * (4 * 1024 * 1024) + b'"}]}'
    with client(served) as c:
        r = c.post("/v1/jobs", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        assert "byte limit" in r.json()["detail"]

        def chunks():
            for i in range(0, len(big), 65536):
                yield big[i : i + 65536]

        r = c.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})  # chunked: no length
        assert r.status_code == 413, r.text
        # A small body still works on the same server.
        assert c.post("/v1/jobs", json=STEP).status_code == 201


def test_the_token_is_checked_before_the_body_is_read(served):
    """An unauthenticated 4 MiB body is refused from its headers alone: the server answers
    401 while the client has sent only the first chunk (the rest never goes out)."""
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    try:
        head = (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 4194304\r\n\r\n")  # fmt: skip
        sock.sendall(head + b"{" * 1024)
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    finally:
        sock.close()


def test_a_tenant_gets_403_from_an_admin_route_before_validation(served):
    with client(served) as c:
        r = c.put("/v1/pools/default/policy", json={"kind": "no-such-kind", "junk": 1})
        assert r.status_code == 403, r.text
    with client(served, ADMIN) as c:
        assert c.put("/v1/pools/default/policy", json={"kind": "no-such-kind"}).status_code == 422


def test_a_422_does_not_echo_the_input(served):
    with client(served) as c:
        r = c.post("/v1/jobs", json={**STEP, "timout_s": "y" * 60_000})
        assert r.status_code == 422
        assert len(r.content) < 1000, len(r.content)
        assert r.json()["detail"][0]["loc"] == ["body", "timout_s"]
        r = c.post("/v1/jobs", json={"steps": [{"name": "s", "run": "z" * 200_000}]})
        assert r.status_code == 422 and len(r.content) < 1000


@pytest.mark.parametrize(
    "spec, loc",
    [
        ({"env": {f"V{i}": "x" for i in range(257)}}, ["body", "env"]),
        ({"env": {"BIG": "x" * 40_000}}, ["body", "env", "BIG"]),
        ({"secrets": {f"S{i}": "secret" for i in range(65)}}, ["body", "secrets"]),
        ({"caches": [{"key": "../../../etc/x", "paths": ["deps"]}]}, ["body", "caches", 0, "key"]),
        ({"caches": [{"key": "pip-{{ hashFiles('../../etc/passwd') }}", "paths": ["deps"]}]}, ["body", "caches", 0, "key"]),
        ({"caches": [{"key": "k", "restore_keys": ["/etc"], "paths": ["deps"]}]}, ["body", "caches", 0, "restore_keys"]),
        # Found by a red-team run: accepted, then failing on the executor until the retries ran out.
        ({"steps": [{"name": "s", "run": "echo a\u0000b"}]}, ["body", "steps", 0, "run"]),
        ({"env": {"A": "x\u0000"}}, ["body", "env", "A"]),
        ({"source": {"git": {"url": "https://h/x\u0000"}}}, ["body", "source", "git", "url"]),
        ({"artifacts": ["a**b"]}, ["body", "artifacts"]),
    ],
)
def test_caps_and_cache_keys_are_checked_at_submit(served, spec, loc):
    with client(served) as c:
        r = c.post("/v1/jobs", json={**STEP, **spec})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == loc


@pytest.mark.parametrize(
    "spec",
    [
        {"network": "host"},
        {"source": {"git": {"url": "file:///etc"}}},
        {"source": {"git": {"url": "/srv/repo"}}},
        {"source": {"git": {"url": "ext::sh -c touch% /tmp/pwned"}}},
        {"source": {"git": {"url": "git://example.org/x.git"}}},
        {"source": {"git": {"url": "http://example.org/x.git"}}},
        # The checkout runs on the executor's host: its loopback and a cloud's metadata service.
        {"source": {"git": {"url": "https://127.0.0.1:6379/x.git"}}},
        {"source": {"git": {"url": "ssh://git@localhost:22/x.git"}}},
        {"source": {"git": {"url": "git@[::1]:x.git"}}},
        {"source": {"git": {"url": "https://169.254.169.254/latest/meta-data"}}},
    ],
)
def test_what_reaches_past_the_attempt_is_a_tenant_permission(served, spec):
    with client(served) as c:
        r = c.post("/v1/jobs", json={**STEP, **spec})
        assert r.status_code == 403, r.text
    with client(served, ADMIN) as c:
        assert c.post("/v1/jobs", json={**STEP, **spec}).status_code == 201


# An outside tester's URLs (issue 24): accepted, and their checkouts reached the node.
LOOPBACK_SPELLINGS = ["https://127.1:6379/x", "https://2130706433:6379/x", "https://0x7f000001:6379/x", "https://0:6379/x",
                      "https://0177.0.0.1:6379/x", "https://[::ffff:127.0.0.1]:6379/x", "https://[::ffff:7f00:1]/x",
                      "https://localhost.:6379/x", "https://LOCALHOST/x", "https://%31%32%37.0.0.1/x", "ssh://127.1/x",
                      "ssh://git@[::1]/x", "git@127.1:x", "git@0x7f000001:x", "https://10.0.0.1/x", "https://192.168.1.1/x",
                      "https://100.64.0.1/x", "https://[fd00::1]/x", "https://[fe80::1]/x"]  # fmt: skip


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_every_spelling_of_a_host_that_is_not_public_is_403_for_a_tenant(served, url):
    with client(served) as c:
        r = c.post("/v1/jobs", json={**STEP, "source": {"git": {"url": url}}})
        assert r.status_code == 403, r.text
        assert "its host" in r.json()["detail"] and "git_url_prefixes" in r.json()["detail"]
        r = c.post("/v1/runs", json={"name": "ci", "jobs": [STEP, {**STEP, "source": {"git": {"url": url}}}]})
        assert r.status_code == 403 and r.json()["detail"].startswith("jobs[1]: "), r.text
    with client(served, ADMIN) as c:
        assert c.post("/v1/jobs", json={**STEP, "source": {"git": {"url": url}}}).status_code == 201


def test_a_host_name_is_403_by_the_addresses_it_resolves_to(served):
    """This machine's own name resolves to one of its addresses (/etc/hosts): never public."""
    host = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except OSError:
        addresses = set()
    why = None
    if not addresses:
        why = f"{host} does not resolve here"
    elif not any(ipaddress.ip_address(a).is_loopback or ipaddress.ip_address(a).is_private for a in addresses):
        why = f"{host} resolves to a public address here: {addresses}"
    if why is not None:
        if IN_CI:  # CI's machine names itself in /etc/hosts, as this one does: the test must run there
            pytest.fail(why)
        pytest.skip(why)
    with client(served) as c:
        r = c.post("/v1/jobs", json={**STEP, "source": {"git": {"url": f"https://{host}:6379/x"}}})
        assert r.status_code == 403 and f"its host '{host.lower()}' resolves to " in r.json()["detail"], r.text


def test_inputs_that_were_500s_are_422s(served, make_settings, serve_app):
    with client(served) as c:
        assert c.get("/v1/jobs", params={"cursor": "9" * 5000}).status_code == 422
    hooked = serve_app(create_app(make_settings(tenants=[{"name": "alice", "token_sha256": hash_token(ALICE),
                                                          "webhook_secret": "s", "webhook_hosts": ["hooks.example.com"]}])))  # fmt: skip
    with client(hooked) as c:
        for url in ("http://hooks.example.com:99999/x", "https://hooks.example.com:65536/", "http://[::1/x"):
            r = c.post("/v1/jobs", json={**STEP, "callback_url": url})
            assert r.status_code == 422, (url, r.text)


def test_a_tenant_tags_images_under_its_own_name_only(make_settings, serve_app):
    """Found by a red-team run: a tenant rebuilt another's image (or farm/busybox, every
    step's default) on the host daemon, and the next job running it ran the trojan."""
    served = serve_app(create_app(make_settings(admin_token=ADMIN, executors={"runtime": "docker"},
                                                tenants=[{"name": "alice", "token_sha256": hash_token(ALICE)}])))  # fmt: skip
    build = {"kind": "image", "source": {"git": {"url": "https://git.example.com/app.git"}}}
    with client(served) as c:
        for tag in ("farm/busybox:latest", "bob/tools:1", "alicex/app:1"):
            r = c.post("/v1/jobs", json={**build, "build": {"tags": [tag]}})
            assert r.status_code == 403 and "must start with 'alice/'" in r.text, (tag, r.text)
        assert c.post("/v1/jobs", json={**build, "build": {"tags": ["alice/app:1", "alice/app:latest"]}}).status_code == 201
    with client(served, ADMIN) as c:
        assert c.post("/v1/jobs", json={**build, "build": {"tags": ["farm/busybox:latest"]}}).status_code == 201


def test_permissions_granted_to_a_tenant(served):
    with client(served, MIRROR) as c:
        assert c.post("/v1/jobs", json={**STEP, "network": "host"}).status_code == 201
        assert c.post("/v1/jobs", json={**STEP, "source": {"git": {"url": "file:///srv/mirrors/app.git"}}}).status_code == 201
        assert c.post("/v1/jobs", json={**STEP, "source": {"git": {"url": "file:///etc"}}}).status_code == 403
    with client(served) as c:  # ordinary sources need nothing
        for url in ("https://git.example.com/app.git", "ssh://git@git.example.com/app.git", "git@git.example.com:app.git"):
            assert c.post("/v1/jobs", json={**STEP, "source": {"git": {"url": url}}}).status_code == 201, url


def _follow_and_hang_up(port: int, job_id: str, token: str) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"GET /v1/jobs/{job_id}/log?follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    sock.recv(1024)  # the response has started: the follower is live
    sock.close()


def test_hung_up_followers_leave_the_server_answering(served, app):
    with client(served) as c:
        job = c.post("/v1/jobs", json=STEP).json()  # no executor: it stays queued, its log open
        for _ in range(60):
            _follow_and_hang_up(served.port, job["id"], ALICE)
        t0 = time.monotonic()
        assert c.get("/healthz").status_code == 200
        assert c.get(f"/v1/jobs/{job['id']}").status_code == 200
        assert c.get("/v1/queue").status_code == 200
        assert time.monotonic() - t0 < 1.0
        # Every follower ended with its client: the tenant's slots are free again.
        wait_for(lambda: not app.state.followers.count, 10, what="followers to end")
        assert c.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202


def test_followers_are_capped_per_tenant(served, app):
    with client(served) as c, client(served, BOB) as b:
        job = c.post("/v1/jobs", json=STEP).json()
        bobs = b.post("/v1/jobs", json=STEP).json()
        streams = []
        try:
            for _ in range(20):
                s = c.stream("GET", f"/v1/jobs/{job['id']}/log", params={"follow": "true"})
                streams.append(s)
                assert s.__enter__().status_code == 200
            r = c.get(f"/v1/jobs/{job['id']}/log", params={"follow": "true"})
            assert r.status_code == 429 and "Retry-After" in r.headers
            # Another tenant is not affected.
            with b.stream("GET", f"/v1/jobs/{bobs['id']}/log", params={"follow": "true"}) as s:
                assert s.status_code == 200
        finally:
            for s in streams:
                s.__exit__(None, None, None)
        wait_for(lambda: not app.state.followers.count, 10, what="followers to end")


def test_a_follow_ends_at_its_time_cap_and_resumes_at_an_offset(make_settings, serve_app, store):
    app = create_app(make_settings(admin_token=ADMIN, api={"follow_max_s": 1.0}))
    served = serve_app(app)
    with client(served, ADMIN) as c:
        job = c.post("/v1/jobs", json=STEP).json()
        t0 = time.monotonic()
        text = c.get(f"/v1/jobs/{job['id']}/log", params={"follow": "true"}).text
        assert time.monotonic() - t0 < 5
        assert "log follow ended after 1s" in text
        whole = c.get(f"/v1/jobs/{job['id']}/log").text
        assert c.get(f"/v1/jobs/{job['id']}/log", params={"offset": 5}).text == whole.encode()[5:].decode()


def test_requests_in_progress_are_capped_per_tenant(make_settings, serve_app):
    """A tenant holding `max_inflight_per_tenant` requests open (bodies it never finishes
    sending) gets a 429 for the next; other tenants are served, and the slots come back."""
    app = create_app(make_settings(admin_token=ADMIN, tenants=[{"name": "alice", "token_sha256": hash_token(ALICE)},
                                                              {"name": "bob", "token_sha256": hash_token(BOB)}],
                                   api={"max_inflight_per_tenant": 4}))  # fmt: skip
    served = serve_app(app)
    held = []
    try:
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
            sock.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {BOB}\r\nContent-Type: application/json\r\n"
                         "Content-Length: 100\r\n\r\n{".encode())  # fmt: skip
            held.append(sock)
        wait_for(lambda: _inflight(app).get("bob") == 4, 5, what="bob's requests to be in progress")
        with client(served, BOB) as b, client(served) as c:
            r = b.get("/v1/queue")
            assert r.status_code == 429 and r.headers["Retry-After"] == "1"
            assert c.get("/v1/queue").status_code == 200  # alice is served
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: not _inflight(app), 10, what="bob's slots to come back")
    with client(served, BOB) as b:
        assert b.get("/v1/queue").status_code == 200


def _hold(port: int, token: str, sent: bytes = b"{", length: int = 100) -> socket.socket:
    """A POST /v1/jobs whose body stops short of its Content-Length: the request stays in progress."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {length}\r\n\r\n".encode() + sent)  # fmt: skip
    return sock


def test_a_body_that_stops_short_is_408_at_its_deadline_and_frees_its_slot(make_settings, serve_app):
    """Issue 24: a body of 10 bytes of a Content-Length of 1000 got no answer, and held one of
    its tenant's in-progress slots until the connection died (16 of them: every request 429)."""
    app = create_app(make_settings(admin_token=ADMIN, tenants=[{"name": "bob", "token_sha256": hash_token(BOB)}],
                                   api={"max_inflight_per_tenant": 4, "body_timeout_s": 1.0}))  # fmt: skip
    served = serve_app(app)
    held = [_hold(served.port, BOB, b'{"steps": ', 1000) for _ in range(4)]
    try:
        t0 = time.monotonic()
        for sock in held:
            answer = sock.recv(4096)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"connection: close" in head.lower(), head
            assert "did not arrive within 1s" in json.loads(body)["detail"]
        assert 0.5 < time.monotonic() - t0 < 4
        assert all(sock.recv(1) == b"" for sock in held)  # and the server closed the connections
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: not _inflight(app), 5, what="bob's slots to come back")
    # All four slots are bob's again, at once: four requests in progress, none a 429.
    held = [_hold(served.port, BOB) for _ in range(4)]
    try:
        wait_for(lambda: _inflight(app).get("bob") == 4, 5, what="bob's requests to be in progress")
    finally:
        for sock in held:
            sock.close()
    # A body that arrives in parts, each well within the deadline, is not cut.
    sock = _hold(served.port, BOB, json.dumps(STEP).encode()[:5], len(json.dumps(STEP)))
    try:
        time.sleep(0.3)
        sock.sendall(json.dumps(STEP).encode()[5:])
        assert sock.recv(4096).startswith(b"HTTP/1.1 201"), "a complete body was refused"
    finally:
        sock.close()


def _inflight(app) -> dict[str, int]:
    """The gate's count of requests in progress, per tenant."""
    layer = app.middleware_stack
    while layer is not None and not hasattr(layer, "inflight"):
        layer = getattr(layer, "app", None)
    return layer.inflight if layer is not None else {}


class QuickHeads(BoundedHttpToolsProtocol):
    head_timeout_s = 1.0


def test_request_heads_are_bounded_in_size_and_time(app):
    """Found by a red-team run: httptools buffers any head (1.5 GB of header lines grew farm
    up by as much) and an idle connection is kept forever (20,000 exhausted its fds)."""
    import threading

    import uvicorn

    from farm.store.server import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=QuickHeads, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 15, what="uvicorn")
    try:
        big = socket.create_connection(("127.0.0.1", port), timeout=5)
        pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1024) for i in range(70))  # 70 KiB of headers
        big.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + pad + b"\r\n")
        answer = big.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        t0 = time.monotonic()
        assert idle.recv(1) == b""  # closed by the server
        assert 0.5 < time.monotonic() - t0 < 4
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            assert c.get("/healthz").status_code == 200  # an ordinary request is untouched
    finally:
        server.should_exit = True
        thread.join(10)
