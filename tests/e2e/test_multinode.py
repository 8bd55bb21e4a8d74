"""farm on a Ray cluster of several nodes (all on this machine, on loopback, token auth on):
`farm up --ray-address` joins it; each pool's executors land on the nodes that have its
resources; a node SIGKILLed mid-job (its whole process tree, as a machine dying would take
it) has its job requeued within the lease + 5 s and finished on another node, never twice at
once; the autoscaler asks the cluster for room ahead of demand (seen in Ray's cluster status);
stopping farm drains its executors and leaves the cluster as it found it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from farm.store.client import connect
from farm.store.jobs import JobStore
from farm.store.server import EmbeddedRedis
from tests.conftest import REPO, wait_for
from tests.e2e.conftest import process_tree
from tests.integration.test_fencing import RECORD

LEASE_S = 3.0


def _ray(ray_env: dict[str, str], address: str, code: str) -> object:
    """Run `code` (which prints one JSON value) in a driver of the cluster: a process of its
    own, so pytest's own process never holds a Ray."""
    prelude = ("import json, os, ray\nimport ray._private.ray_constants as rc\nrc.ENABLE_RAY_CLUSTER = False\n"
               f"ray.init(address={address!r}, _node_ip_address='127.0.0.1', logging_level='ERROR')\n")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", prelude + code], env={**os.environ, **ray_env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                       capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _store(farm_env: dict[str, str]) -> JobStore:
    path = Path(farm_env["FARM_DATA_DIR"]) / "redis"
    return JobStore(connect(EmbeddedRedis(path, port=int((path / "port").read_text())).url))


def test_farm_on_a_ray_cluster_of_several_nodes(start_farm, farm_env, tmp_path: Path):
    ray_env = {"RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_enable_autoscaler_v2": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="farm-ray-")  # short: Ray's socket paths must fit 107 bytes
    spec = {"temp_dir": temp, "nodes": [
        {"name": "node-a", "resources": {"pool-a": 8}},
        {"name": "node-b", "resources": {"pool-b": 8}},
        {"name": "node-c", "resources": {"pool-a": 8}},
    ]}  # fmt: skip
    cluster = subprocess.Popen([sys.executable, "-m", "tests.e2e.ray_cluster", json.dumps(spec)], cwd=REPO,
                               env={**os.environ, **ray_env}, stdout=subprocess.PIPE, text=True)  # fmt: skip
    cluster_pids: set[int] = set()
    try:
        info = json.loads(cluster.stdout.readline())  # type: ignore[union-attr]
        cluster_pids = process_tree(cluster.pid)
        nodes = {n["name"]: n for n in info["nodes"]}
        env = {
            **ray_env, "FARM_POOLS": '["a", "b"]', "FARM_EXECUTORS__POOL": "a", "FARM_EXECUTORS__COUNT": "0",
            "FARM_EXECUTORS__POOL_RESOURCES": json.dumps({"a": {"pool-a": 1}, "b": {"pool-b": 1}}),
            "FARM_POLICIES": json.dumps({"a": {"kind": "reactive", "min": 2, "max": 4, "scale_down_delay_s": 600},
                                         "b": {"kind": "reactive", "min": 1, "max": 2, "scale_down_delay_s": 600}}),
            "FARM_LEASE__LEASE_S": str(LEASE_S), "FARM_LEASE__NODE_TIMEOUT_S": str(LEASE_S), "FARM_AUTOSCALER__INTERVAL_S": "1",
        }  # fmt: skip
        farm, client = start_farm("up", "--ray-address", info["address"], env=env)

        def executors(pool: str) -> list[dict]:
            return [e for e in client.get("/v1/executors", params={"pool": pool}).json()["executors"] if e["state"] in ("idle", "busy")]

        wait_for(lambda: len(executors("a")) == 2 and len(executors("b")) == 1, 90, interval=0.5, what="the pools' executors")
        # Placement: each pool's executors on the nodes with its resources, and named after them.
        a_nodes = {nodes["node-a"]["node_id"], nodes["node-c"]["node_id"]}
        assert all(e["ray_node"] in a_nodes and e["node"] in ("node-a", "node-c") for e in executors("a")), executors("a")
        (b,) = executors("b")
        assert b["ray_node"] == nodes["node-b"]["node_id"] and b["node"] == "node-b" and b["address"] == "127.0.0.1"
        ids = [client.post("/v1/jobs", json={"pool": "b", "steps": [{"name": "s", "run": "echo on-b"}]}).json()["id"] for _ in range(3)]
        for job_id in ids:
            done = wait_for(lambda job_id=job_id: (j := client.get(f"/v1/jobs/{job_id}").json())["state"] == "succeeded" and j, 60)
            assert done["executor"] == b["id"]  # type: ignore[index]

        # Capacity asked of the cluster ahead of demand, per pool, as Ray's autoscaler sees it.
        demand = _ray(ray_env, info["address"], (
            "from ray.autoscaler.v2.sdk import get_cluster_status\n"
            f"s = get_cluster_status({info['address']!r})\n"
            "print(json.dumps([[b.bundle, b.count] for d in s.resource_demands.cluster_constraint_demand for b in d.bundles_by_count]))"
        ))  # fmt: skip
        asked = {json.dumps(bundle, sort_keys=True): count for bundle, count in demand}  # type: ignore[union-attr]
        assert asked.get('{"pool-a": 1.0}', 0) >= 2 and asked.get('{"pool-b": 1.0}', 0) >= 1, demand

        # A node dies mid-job: all of it at once, as a machine would.
        records = tmp_path / "records"
        records.mkdir()
        job = client.post("/v1/jobs", json={"pool": "a", "retries": 3, "steps": [{"name": "s", "run": RECORD.format(dir=records)}]}).json()
        running = wait_for(lambda: (j := client.get(f"/v1/jobs/{job['id']}").json())["state"] == "running" and j, 60)
        time.sleep(1.0)
        where = next(e for e in executors("a") if e["id"] == running["executor"])  # type: ignore[index]
        victim = next(n for n in nodes.values() if n["node_id"] == where["ray_node"])
        survivor = ({"node-a", "node-c"} - {victim["name"]}).pop()
        doomed = process_tree(victim["raylet_pid"])
        killed_at = time.time()
        subprocess.run(["kill", "-KILL", *map(str, doomed)], check=False)
        done = wait_for(lambda: (j := client.get(f"/v1/jobs/{job['id']}").json())["state"] not in ("queued", "running") and j, 120)
        assert done["state"] == "succeeded" and done["attempt"] == 2, done  # type: ignore[index]
        assert not (records / f"{job['id']}.overlap").exists(), (records / f"{job['id']}.overlap").read_text()
        store = _store(farm_env)
        notes = [(int(c.entry_id.split("-")[0]) / 1000, c.data or "") for c in store.read_log(job["id"], count=10_000)]
        requeued_at = next(t for t, text in notes if "requeued as attempt 2" in text)
        assert requeued_at - killed_at <= LEASE_S + 5, (requeued_at - killed_at, notes)
        started = next(text for t, text in notes if "attempt 2 started on" in text)
        heir = started.rsplit(" ", 1)[1].strip()
        assert any(e["id"] == heir and e["node"] == survivor for e in client.get("/v1/executors").json()["executors"]), started

        # farm stops: its executors drain, its actors leave the cluster; the cluster stays up.
        assert farm.stop(signal.SIGTERM) == 0, "".join(farm.lines)
        left = _ray(ray_env, info["address"], "print(json.dumps(ray.util.list_named_actors(all_namespaces=True)))")
        assert left == [], left
    finally:
        cluster.send_signal(signal.SIGTERM)
        try:
            cluster.wait(60)
        except subprocess.TimeoutExpired:
            cluster.kill()
        # Nothing of the cluster outlives the test (stopped by pid: never `ray stop`).
        wait_for(lambda: not [p for p in cluster_pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)], 30,
                 what="the cluster's processes to end")  # fmt: skip
        shutil.rmtree(temp, ignore_errors=True)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
