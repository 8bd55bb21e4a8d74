"""`farm up --ray-address` against a Ray cluster with token auth on (issue 24, "Joining Ray,
explained"): without the token it fails in one line that names token auth and what to set
(exit code 2, not "internal error: ConnectionError"); with RAY_AUTH_MODE=token and
RAY_AUTH_TOKEN in its environment it joins. One head node on loopback (tests/e2e/ray_cluster.py),
a HOME of the test's own so no ~/.ray/auth_token is read."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.store.server import free_port
from tests.conftest import REPO, wait_for
from tests.e2e.conftest import process_tree

TOKEN = secrets.token_hex(16)


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(GCS address, HOME) of a one-node Ray cluster that requires TOKEN."""
    home = str(tmp_path_factory.mktemp("home"))
    temp = tempfile.mkdtemp(prefix="farm-ray-")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "HOME": home, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, "RAY_USAGE_STATS_ENABLED": "0"}
    cluster = subprocess.Popen([sys.executable, "-m", "tests.e2e.ray_cluster", json.dumps({"temp_dir": temp, "nodes": []})],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)  # fmt: skip
    pids: set[int] = set()
    try:
        info = json.loads(cluster.stdout.readline())  # type: ignore[union-attr]
        pids = process_tree(cluster.pid)
        yield info["address"], home
    finally:
        cluster.send_signal(signal.SIGTERM)
        try:
            cluster.wait(30)
        except subprocess.TimeoutExpired:
            cluster.kill()
        # Nothing of the cluster outlives the test (stopped by pid: never `ray stop`).
        wait_for(lambda: not [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)], 30,
                 what="the cluster's processes to end")  # fmt: skip
        shutil.rmtree(temp, ignore_errors=True)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.parametrize(
    "auth, said",
    [
        ({}, "it has token authentication on, and RAY_AUTH_MODE is unset here, so farm sent no token; "
             "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN="),
        ({"RAY_AUTH_MODE": "token"}, "RAY_AUTH_MODE=token here, but farm found no token; set RAY_AUTH_TOKEN="),
        ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-" + TOKEN}, "it refused the token farm sent"),
    ],
    ids=["no-token-sent", "no-token-found", "a-wrong-token"],
)  # fmt: skip
def test_farm_up_without_the_token_says_what_to_set(token_cluster, farm_env, auth, said):
    address, home = token_cluster
    env = {k: v for k, v in farm_env.items() if not k.startswith("RAY_AUTH_") and k != "RAY_ADDRESS"}
    # Ray retries a refused connection for 20 s by default; a refused token is refused on every try.
    env.update({"HOME": home, "RAY_gcs_server_port_wait_time_s": "2", **auth})
    r = subprocess.run([sys.executable, "-m", "farm.cli", "up", "--ray-address", address, "--port", str(free_port())],
                       env=env, capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = [line for line in r.stderr.splitlines() if line.startswith("farm up failed:")]
    assert f"farm up failed: cannot join the Ray cluster at {address}: {said}" in line, line
    assert "internal error" not in r.stdout + r.stderr


def test_farm_up_with_the_token_in_its_environment_joins(token_cluster, start_farm):
    address, home = token_cluster
    farm, client = start_farm("up", "--ray-address", address, "--executors", "0",
                              env={"HOME": home, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, "RAY_ADDRESS": None})  # fmt: skip
    assert client.get("/v1/queue").status_code == 200
    assert farm.stop() == 0
