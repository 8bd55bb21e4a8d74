"""Where a checkout may connect (issue 24, item 4): refused at submit by what a host
resolves to, recorded with the job when exempt, and refused again by the executor itself,
before git runs, for a job whose stored URL leads to this node. Real Redis, the real API,
a real executor loop with the local runtime, a real `git daemon` on loopback."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from farm.api import create_app
from farm.api.resolver import BoundedResolver
from farm.models import ErrorCode, JobSpec, JobState
from farm.settings import hash_token
from farm.store.server import free_port
from tests.conftest import wait_for
from tests.integration.test_executor_local import full_log, wait_done

ADMIN, ALICE, MIRROR = "admin-secret", "alice-secret", "mirror-secret"
STEP = {"steps": [{"name": "s", "run": "true"}]}
HOSTS = {"git.example.com": ["140.82.112.3"], "rebound.example.com": ["140.82.112.3", "10.0.0.7"],
         "git.corp.internal": ["10.0.0.5"], "metadata.example.com": ["169.254.169.254"]}  # fmt: skip


def fake(host: str) -> list[str] | None:
    return HOSTS.get(host.rstrip("."))


def settings_with(make_settings, *prefixes: str):
    return make_settings(admin_token=ADMIN, tenants=[
        {"name": "alice", "token_sha256": hash_token(ALICE)},
        {"name": "mirror", "token_sha256": hash_token(MIRROR), "git_url_prefixes": list(prefixes)},
    ])  # fmt: skip


@pytest.fixture
def api(make_settings) -> Iterator[TestClient]:
    app = create_app(settings_with(make_settings, "https://git.corp.internal/"))
    app.state.resolve = fake
    with TestClient(app) as client:
        yield client


def post(api: TestClient, token: str, url: str, path: str = "/v1/jobs"):
    return api.post(path, json={**STEP, "source": {"git": {"url": url}}}, headers={"Authorization": f"Bearer {token}"})


def test_a_name_is_refused_at_submit_by_every_address_it_resolves_to(api):
    for url, why in [("https://rebound.example.com/x", "resolves to 10.0.0.7 (private)"),
                     ("https://git.corp.internal/x", "resolves to 10.0.0.5 (private)"),
                     ("git@metadata.example.com:x", "resolves to 169.254.169.254 (link-local)")]:  # fmt: skip
        r = post(api, ALICE, url)
        assert r.status_code == 403 and why in r.json()["detail"], r.text
    assert post(api, ALICE, "https://git.example.com/x").status_code == 201
    assert post(api, ALICE, "https://nowhere.example.com/x").status_code == 201  # the checkout checks it again


def test_a_lookup_that_does_not_answer_lets_the_submit_through_within_its_bound(make_settings):
    app = create_app(settings_with(make_settings))
    app.state.resolve = BoundedResolver(0.3, lookup=lambda host: time.sleep(5) or ["127.0.0.1"])
    with TestClient(app) as c:
        t0 = time.monotonic()
        assert post(c, ALICE, "https://slow.example.com/x").status_code == 201
        assert time.monotonic() - t0 < 2


def test_the_exemption_is_recorded_with_the_job_and_derived_again_on_rerun(api, store):
    def claimed(job_id: str) -> bool:
        claim = store.claim("default", "ex-probe", lease_s=60, grace_s=5)
        assert claim is not None and claim.job_id == job_id
        return claim.source_exempt

    plain = post(api, ALICE, "https://git.example.com/x").json()["id"]
    assert claimed(plain) is False
    mirrored = post(api, MIRROR, "https://git.corp.internal/app.git")
    assert mirrored.status_code == 201, mirrored.text
    assert claimed(mirrored.json()["id"]) is True
    assert claimed(post(api, ADMIN, "https://127.1/x").json()["id"]) is True
    r = api.post(f"/v1/jobs/{mirrored.json()['id']}/rerun", headers={"Authorization": f"Bearer {MIRROR}"})
    assert r.status_code == 201 and claimed(r.json()["id"]) is True
    r = api.post(f"/v1/jobs/{plain}/rerun", headers={"Authorization": f"Bearer {ALICE}"})
    assert r.status_code == 201 and claimed(r.json()["id"]) is False
    r = api.post("/v1/runs", json={"name": "ci", "jobs": [{**STEP, "source": {"git": {"url": "https://git.corp.internal/a"}}}]},
                 headers={"Authorization": f"Bearer {MIRROR}"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert claimed(r.json()["jobs"][0]) is True


def test_a_tenant_cannot_declare_its_own_source_exempt(api):
    body = {**STEP, "source": {"git": {"url": "https://127.1/x"}}}
    for extra in ({"source_exempt": True}, {"source": {"git": {"url": "https://127.1/x", "exempt": True}}}):
        r = api.post("/v1/jobs", json={**body, **extra}, headers={"Authorization": f"Bearer {ALICE}"})
        assert r.status_code == 422, r.text
        r = api.post("/v1/runs", json={"name": "ci", "jobs": [{**body, **extra}]}, headers={"Authorization": f"Bearer {ALICE}"})
        assert r.status_code == 422, r.text


# -- at checkout ------------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real `git daemon` on 127.0.0.1 serving one repository: its URL, and its log (one
    "Connection from" line per connection it took)."""
    served = tmp_path / "served"
    work = tmp_path / "work"
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "VERSION").write_text("from-the-daemon\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(served / "repo.git")], check=True)
    port, log = free_port(), tmp_path / "daemon.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--verbose", f"--base-path={served}",
                                 "--listen=127.0.0.1", f"--port={port}", str(served)], stderr=err)  # fmt: skip
    wait_for(lambda: _accepts(port), 10, what="git daemon")
    wait_for(lambda: "Connection from" in log.read_text(), 5, what="the daemon to log the probe")
    yield f"git://127.0.0.1:{port}/repo.git", log
    proc.terminate()
    proc.wait(10)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def connections(log: Path) -> int:
    return log.read_text().count("Connection from")


def test_the_executor_refuses_a_stored_url_to_this_node_before_git_connects(store, make_settings, run_executor, listener):
    port, heard = listener
    urls = {f"https://127.1:{port}/x": "git host 127.1 is 127.0.0.1 (loopback): refused; ",
            f"https://2130706433:{port}/x": "git host 2130706433 is 127.0.0.1 (loopback): refused; ",
            f"https://0x7f000001:{port}/x": "git host 0x7f000001 is 127.0.0.1 (loopback): refused; ",
            f"https://[::ffff:127.0.0.1]:{port}/x": "git host ::ffff:127.0.0.1 is ::ffff:7f00:1 (loopback: 127.0.0.1): refused; ",
            f"http://localhost.:{port}/x": "git host localhost. names this node (localhost): refused; ",
            f"ssh://127.1:{port}/x": "git host 127.1 is 127.0.0.1 (loopback): refused; ",
            "git@127.1:x": "git host 127.1 is 127.0.0.1 (loopback): refused; "}  # fmt: skip
    host = socket.gethostname().lower()
    try:
        if "127.0.0.1" in {i[4][0] for i in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}:
            urls[f"https://{host}:{port}/x"] = f"git host {host} resolves to 127.0.0.1 (loopback): refused; "
    except OSError:
        pass
    run_executor(make_settings())
    jobs = {store.enqueue(JobSpec(source={"git": {"url": url}}, **STEP), "t").id: line for url, line in urls.items()}
    for job_id, line in jobs.items():
        done = wait_done(store, job_id)
        assert (done.state, done.error) == (JobState.FAILED, ErrorCode.SOURCE_FAILED)
        log = full_log(store, job_id)
        assert line in log and "git_url_prefixes" in log and "$ git" not in log, log
    assert heard == []


def test_the_same_url_is_refused_or_cloned_by_its_exemption(store, make_settings, run_executor, daemon):
    url, log = daemon
    before = connections(log)
    run_executor(make_settings())
    spec = JobSpec(source={"git": {"url": url}}, steps=[{"name": "v", "run": "cat VERSION"}])
    refused = wait_done(store, store.enqueue(spec, "t").id)
    assert (refused.state, refused.error) == (JobState.FAILED, ErrorCode.SOURCE_FAILED)
    assert "git host 127.0.0.1 is 127.0.0.1 (loopback): refused" in full_log(store, refused.id)
    assert connections(log) == before
    cloned = wait_done(store, store.submit(spec, "t", source_exempt=True).job.id)
    assert cloned.state is JobState.SUCCEEDED, full_log(store, cloned.id)
    assert "from-the-daemon" in full_log(store, cloned.id) and connections(log) > before


def test_a_tenants_prefix_reaches_the_executor_through_the_api(make_settings, run_executor, daemon):
    url, _ = daemon
    settings = settings_with(make_settings, url.rsplit("/", 1)[0] + "/")
    run_executor(settings)
    with TestClient(create_app(settings)) as api:
        assert post(api, ALICE, url).status_code == 403
        r = api.post("/v1/jobs", json={"source": {"git": {"url": url}}, "steps": [{"name": "v", "run": "cat VERSION"}]},
                     headers={"Authorization": f"Bearer {MIRROR}"})  # fmt: skip
        assert r.status_code == 201, r.text
        store = api.app.state.store
        done = wait_done(store, r.json()["id"])
        assert done.state is JobState.SUCCEEDED and "from-the-daemon" in full_log(store, done.id)
