"""The docker runtime (DooD) on the real host daemon, with a base image made locally."""

import os
import time

import docker
import pytest

from agents.runtimes.docker import UNPRIVILEGED
from farm.models import ErrorCode, JobSpec, JobState
from tests.conftest import wait_for
from tests.integration.test_executor_local import full_log, wait_done

pytestmark = pytest.mark.docker


@pytest.fixture
def docker_settings(make_settings, docker_image):
    return make_settings(executors={"runtime": "docker"}, docker={"default_image": docker_image})


def test_steps_run_in_containers_with_the_workspace_mounted(store, docker_settings, run_executor):
    run_executor(docker_settings)
    job = store.enqueue(JobSpec(env={"WHO": "farm"}, steps=[
        {"name": "write", "run": "echo built-by-$WHO > out.txt; pwd"},
        {"name": "read", "run": "cat out.txt; id -u"},
    ]), "t")
    done = wait_done(store, job.id, timeout=60)
    assert done.state is JobState.SUCCEEDED, full_log(store, job.id)
    log = full_log(store, job.id)
    # Never root: farm's own uid, or (farm being root) the unprivileged one handed the workspace.
    uid = os.getuid() or UNPRIVILEGED[0]
    assert "/workspace" in log and "built-by-farm" in log and f"\n{uid}\n" in log


def test_steps_get_a_pids_limit_and_optionally_a_read_only_root(store, make_settings, docker_image, run_executor):
    settings = make_settings(executors={"runtime": "docker"}, docker={"default_image": docker_image, "pids_limit": 64,
                                                                      "read_only_rootfs": True})  # fmt: skip
    run_executor(settings)
    job = store.enqueue(JobSpec(steps=[{"name": "s", "run": "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null; "
                                        "touch /etc/x 2>/dev/null || echo root-is-read-only; touch /tmp/x && echo tmp-ok; "
                                        "touch /workspace/x && echo workspace-ok"}]), "t")  # fmt: skip
    wait_done(store, job.id, timeout=60)
    log = full_log(store, job.id)
    assert "\n64\n" in log and "root-is-read-only" in log and "tmp-ok" in log and "workspace-ok" in log, log


def test_containers_are_confined(store, docker_settings, run_executor):
    run_executor(docker_settings)
    job = store.enqueue(JobSpec(steps=[
        {"name": "caps", "run": "grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; cat /proc/net/dev; ls /var/run/docker.sock || echo no-socket"},
    ]), "t")
    wait_done(store, job.id, timeout=60)
    log = full_log(store, job.id)
    assert "CapEff:\t0000000000000000" in log
    assert "NoNewPrivs:\t1" in log
    assert "eth0" not in log and "lo:" in log  # --network none: loopback only
    assert "no-socket" in log


def test_host_network_when_the_job_asks(store, docker_settings, run_executor):
    run_executor(docker_settings)
    job = store.enqueue(JobSpec(network="host", steps=[{"name": "net", "run": "cat /proc/net/dev | wc -l"}]), "t")
    wait_done(store, job.id, timeout=60)
    lines = int([ln for ln in full_log(store, job.id).splitlines() if ln.strip().isdigit()][0])
    assert lines > 3  # the host's interfaces, not just lo


def test_failed_step_and_missing_image(store, docker_settings, run_executor):
    run_executor(docker_settings)
    failing = store.enqueue(JobSpec(steps=[{"name": "f", "run": "exit 5"}]), "t")
    missing = store.enqueue(JobSpec(steps=[{"name": "m", "run": "true", "image": "farm/no-such-image:1"}]), "t")
    assert (wait_done(store, failing.id, 60).exit_code) == 5
    done = wait_done(store, missing.id, 60)
    assert (done.state, done.error) == (JobState.FAILED, ErrorCode.RUNTIME_ERROR)
    assert "is not on the docker daemon" in full_log(store, missing.id)


def test_cancel_kills_the_container_and_removes_it(store, docker_settings, run_executor):
    run_executor(docker_settings)
    client = docker.from_env()
    job = store.enqueue(JobSpec(steps=[{"name": "hang", "run": "echo started; sleep 60"}]), "t")
    wait_for(lambda: "started" in full_log(store, job.id), 60, what="the container to start")
    t0 = time.monotonic()
    store.cancel(job.id)
    wait_for(lambda: not client.containers.list(filters={"label": f"farm.job={job.id}", "status": "running"}, sparse=True), 2.0,
             what="the container to be killed")
    assert time.monotonic() - t0 < 2.0
    wait_for(lambda: not client.containers.list(all=True, filters={"label": f"farm.job={job.id}"}, sparse=True), 10,
             what="the container to be removed")


def test_a_warm_cache_restore_is_visible_inside_the_step_container(store, docker_settings, run_executor):
    run_executor(docker_settings)
    assert_warm_restores_reach_steps(store)


def assert_warm_restores_reach_steps(store):
    """A cache saved by one job is restored warm (an overlay) for later ones, and the step
    container sees what it holds."""
    cache = {"key": "deps", "paths": ["deps"]}
    seed = JobSpec(steps=[{"name": "s", "run": "mkdir deps; echo from-cache > deps/x"}], caches=[cache])
    wait_done(store, store.enqueue(seed, "t").id, timeout=60)
    for _ in range(2):  # the first unpacks on this node, the second mounts the node's copy
        # Reading, changing a restored file and adding one: as the steps' own (unprivileged) user.
        job = store.enqueue(JobSpec(steps=[{"name": "s", "run": "cat deps/x && echo more >> deps/x && echo more > deps/y"}],
                                    caches=[cache]), "t")
        done = wait_done(store, job.id, timeout=60)
        assert done.state is JobState.SUCCEEDED and "from-cache" in full_log(store, job.id), full_log(store, job.id)
    assert done.caches[0].warm


def test_an_images_volumes_go_with_its_step(store, docker_settings, run_executor, docker_image, tmp_path):
    """Found by a red-team run: each step of an image with a VOLUME left a 100 MB anonymous
    volume behind."""
    client = docker.from_env()
    tag = "farm-test/with-volume:1"
    (tmp_path / "Dockerfile").write_text(f"FROM {docker_image}\nVOLUME /data\n")
    client.images.build(path=str(tmp_path), tag=tag, rm=True)
    try:
        before = {v.id for v in client.volumes.list()}
        run_executor(docker_settings)
        job = store.enqueue(JobSpec(steps=[{"name": "s", "image": tag, "run": "ls -d /data"}]), "t")
        assert wait_done(store, job.id, timeout=60).state is JobState.SUCCEEDED
        assert {v.id for v in client.volumes.list()} - before == set()
    finally:
        client.images.remove(tag, force=True)


def test_a_last_line_without_a_newline_is_kept(store, docker_settings, run_executor):
    """The log follower sometimes ended before the daemon flushed a last line without a
    newline (1 step in 30 here): 20 such steps in a job, every last line in the log."""
    run_executor(docker_settings)
    steps = [{"name": f"s{i}", "run": f"printf 'first\\nlast-of-{i}'"} for i in range(20)]
    done = wait_done(store, store.enqueue(JobSpec(steps=steps), "t").id, timeout=120)
    log = full_log(store, done.id)
    assert done.state is JobState.SUCCEEDED, log
    assert [i for i in range(20) if f"last-of-{i}" not in log] == []
