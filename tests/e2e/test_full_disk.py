"""The farm's disk fills while jobs run, and is freed: farm refuses new work with 503s and a
reason (never a 500), says it is degraded, loses no acknowledged job, and runs jobs again
within 30 s of space coming back, with nothing restarted by hand. The data dir is a 64 MiB
filesystem of the test's own (tmpfs), filled with a file and freed by deleting it."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import wait_all


@pytest.fixture
def small_disk(tmp_path: Path):
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


class Filler:
    """Keeps the filesystem full: what a finished job frees is taken again at once."""

    def __init__(self, path: Path) -> None:
        self.path, self.done = path, threading.Event()
        self.f = path.open("wb", buffering=0)
        self.thread = threading.Thread(target=self.fill, daemon=True)
        self.thread.start()

    def fill(self) -> None:
        while not self.done.is_set():
            for size in (1 << 20, 1 << 12):
                try:
                    while True:
                        self.f.write(b"\0" * size)
                except OSError:
                    pass
            self.done.wait(0.02)

    def free(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.f.close()
        self.path.unlink()


def submit(client: httpx.Client, run: str = "true") -> httpx.Response:
    return client.post("/v1/jobs", json={"steps": [{"name": "s", "run": run}]})


def test_a_full_disk_refuses_work_with_503s_and_the_farm_resumes_when_freed(start_farm, small_disk: Path):
    farm, client = start_farm("up", "--executors", "2", "--runtime", "local", env={"FARM_DATA_DIR": str(small_disk / "farm"),
                              "FARM_EXECUTORS__MIN_FREE_DISK_BYTES": str(8 << 20)})  # fmt: skip
    accepted = [submit(client, "sleep 0.5").json()["id"] for _ in range(4)]
    wait_for(lambda: client.get("/healthz").status_code == 200, 10)

    filler = Filler(small_disk / "filler")
    time.sleep(1.0)  # the server's next AOF write meets the full disk
    codes: dict[int, int] = {}
    reasons = set()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        r = submit(client, "sleep 0.2")
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
        if r.status_code == 201:
            accepted.append(r.json()["id"])
        elif r.status_code == 503:
            reasons.add(r.json()["detail"])
        time.sleep(0.2)
    assert 500 not in codes, codes
    assert codes.get(503), codes  # a full disk refuses new work
    assert any("disk" in why or "persist" in why for why in reasons), reasons
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "degraded", health.text
    queue = client.get("/v1/queue")
    assert queue.status_code == 200 and queue.json()["degraded"], queue.text
    assert "farm_degraded 1.0" in client.get("/metrics").text

    filler.free()
    freed = time.monotonic()
    wait_for(lambda: submit(client, "true").status_code == 201, 30, interval=0.5, what="submits to be accepted again")
    late = submit(client, "echo again").json()["id"]
    done = wait_all(client, [late], timeout=30 - (time.monotonic() - freed))
    assert done[0]["state"] == "succeeded", done
    assert time.monotonic() - freed < 30
    results = wait_all(client, accepted, timeout=60)
    assert all(j["state"] == "succeeded" for j in results), [(j["id"], j["state"], j.get("error")) for j in results]
    assert client.get("/healthz").json() == {"status": "ok", "reasons": []}
    assert not client.get("/v1/queue").json()["degraded"]
