"""`farm up` as a process: jobs over HTTP on the local, docker and dind runtimes, a clean stop."""

import subprocess
import sys

import docker
import pytest

from tests.e2e.conftest import wait_all


def run_jobs(client, n, **extra):
    ids = []
    for i in range(n):
        r = client.post("/v1/jobs", json={"steps": [{"name": "echo", "run": f"echo output-of-job-{i}"}], **extra})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def test_fifty_jobs_on_the_local_runtime(start_farm):
    # farm up starts a Ray of its own even when the environment points at another cluster.
    farm, client = start_farm("up", "--executors", "4", env={"RAY_ADDRESS": "127.0.0.1:1"})
    assert "4 local executor(s)" in farm.ready_line
    ids = run_jobs(client, 50)
    jobs = wait_all(client, ids, timeout=120)
    assert [j["state"] for j in jobs] == ["succeeded"] * 50
    for i, job_id in enumerate(ids):
        assert f"output-of-job-{i}\n" in client.get(f"/v1/jobs/{job_id}/log").text
    queue = client.get("/v1/queue").json()["pools"][0]
    assert queue["queued"] == 0 and queue["executors"]["idle"] + queue["executors"]["busy"] == 4
    assert farm.stop() == 0
    assert "farm stopped" in "".join(farm.lines)


@pytest.mark.docker
def test_twenty_jobs_on_the_docker_runtime(start_farm, docker_image):
    farm, client = start_farm("up", "--executors", "3", "--runtime", "docker", env={"FARM_DOCKER__DEFAULT_IMAGE": docker_image})
    ids = run_jobs(client, 20)
    jobs = wait_all(client, ids, timeout=180)
    assert [j["state"] for j in jobs] == ["succeeded"] * 20
    assert "output-of-job-7\n" in client.get(f"/v1/jobs/{ids[7]}/log").text


@pytest.mark.docker
def test_farm_up_on_the_dind_runtime_gives_each_executor_its_own_daemon(start_farm, docker_image, dind_image):
    farm, client = start_farm("up", "--executors", "2", "--runtime", "dind",
                              env={"FARM_DOCKER__DEFAULT_IMAGE": docker_image, "FARM_DIND__IMAGE": dind_image})  # fmt: skip
    assert "2 dind executor(s)" in farm.ready_line
    ids = run_jobs(client, 4)
    r = client.post("/v1/jobs", json={"steps": [{"name": "daemon", "image": dind_image,
                                                 "run": "docker info --format 'daemon-{{.Name}}-{{.Driver}}'"}]})  # fmt: skip
    ids.append(r.json()["id"])
    jobs = wait_all(client, ids, timeout=180)
    assert [j["state"] for j in jobs] == ["succeeded"] * 5
    assert "-overlay2" in client.get(f"/v1/jobs/{ids[-1]}/log").text
    daemons = docker.from_env().containers.list(filters={"label": "farm.dind=1"})
    assert len(daemons) == 2
    assert farm.stop() == 0
    assert docker.from_env().containers.list(all=True, filters={"label": "farm.dind=1"}) == []  # drained: torn down


def test_farm_up_says_why_when_no_executor_can_start(farm_env):
    env = {**farm_env, "FARM_DIND__DOCKER_HOST": "unix:///nonexistent/docker.sock", "FARM_DIND__START_TIMEOUT_S": "0.5"}
    run = subprocess.run([sys.executable, "-m", "farm.cli", "up", "--runtime", "dind", "--executors", "2", "--port", "0"],
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "farm up failed: no executor could start (dind runtime)" in out and "did not answer" in out
    assert "ready at" not in out


def test_jobs_survive_a_restart_of_farm_up(start_farm, farm_env):
    farm, client = start_farm("up", "--executors", "0")
    ids = run_jobs(client, 5)
    assert farm.stop() == 0
    farm, client = start_farm("up", "--executors", "2")
    jobs = wait_all(client, ids, timeout=60)
    assert [j["state"] for j in jobs] == ["succeeded"] * 5
