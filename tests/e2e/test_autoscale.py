"""`farm up` with a capacity policy from farm.yaml: a replayed burst scales the pool up, and
it drains back to its minimum afterwards with every job succeeded and none killed."""

import subprocess
import sys
import time

import yaml

from tests.e2e.conftest import wait_all


def pool(client):
    p = client.get("/v1/pools").json()["pools"][0]
    return p, sum(p["executors"][s] for s in ("starting", "idle", "busy"))


def test_a_burst_scales_the_pool_up_and_it_drains_back_to_the_minimum(start_farm, tmp_path):
    config = tmp_path / "farm.yaml"
    config.write_text(yaml.safe_dump({
        "autoscaler": {"interval_s": 0.5},
        # A boot (a few seconds here) meets the 30 s target: executors are started for the
        # jobs as they come, and an idle one is drained at once.
        "policies": {"default": {"kind": "predictive", "target_p95_s": 30, "min": 1, "max": 8}},
    }))  # fmt: skip
    farm, client = start_farm("up", "--config", str(config))
    deadline = time.monotonic() + 60
    while pool(client)[1] != 1 or pool(client)[0]["executors"]["idle"] != 1:
        assert time.monotonic() < deadline, f"the pool never reached its minimum: {pool(client)[0]}"
        time.sleep(0.2)
    # The burst, as a trace has it: a push fans out into jobs submitted at the same moment.
    burst = [client.post("/v1/jobs", json={"steps": [{"name": "s", "run": "sleep 3"}]}).json()["id"] for _ in range(6)]
    peak, deadline = 0, time.monotonic() + 120
    while any(client.get(f"/v1/jobs/{i}").json()["state"] in ("queued", "running") for i in burst):
        assert time.monotonic() < deadline, "the burst did not finish"
        peak = max(peak, pool(client)[1])
        time.sleep(0.2)
    assert peak >= 4, f"the pool did not scale up for the burst (peak {peak})"
    jobs = wait_all(client, burst, timeout=5)
    assert [(j["state"], j["attempt"]) for j in jobs] == [("succeeded", 1)] * 6  # none killed or retried
    deadline = time.monotonic() + 60
    while pool(client)[1] != 1:
        assert time.monotonic() < deadline, f"the pool did not drain back to its minimum: {pool(client)[0]}"
        time.sleep(0.2)
    decisions = client.get("/v1/pools/default/decisions").json()["decisions"]
    assert any(d["started"] for d in decisions) and any(d["drained"] for d in decisions)
    assert all(d["policy"] == "predictive" for d in decisions)
    assert farm.stop() == 0


def test_farm_queue_says_why_executors_of_a_pool_cannot_start(start_farm, farm_env, tmp_path):
    config = tmp_path / "farm.yaml"
    config.write_text(yaml.safe_dump({
        "autoscaler": {"interval_s": 0.5},
        "executors": {"runtime": "dind"},
        "dind": {"docker_host": "unix:///nonexistent/docker.sock", "start_timeout_s": 0.5},
        "policies": {"default": {"kind": "reactive", "buffer": 1}},
    }))  # fmt: skip
    farm, client = start_farm("up", "--config", str(config))
    env = {**farm_env, "FARM_URL": str(client.base_url).rstrip("/"), "FARM_TOKEN": "e2e-admin-token"}
    deadline = time.monotonic() + 60
    while True:
        r = subprocess.run([sys.executable, "-m", "farm.cli", "queue"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        if "could not start" in r.stderr:
            break
        assert time.monotonic() < deadline, f"farm queue never said why: {r.stdout}{r.stderr}"
        time.sleep(0.5)
    assert "pool default: executor default-" in r.stderr and "did not answer" in r.stderr
    assert farm.stop() == 0
