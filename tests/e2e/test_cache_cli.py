"""`farm up`, two jobs sharing a cache, and `farm cache ls|rm` as a user runs them."""

import json
import subprocess
import sys

from tests.e2e.conftest import wait_all


def farm(env, *args):
    r = subprocess.run([sys.executable, "-m", "farm.cli", *args], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_jobs_share_a_cache_and_the_cli_lists_and_removes_it(start_farm, farm_env):
    proc, client = start_farm("up", "--executors", "1")
    spec = {"steps": [{"name": "s", "run": "[ -f deps/x ] && echo was-cached || { mkdir deps; echo 1 > deps/x; }"}],
            "caches": [{"key": "deps-v1", "paths": ["deps"]}]}  # fmt: skip
    ids = []
    for _ in range(2):  # one after the other: the second restores what the first saved
        ids.append(client.post("/v1/jobs", json=spec).json()["id"])
        wait_all(client, ids, 60)
    first, second = wait_all(client, ids, 5)
    assert (first["caches"][0]["restore"], first["caches"][0]["save"]) == ("miss", "saved")
    assert second["caches"][0]["restore"] == "hit" and "was-cached" in client.get(f"/v1/jobs/{ids[1]}/log").text
    env = {**farm_env, "FARM_URL": str(client.base_url).rstrip("/"), "FARM_TOKEN": "e2e-admin-token"}
    listed = json.loads(farm(env, "cache", "ls", "--json"))
    assert [e["key"] for e in listed["entries"]] == ["deps-v1"] and listed["entries"][0]["tier"] == "protected"
    assert "deps-v1" in farm(env, "cache", "ls")
    assert "deleted 1 entry" in farm(env, "cache", "rm", "deps-v1")
    assert json.loads(farm(env, "cache", "ls", "--json"))["entries"] == []
