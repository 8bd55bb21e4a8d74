"""Durability: the embedded server is killed (SIGKILL) and restarted on its AOF."""

import time

from farm.models import JobSpec, JobState
from farm.store.client import connect
from farm.store.jobs import JobStore
from farm.store.server import EmbeddedRedis


def test_queued_and_finished_jobs_survive_a_server_crash(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis", fsync="everysec")
    url = server.start()
    store = JobStore(connect(url))
    queued = [store.enqueue(JobSpec(steps=[{"name": "s", "run": "true"}]), "t").id for _ in range(20)]
    done = store.enqueue(JobSpec(steps=[{"name": "s", "run": "true"}], priority=100), "t")
    claim = store.claim("default", "ex1", lease_s=30, grace_s=5)
    assert claim.job_id == done.id
    store.append_log(done.id, 1, "the output\n", cap=10_000)
    assert store.finish(done.id, 1, JobState.SUCCEEDED, exit_code=0, error=None, steps=[]) == "ok"
    time.sleep(1.5)  # past the everysec fsync window (a process crash alone would not need it)
    server.kill()

    again = EmbeddedRedis(tmp_path / "redis", fsync="everysec")
    assert again.start() == url  # same port and password after the restart
    try:
        store = JobStore(connect(url))
        assert store.get(done.id).state is JobState.SUCCEEDED
        assert "the output\n" in [c.data for c in store.read_log(done.id)]
        assert all(store.get(i).state is JobState.QUEUED for i in queued)
        claimed = [store.claim("default", "ex2", lease_s=30, grace_s=5).job_id for _ in queued]
        assert claimed == queued  # the queue came back whole and in order
    finally:
        again.stop()


def test_the_embedded_server_dies_with_the_process_that_started_it(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    code = (
        "from pathlib import Path; from farm.store.server import EmbeddedRedis; import time; "
        f"s = EmbeddedRedis(Path({str(tmp_path / 'r')!r})); s.start(); print(s.proc.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    server_pid = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()

    def gone() -> bool:
        try:
            with open(f"/proc/{server_pid}/stat") as f:
                return f.read().split()[2] == "Z"  # dead, waiting to be reaped
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 10
    while not gone():
        assert time.monotonic() < deadline, "the server outlived farm"
        time.sleep(0.1)


def test_a_full_embedded_server_refuses_writes_with_a_503(make_settings, tmp_path):
    """maxmemory with no eviction: a flood of jobs ends in refusals the client can act on,
    not in a machine out of memory (nor in jobs silently evicted)."""
    from fastapi.testclient import TestClient

    from farm.api import create_app

    server = EmbeddedRedis(tmp_path / "small", maxmemory="3mb")
    url = server.start()
    try:
        settings = make_settings(redis_url=url, admin_token="admin")
        with TestClient(create_app(settings), headers={"Authorization": "Bearer admin"}) as api:
            body = {"steps": [{"name": "s", "run": "x" * 50_000}]}
            codes = [api.post("/v1/jobs", json=body).status_code for _ in range(200)]
            assert codes[0] == 201 and codes[-1] == 503, codes
            assert "full" in api.post("/v1/jobs", json=body).json()["detail"]
            assert api.get("/healthz").status_code == 200  # reads still work
    finally:
        server.stop()
