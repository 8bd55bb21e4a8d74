"""A SIGKILLed `farm up` (the OOM killer, a `kill -9`, a lost terminal's hard kill) leaves no
work running on the node: within the lease + 5 s, nothing it started lives, neither its
steps (in cgroups or containers of their own) nor Ray's processes and agents, which a dead
parent would otherwise leave to PID 1."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import cmdline, process_tree

LEASE_S = 10.0  # farm up's default lease


def start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def alive(pids: dict[int, str]) -> dict[int, str]:
    """Those of `pids` (pid: start time) still running as the same process, zombies aside."""
    out = {}
    for pid, started in pids.items():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if start_time(pid) == started and state != "Z":
            out[pid] = cmdline(pid)[:120]
    return out


def running_containers(job_id: str) -> list:  # type: ignore[type-arg]
    import docker

    return docker.from_env().containers.list(filters={"label": f"farm.job={job_id}", "status": "running"})


@pytest.mark.parametrize("runtime", ["local", "docker"])
def test_nothing_of_a_sigkilled_farm_up_runs_after_the_lease(start_farm, farm_env, tmp_path: Path, runtime: str, request):
    if runtime == "docker":
        request.getfixturevalue("docker_image")
    farm, client = start_farm("up", "--executors", "1", "--runtime", runtime)
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    out = stamps / "out"
    run = f"while :; do date +%s >> {out}; sleep 0.2; done" if runtime == "local" else "while :; do sleep 0.2; done"
    job = client.post("/v1/jobs", json={"steps": [{"name": "s", "run": run}], "timeout_s": 600}).json()
    assert "id" in job, job
    if runtime == "local":
        wait_for(lambda: out.exists() and len(out.read_text().split()) > 3, 60, what="the step to run")
    else:
        wait_for(lambda: running_containers(job["id"]), 60, what="the step's container to run")
    tree = {pid: start_time(pid) for pid in process_tree(farm.proc.pid) if pid != farm.proc.pid}
    tree = {pid: t for pid, t in tree.items() if t is not None}
    assert len(tree) > 3, tree  # the server, Ray's processes, the executor, the step
    os.kill(farm.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    farm.proc.wait(10)
    try:
        while alive(tree) or (runtime != "local" and running_containers(job["id"])):
            assert time.monotonic() - killed_at < LEASE_S + 5, f"still running after the lease + 5 s: {alive(tree)}"
            time.sleep(0.2)
        took = time.monotonic() - killed_at
        if runtime == "local":
            size = out.stat().st_size
            time.sleep(1.0)
            assert out.stat().st_size == size, "the step still writes"
        assert took <= LEASE_S + 5, took
        data_dir = farm_env["FARM_DATA_DIR"]
        wait_for(lambda: not [m for m in Path("/proc/self/mounts").read_text().splitlines() if data_dir in m], 10,
                 what="the workspaces' disks to be given back")  # fmt: skip
    finally:
        for pid in alive(tree):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if runtime == "docker":
            for c in running_containers(job["id"]):
                c.remove(force=True)
