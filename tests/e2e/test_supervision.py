"""`farm up` keeps itself whole: a killed embedded server or static executor comes back
(and is counted), nothing of its process tree listens beyond loopback, and SIGTERM stops it
whatever its clients do."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from farm.store.client import connect
from farm.store.executors import ExecutorRegistry
from farm.store.server import EmbeddedRedis
from tests.conftest import wait_for
from tests.e2e.conftest import cmdline, process_tree, wait_all

LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|\[::1\]|\[::ffff:127\.\d+\.\d+\.\d+\]):\d+$")


def listeners(pids: set[int]) -> list[tuple[str, str]]:
    """(local address, process) of every TCP and UDP socket these processes listen on."""
    out = subprocess.run(["ss", "-H", "-ltunp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.append((fields[4], re.findall(r'"([^"]+)"', line)[0] if '"' in line else "?"))
    return found


def test_no_socket_of_farm_up_listens_beyond_loopback(start_farm):
    farm, client = start_farm("up", "--executors", "2")
    ids = [client.post("/v1/jobs", json={"steps": [{"name": "s", "run": "true"}]}).json()["id"] for _ in range(4)]
    wait_all(client, ids, timeout=60)  # workers of every kind have started
    found = listeners(process_tree(farm.proc.pid))
    names = {name for _, name in found}
    assert {"gcs_server", "raylet"} <= names and any("valkey" in n for n in names), found  # the check sees Ray and Valkey
    outside = [(addr, name) for addr, name in found if not LOOPBACK.match(addr)]
    assert outside == []  # on Ray's defaults: *:PORT and 0.0.0.0:PORT


def _redis_url(farm_env: dict[str, str]) -> str:
    """The URL of the embedded server `farm up` runs (its port and password are in its dir)."""
    path = Path(farm_env["FARM_DATA_DIR"]) / "redis"
    return EmbeddedRedis(path, port=int((path / "port").read_text())).url


def test_a_killed_embedded_server_is_restarted_with_every_job(start_farm, farm_env):
    farm, client = start_farm("up", "--executors", "0")
    ids = [client.post("/v1/jobs", json={"steps": [{"name": "s", "run": "true"}]}).json()["id"] for _ in range(20)]
    server = next(p for p in process_tree(farm.proc.pid) if "valkey" in cmdline(p))
    subprocess.run(["kill", "-KILL", str(server)], check=True)
    killed_at = time.monotonic()

    def healthy() -> bool:
        try:
            return client.get("/healthz", timeout=2).status_code == 200
        except Exception:  # noqa: BLE001 - the server is away meanwhile
            return False

    wait_for(lambda: not healthy() or time.monotonic() - killed_at > 1, 5)
    wait_for(healthy, 10, interval=0.1, what="/healthz to answer 200 again")
    assert time.monotonic() - killed_at < 10
    listed = client.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
    assert sorted(j["id"] for j in listed) == sorted(ids)
    metrics = client.get("/metrics").text
    assert 'farm_restarts_total{component="redis"} 1.0' in metrics
    assert client.get("/v1/queue").json()["restarts"] == {"redis": 1}


def test_a_killed_static_executor_is_replaced_in_its_slot(start_farm, farm_env):
    farm, client = start_farm("up", "--executors", "2")
    registry = ExecutorRegistry(connect(_redis_url(farm_env)))

    def pids() -> dict[str, int]:
        return {e.id: int(registry.client.hget(registry.keys.executor(e.id), "pid") or 0) for e in registry.list("default")
                if e.state.value in ("idle", "busy")}  # fmt: skip

    wait_for(lambda: len(pids()) == 2, 30, what="two executors")
    before = pids()
    victim = sorted(before.values())[0]
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    killed_at = time.monotonic()
    wait_for(lambda: len(pids()) == 2 and victim not in pids().values(), 10, interval=0.1, what="the slot to be filled again")
    assert time.monotonic() - killed_at < 10
    ids = [client.post("/v1/jobs", json={"steps": [{"name": "s", "run": "true"}]}).json()["id"] for _ in range(6)]
    assert [j["state"] for j in wait_all(client, ids, timeout=60)] == ["succeeded"] * 6
    assert 'farm_restarts_total{component="executor"} 1.0' in client.get("/metrics").text


def test_sigterm_stops_farm_up_within_10s_whatever_its_followers_do(start_farm):
    farm, client = start_farm("up", "--executors", "1")
    port = int(str(client.base_url).rsplit(":", 1)[1])
    job = client.post("/v1/jobs", json={"steps": [{"name": "long", "run": "sleep 300"}]}).json()
    wait_for(lambda: client.get(f"/v1/jobs/{job['id']}").json()["state"] == "running", 30)
    held = []
    for _ in range(15):  # followers that never read, and never hang up
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"GET /v1/jobs/{job['id']}/log?follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer e2e-admin-token\r\n\r\n".encode())
        held.append(s)
    time.sleep(0.5)
    t0 = time.monotonic()
    code = farm.stop(signal.SIGTERM, timeout=30)
    took = time.monotonic() - t0
    for s in held:
        s.close()
    assert code == 0, "".join(farm.lines)
    assert took < 10, took
