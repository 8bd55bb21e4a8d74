"""The dind runtime: each executor owns a private dockerd (a container of images/executor-dind
on the host's daemon), steps get its socket, and fresh executors reuse the layers earlier
ones built for the same tenant and tier (the pool's layer stores, one scope each; how scopes
stay apart: tests/integration/test_tenant_layers.py). Real Docker throughout."""

import os
import threading

import docker
import pytest

from agents.runtimes.base import StepContext
from agents.runtimes.dind import DindRuntime
from agents.runtimes.docker import LayerScope
from agents.workspace import give
from farm.errors import RuntimeFailure
from farm.models import JobSpec, JobState, Step
from tests.conftest import wait_for
from tests.integration.test_executor_docker import assert_warm_restores_reach_steps
from tests.integration.test_executor_local import full_log, wait_done
from tests.integration.test_image_jobs import repo_with

pytestmark = pytest.mark.docker


@pytest.fixture
def dind_settings(make_settings, docker_image, dind_image):
    def make(dind=None, **overrides):
        return make_settings(executors={"runtime": "dind"}, docker={"default_image": docker_image},
                             dind={"image": dind_image, **(dind or {})}, **overrides)  # fmt: skip

    return make


def daemons_of(executor_id: str) -> list:
    return docker.from_env().containers.list(all=True, filters={"label": f"farm.executor={executor_id}"})


def test_a_build_step_runs_docker_on_the_executors_own_daemon(store, dind_settings, run_executor, dind_image, tmp_path):
    ex = run_executor(dind_settings(), "ex-dind-a")
    url = repo_with(tmp_path, "FROM farm/busybox:latest\nRUN echo built-inside > /hi\n")
    steps = [{"name": "build", "image": dind_image, "run": (
        "docker build -q -t inner/app:1 app && docker run --rm --network none inner/app:1 cat /hi"
        " && docker run -d --network none --name left-behind farm/busybox:latest sleep 300 && docker volume create vol-left"
    )}]  # fmt: skip
    done = wait_done(store, store.enqueue(JobSpec(source={"git": {"url": url}}, steps=steps), "t").id, timeout=180)
    log = full_log(store, done.id)
    assert done.state is JobState.SUCCEEDED, log
    assert "built-inside" in log
    # The step talked to the executor's daemon, not the host's.
    host = docker.from_env()
    assert not host.images.list(name="inner/app")
    daemon = wait_for(lambda: len(found := daemons_of("ex-dind-a")) == 1 and found[0], 30, what="one daemon")  # scratch one gone
    assert daemon.status == "running" and daemon.attrs["HostConfig"]["NetworkMode"] == "host"
    private = ex.executor.runtime.client
    assert private.images.list(name="inner/app")
    # What the job left running on the private daemon went with the job; its images stay.
    wait_for(lambda: not private.api.containers(all=True) and not private.volumes.list(), 30, what="the job's leftovers to go")
    ex.stop()
    assert daemons_of("ex-dind-a") == []  # torn down when the executor drained


def test_a_fresh_executor_reuses_the_layers_earlier_executors_built(store, dind_settings, run_executor, tmp_path):
    settings = dind_settings()
    url = repo_with(tmp_path, "FROM farm/busybox:latest\nRUN date +%s%N > /stamp && echo expensive-$((20 + 22))\n")
    spec = JobSpec(kind="image", source={"git": {"url": url}}, build={"context": "app", "tags": ["farm-test/layers:1"]})

    first = run_executor(settings, "ex-dind-first")
    cold = wait_done(store, store.enqueue(spec, "t").id, timeout=180)
    assert cold.state is JobState.SUCCEEDED, full_log(store, cold.id)
    assert "expensive-42" in full_log(store, cold.id)
    # One daemon: the one it started on a scratch root stops on a thread once the job's store is in use.
    daemon = wait_for(lambda: len(found := daemons_of("ex-dind-first")) == 1 and found[0], 30, what="one daemon")
    first.stop()
    assert daemons_of("ex-dind-first") == []

    run_executor(settings, "ex-dind-second")  # a new executor with a new daemon
    warm = wait_done(store, store.enqueue(spec, "t").id, timeout=180)
    log = full_log(store, warm.id)
    assert warm.state is JobState.SUCCEEDED, log
    (second,) = daemons_of("ex-dind-second")
    assert second.id != daemon.id
    assert "Using cache" in log and "expensive-42" not in log  # the RUN did not run again
    assert warm.image.id == cold.image.id
    # It started on the store released last, tenant t's: the right guess, no restart for the job.
    assert "docker daemon restarted" in full_log(store, cold.id) and "docker daemon restarted" not in log


def test_concurrent_executors_get_their_own_daemons_and_stores(dind_settings):
    settings = dind_settings()
    a, b = DindRuntime(settings, "ex-a"), DindRuntime(settings, "ex-b")
    try:
        a.prepare()
        b.prepare()
        assert a.lease.path != b.lease.path and a.container_name != b.container_name
        a.client.images.get("farm/busybox:latest")  # the default step image was copied in
        assert {d.name for d in daemons_of("ex-a") + daemons_of("ex-b")} == {a.container_name, b.container_name}
    finally:
        a.close()
        b.close()
    assert daemons_of("ex-a") == daemons_of("ex-b") == []


def test_a_daemon_that_cannot_start_says_why_and_frees_its_store(dind_settings):
    settings = dind_settings(dind={"image": "farm/no-such-image:1"})
    runtime = DindRuntime(settings, "ex-broken")
    with pytest.raises(RuntimeFailure, match="not on the host's daemon"):
        runtime.prepare()
    again = runtime.stores.lease(LayerScope("t", "unprotected"))  # the store it took is free again
    assert again.slot == 0
    runtime.stores.release(again)


def test_a_warm_cache_restore_reaches_steps_on_the_private_daemon(store, dind_settings, run_executor):
    # The overlay is mounted on the host after the daemon's container started: it must
    # propagate into it (the workspaces are a shared mount) for the step to see it.
    run_executor(dind_settings(), "ex-dind-cache")
    assert_warm_restores_reach_steps(store)


def test_the_daemon_of_an_executor_that_died_is_replaced_with_its_store(dind_settings, tmp_path):
    settings = dind_settings()
    dead = DindRuntime(settings, "ex-dead")
    dead.prepare()
    dead._use(StepContext("job", tmp_path, {}, lambda b: None, threading.Event(), tenant="t"))  # onto t's store
    for stopping, _ in dead._stopping:
        stopping.join(60)  # the daemon it started on (a scratch root) is gone
    orphan = dead.container_name
    os.close(dead.lease.fd)  # what the process's death does to its lease; its daemon keeps running
    assert docker.from_env().containers.get(orphan).status == "running"
    heir = DindRuntime(settings, "ex-heir")
    try:
        heir.prepare()  # on the store released last: t's, which the dead one's lease no longer holds
        assert heir.lease.slot == 0 and heir.container_name == orphan and heir.scope == LayerScope("t", "unprotected")
        assert daemons_of("ex-dead") == [] and len(daemons_of("ex-heir")) == 1
        heir.client.images.get("farm/busybox:latest")
    finally:
        heir.close()
        dead.lease = dead.container_name = None  # gone with the "dead" process; the rest is ours to clear
        dead.close()


def test_a_daemon_someone_else_runs_is_used_and_left_running(dind_settings, tmp_path):
    # The Helm chart's shape: a dockerd beside the executor (here one a farm runtime started).
    owner = DindRuntime(dind_settings(), "ex-sidecar")
    owner.prepare()
    try:
        side = DindRuntime(dind_settings(dind={"docker_host": f"unix://{owner._sockdir}/docker.sock"}), "ex-sidecar")
        side.prepare()
        assert side.container_name is None and len(daemons_of("ex-sidecar")) == 1  # started none of its own
        assert not side.sees_new_mounts  # its mounts would not reach that daemon: caches unpack instead
        ws = side.workspaces / "job-1"
        ws.mkdir(parents=True)
        if side.step_owner:
            give(ws, side.step_owner)  # what an attempt does before its steps
        out = bytearray()
        ctx = StepContext("job", ws, {}, out.extend, threading.Event(), tenant="a")
        assert side.run_step(Step(name="s", run="echo via-sidecar > proof; echo $DOCKER_HOST"), ctx) == 0
        assert (ws / "proof").read_text() == "via-sidecar\n" and b"unix:///var/run/docker.sock" in out
        # Its data root cannot change: another tenant's job finds it emptied of what a's left.
        owner.client.api.tag("farm/busybox:latest", "left/by-a", "1")
        out.clear()
        b = StepContext("job", ws, {}, out.extend, threading.Event(), tenant="b")
        assert side.run_step(Step(name="s", run="true"), b) == 0 and b"docker daemon emptied" in out
        assert not owner.client.images.list(name="left/by-a") and owner.client.images.list(name="farm/busybox")
        out.clear()
        assert side.run_step(Step(name="s", run="true"), b) == 0 and b"emptied" not in out  # the same scope: kept
        side.close()
        assert owner.client.ping()  # not ours to stop
    finally:
        owner.close()


@pytest.mark.parametrize("driver", ["fuse-overlayfs", "vfs"])
def test_the_private_daemons_storage_driver_is_configurable(driver, dind_settings, tmp_path):
    runtime = DindRuntime(dind_settings(dind={"storage_driver": driver}), f"ex-{driver}")
    runtime.prepare()
    try:
        assert runtime.client.info()["Driver"] == driver
        ws = runtime.workspaces / "job-1"
        ws.mkdir(parents=True)
        if runtime.step_owner:
            give(ws, runtime.step_owner)
        ctx = StepContext("job", ws, {}, lambda b: None, threading.Event())
        assert runtime.run_step(Step(name="s", run="echo stored > out"), ctx) == 0
        assert (ws / "out").read_text() == "stored\n"
    finally:
        runtime.close()


def test_images_and_environment_for_the_private_daemon(dind_settings):
    runtime = DindRuntime(dind_settings(dind={"images": ["farm/debian:bookworm"], "env": {"NO_PROXY": "127.0.0.1"}}), "ex-seeded")
    runtime.prepare()
    try:
        runtime.client.images.get("farm/debian:bookworm")  # there before any step asks for it
        (daemon,) = daemons_of("ex-seeded")
        assert "NO_PROXY=127.0.0.1" in daemon.attrs["Config"]["Env"]
    finally:
        runtime.close()


def test_a_step_cannot_replace_the_pools_default_image_for_the_next_job(store, dind_settings, run_executor, dind_image, docker_image):
    """A step has its daemon's socket, and the daemon's data root is the pool's layer store:
    a re-tagged `farm/busybox:latest` would be the next job's step image. Images the host
    has are checked against the host's before each step."""
    run_executor(dind_settings(), "ex-dind-tag")
    trojan = ("printf 'FROM farm/busybox:latest\\nRUN echo trojan > /marker\\n' > Dockerfile"
              f" && docker build -q -t {docker_image} . && docker run --rm {docker_image} cat /marker")  # fmt: skip
    vandal = wait_done(store, store.enqueue(JobSpec(steps=[{"name": "s", "image": dind_image, "run": trojan}]), "t").id, timeout=180)
    assert vandal.state is JobState.SUCCEEDED and "trojan" in full_log(store, vandal.id), full_log(store, vandal.id)
    victim = wait_done(store, store.enqueue(JobSpec(steps=[{"name": "s", "run": "cat /marker || echo clean"}]), "t").id, timeout=120)
    log = full_log(store, victim.id)
    assert "clean" in log and "trojan" not in log, log
