"""A job's disk quota (`executors.disk_quota_bytes`, agents/quota.py), farm being root:

- on the local, docker and sandbox runtimes, a job that writes past its quota fails with
  `disk_quota` and a log line saying so; what it wrote never exceeded the quota;
- afterwards the node's free space is what it was (measured on a filesystem of the test's
  own, so that other work on the machine cannot blur it), nothing of the workspace is left (no
  mount, no image), and the next job on the same executor starts in an empty workspace;
- what a job writes to a cache path restored as an overlay counts against its quota too;
- a bounded workspace mounted under a shared workspaces root (as the dind runtime shares
  it) is seen, bounded, by a container that has that root `rslave`, and is gone from it
  once released;
- the workspace sweep removes what a crashed executor left: its mounts (a cache overlay
  inside included), its disk and its image;
- making and releasing a bounded workspace costs milliseconds (the numbers are printed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents import quota
from agents.workspace import sweep
from farm.models import ErrorCode, JobSpec, JobState
from farm.store.executors import ExecutorState
from tests.conftest import require, wait_for
from tests.integration.test_executor_local import full_log, wait_done

MiB = 1024 * 1024
QUOTA = 64 * MiB
TOLERANCE = MiB  # directories and lock files; a leaked workspace would hold ~QUOTA
LINE = "[farm] the job's workspace reached its disk quota of 64 MiB (executors.disk_quota_bytes); the job fails with disk_quota"


@pytest.fixture(autouse=True)
def as_root() -> None:
    require("root", os.geteuid() == 0, "disk quotas are loop-mounted filesystems, which only root mounts")
    require("mkfs.ext4", shutil.which("mkfs.ext4"), "Debian's e2fsprogs")


@pytest.fixture
def node_disk(tmp_path: Path) -> Iterator[Path]:
    """A filesystem of the test's own for farm's data dir: the node's disk, as far as the
    test can tell, with no one else writing to it."""
    image, mountpoint = tmp_path / "node.img", tmp_path / "node"
    mountpoint.mkdir()
    with open(image, "wb") as f:
        f.truncate(8 * QUOTA)
    subprocess.run([*quota.MKFS, str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=True)
    image.unlink()


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def leftovers(root: Path) -> list[str]:
    """What of any bounded workspace remains under root: mounts and images. os.walk, not
    rglob: the attempt may be removing a directory while this looks (rglob raised then, in CI)."""
    images = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".img")]
    return quota.mounts_under(root) + images


DOCKER = pytest.mark.docker


@pytest.mark.parametrize("runtime", ["local", pytest.param("docker", marks=DOCKER), pytest.param("sandbox", marks=DOCKER)])
def test_a_job_past_its_quota_fails_and_the_next_starts_clean(runtime, request, node_disk, store, make_settings, run_executor):
    overrides: dict[str, object] = {"executors": {"runtime": runtime, "disk_quota_bytes": QUOTA}, "data_dir": node_disk / "data"}
    if runtime != "local":
        overrides["docker"] = {"default_image": request.getfixturevalue("docker_image")}
    settings = make_settings(**overrides)
    settings.data_dir.mkdir(parents=True)
    free_before = free_bytes(settings.data_dir)
    ex = run_executor(settings, f"ex-{runtime}")
    wait_for(lambda: ex.executor.state is not ExecutorState.STARTING, 60, what="the executor to start")
    assert ex.executor.error is None, ex.executor.error

    job = store.enqueue(JobSpec(steps=[{"name": "fill", "run": (
        "dd if=/dev/zero of=big bs=1M count=100 2>&1 || { stat -c size=%s big; exit 3; }"
    )}]), "t")  # fmt: skip
    done = wait_done(store, job.id, timeout=60)
    log = full_log(store, job.id)
    assert (done.state, done.error, done.exit_code) == (JobState.FAILED, ErrorCode.DISK_QUOTA, 3), log
    assert LINE in log and "No space left on device" in log
    written = int(log.split("size=")[1].split()[0])
    assert QUOTA * 0.9 < written <= QUOTA

    nxt = store.enqueue(JobSpec(steps=[{"name": "look", "run": 'test -z "$(ls -A)" && df -k . | tail -1'}]), "t")
    done = wait_done(store, nxt.id, timeout=60)
    log = full_log(store, nxt.id)
    assert done.state is JobState.SUCCEEDED, log
    total_kib = int(log.split("--- step look\n")[1].split()[1])
    assert QUOTA * 0.9 < total_kib * 1024 <= QUOTA  # bounded again, and empty

    root = settings.data_dir / "workspaces"
    wait_for(lambda: not leftovers(root), 10, what="the workspaces to be removed")
    assert list(root.glob("*/*")) == []
    assert abs(free_bytes(settings.data_dir) - free_before) < TOLERANCE


def test_writes_to_a_restored_cache_path_count_against_the_quota(node_disk, store, make_settings, run_executor):
    settings = make_settings(executors={"disk_quota_bytes": QUOTA}, data_dir=node_disk / "data")
    run_executor(settings)
    cache = {"key": "deps", "paths": ["deps"], "save": "always"}
    seed = store.enqueue(JobSpec(steps=[{"name": "s", "run": "mkdir deps; echo v1 > deps/pkg"}], caches=[cache]), "t")
    seed = wait_done(store, seed.id)
    assert seed.caches[0].save == "saved", full_log(store, seed.id)
    fill = 'grep -q " $PWD/deps overlay " /proc/mounts && dd if=/dev/zero of=deps/big bs=1M count=100 || exit 3'
    job = store.enqueue(JobSpec(steps=[{"name": "fill", "run": fill}], caches=[cache]), "t")
    done = wait_done(store, job.id, timeout=60)
    log = full_log(store, job.id)
    assert (done.state, done.error, done.caches[0].restore) == (JobState.FAILED, ErrorCode.DISK_QUOTA, "hit"), log
    assert LINE in log and "No space left on device" in log
    wait_for(lambda: not leftovers(settings.data_dir), 10, what="the workspace to be removed")


@DOCKER
def test_a_shared_workspaces_root_propagates_a_bounded_workspace_into_a_container(docker_image, make_settings, tmp_path):
    """The dind runtime makes the executor's workspaces a shared mount and gives them to its
    daemon's container `rslave`: a bounded workspace made later reaches it, bounded, and
    goes from it when released."""
    from agents.runtimes.dind import DindRuntime

    settings = make_settings(executors={"runtime": "dind"})
    runtime = DindRuntime(settings, "ex-dind")
    runtime.workspaces.mkdir(parents=True)
    runtime._share_workspaces()
    assert runtime._shared
    root = str(runtime.workspaces)
    name = f"farm-test-quota-{os.getpid()}"
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network", "none", "-v", f"{root}:{root}:rslave",
                    docker_image, "sleep", "60"], check=True, capture_output=True)  # fmt: skip
    try:
        workspace = runtime.workspaces / "job-1"
        quota.make(workspace, QUOTA)

        def inside(script: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["docker", "exec", name, "sh", "-c", script], capture_output=True, text=True)

        df = inside(f"df -k {workspace} | tail -1").stdout.split()
        assert QUOTA * 0.9 < int(df[1]) * 1024 <= QUOTA, df
        fill = inside(f"dd if=/dev/zero of={workspace}/big bs=1M count=100")
        assert fill.returncode != 0 and "No space left" in fill.stderr
        quota.release(workspace)
        assert str(workspace) not in inside("cat /proc/mounts").stdout
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        runtime.close()
    assert not leftovers(runtime.workspaces)


def test_the_sweep_removes_a_crashed_executors_bounded_workspace(tmp_path):
    root = tmp_path / "workspaces"
    workspace = root / "ex-dead" / "job-1"
    disk = quota.make(workspace, QUOTA)
    (workspace / "out").write_bytes(b"x" * MiB)
    # A warm cache overlay inside it, its upper layer on the workspace's own disk (agents/cache.py).
    lower, upper, work = tmp_path / "lower", disk.layers / "a" / "upper", disk.layers / "a" / "work"
    for d in (lower, upper, work, workspace / "deps"):
        d.mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}",
                    str(workspace / "deps")], check=True)  # fmt: skip
    assert len(quota.mounts_under(root)) == 3

    assert sweep(root, lambda job, attempt: True, keep_for_s=0, now=time.time()) == []  # still running: kept
    assert sweep(root, lambda job, attempt: False, keep_for_s=0, now=time.time()) == [workspace]
    assert quota.mounts_under(root) == [] and list((root / "ex-dead").iterdir()) == []


def test_make_and_release_cost(node_disk):
    """Per-job overhead of the quota: make + release, 32 MiB and 4 GiB (printed with -s)."""
    for size in (32 * MiB, 4096 * MiB):
        n, made, released = 10, 0.0, 0.0
        free_before = free_bytes(node_disk)
        for i in range(n):
            t0 = time.perf_counter()
            quota.make(node_disk / f"job-{i}", size)
            t1 = time.perf_counter()
            quota.release(node_disk / f"job-{i}")
            made, released = made + t1 - t0, released + time.perf_counter() - t1
        text = quota.size_text(size)
        print(f"\nbounded workspace of {text}: make {made / n * 1000:.1f} ms, release {released / n * 1000:.1f} ms")
        assert made / n < 0.5 and released / n < 0.5
        assert abs(free_bytes(node_disk) - free_before) < TOLERANCE
    assert [p.name for p in node_disk.iterdir()] == ["lost+found"]
