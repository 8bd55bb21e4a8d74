"""Layer caches are kept apart by tenant and trust tier on both image runtimes, driven as
farm drives them: a real executor loop claiming image jobs from a real Redis, builds on the
real Docker daemon (docker, DooD) or on the executor's private one (dind). No mocks.

- docker: a build's cache candidates are the images earlier builds of the same tenant and
  tier made (`cache_from`); an image anyone else built on the host daemon is not one.
- dind: the private daemon runs on the layer store of the job's tenant and tier, and is
  restarted on another store when a job of another scope comes (a job of the same scope
  keeps it).

For both: another tenant's build of the same Dockerfile runs its RUN steps again, the same
tenant's rebuild is all cache hits (a multi-stage build's earlier stage too) and gives the
same image, and the same tenant's protected build takes nothing of its unprotected one. On
dind, too: what a step of tenant A leaves on the private daemon (containers, a volume, an
image tag) is gone for tenant B's next job on the same executor; A's next job finds only
the tag (its own layer cache).

One executor per runtime serves the module (a DinD daemon is slow to start), each on a pool
of its own; tenants are named afresh per run, so no earlier run's layers are theirs.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from agents.runtimes.docker import LayerScope
from farm.models import Job, JobSpec, JobState
from farm.settings import Settings
from farm.store.client import connect
from farm.store.executors import ExecutorState
from farm.store.jobs import JobStore
from farm.store.server import EmbeddedRedis
from tests.conftest import RunningExecutor, wait_for
from tests.integration.test_executor_local import full_log, wait_done

pytestmark = pytest.mark.docker

RUN = uuid.uuid4().hex[:8]
A, B = f"a-{RUN}", f"b-{RUN}"
TAG = f"farm-test/tenant-layers-{RUN}"
# Two stages; each RUN prints a line only when it runs (the log shows the instruction with
# `$((6 * 7))`, its output with 42), and the nonce keeps other runs' layers out of it.
DOCKERFILE = f"""FROM farm/busybox:latest AS build
RUN : {RUN} && echo "ran-build-$((6 * 7))" && date +%s%N > /stamp
FROM farm/busybox:latest
COPY --from=build /stamp /stamp
RUN echo "ran-final-$((6 * 7))" && cat /stamp > /final
"""
RESTARTED = "docker daemon restarted"


@dataclass
class Farm:
    runtime: str
    executor: RunningExecutor
    store: JobStore
    pool: str
    source: str

    def build(self, tenant: str, tier: str = "unprotected") -> tuple[Job, str]:
        spec = JobSpec(kind="image", pool=self.pool, source={"git": {"url": self.source}},
                       build={"context": "app", "tags": [f"{TAG}:{self.runtime}-{tenant}-{tier}"]})  # fmt: skip
        return self.finished(self.store.submit(spec, tenant, tier=tier).job)

    def step(self, tenant: str, image: str, script: str) -> tuple[Job, str]:
        spec = JobSpec(pool=self.pool, steps=[{"name": "s", "image": image, "run": script}])
        return self.finished(self.store.submit(spec, tenant).job)

    def finished(self, job: Job) -> tuple[Job, str]:
        done = wait_done(self.store, job.id, timeout=180)
        log = full_log(self.store, job.id)
        assert done.state is JobState.SUCCEEDED, log
        return done, log


@pytest.fixture(scope="module")
def jobs(redis_server: EmbeddedRedis) -> Iterator[JobStore]:
    client = connect(redis_server.url)
    client.flushall()  # once: the module's executors share it, each on its own pool
    yield JobStore(client)
    client.close()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    repo = tmp_path_factory.mktemp("tenant-layers") / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "app" / "Dockerfile").write_text(DOCKERFILE)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    return str(repo)


def _farm(runtime: str, request: pytest.FixtureRequest, redis_server: EmbeddedRedis, jobs: JobStore, source: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:  # fmt: skip
    pool = f"layers-{runtime}"
    overrides: dict[str, object] = {"executors": {"runtime": runtime, "pool": pool}, "pools": [pool],
                                    "docker": {"default_image": request.getfixturevalue("docker_image")}}  # fmt: skip
    if runtime == "dind":
        overrides["dind"] = {"image": request.getfixturevalue("dind_image")}
    data_dir = tmp_path_factory.mktemp(f"layers-{runtime}") / "data"
    ex = RunningExecutor(f"ex-layers-{runtime}", Settings.load(redis_url=redis_server.url, data_dir=data_dir, **overrides))
    try:
        wait_for(lambda: ex.executor.state is not ExecutorState.STARTING or ex.executor.error, 120,
                 interval=0.05, what=f"the {runtime} executor to start")  # fmt: skip
        assert ex.executor.error is None, f"the {runtime} runtime could not start: {ex.executor.error}"
        yield Farm(runtime, ex, jobs, pool, source)
    finally:
        ex.stop()


@pytest.fixture(scope="module")
def dood(request, redis_server, jobs, source, tmp_path_factory) -> Iterator[Farm]:  # type: ignore[no-untyped-def]
    yield from _farm("docker", request, redis_server, jobs, source, tmp_path_factory)
    host = docker.from_env()
    scopes = [LayerScope(t, tier) for t in (A, B) for tier in ("unprotected", "protected")]
    for image in host.images.list():  # what this module left on the host daemon: its tags and cache tags
        for ref in image.tags:
            if ref.startswith(TAG) or any(ref.startswith(f"{s.cache_repo}:") for s in scopes):
                host.images.remove(ref, force=True)
    host.close()


@pytest.fixture(scope="module")
def dind(request, redis_server, jobs, source, tmp_path_factory) -> Iterator[Farm]:  # type: ignore[no-untyped-def]
    yield from _farm("dind", request, redis_server, jobs, source, tmp_path_factory)


def ran(log: str) -> list[str]:
    return [stage for stage in ("build", "final") if f"ran-{stage}-42" in log]


@pytest.mark.parametrize("runtime", ["dood", "dind"])
def test_no_layer_crosses_scopes_and_a_rebuild_is_all_hits(runtime: str, request: pytest.FixtureRequest, tmp_path: Path):
    farm: Farm = request.getfixturevalue(runtime)
    if runtime == "dood":
        # An image of the same Dockerfile that nobody's farm build made (an operator's, or
        # one from before caches had scopes): a cache hit for any build without cache_from.
        context = tmp_path / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(DOCKERFILE)
        subprocess.run(["docker", "build", "-q", "--network", "none", "-t", f"{TAG}:outside", str(context)],
                       check=True, capture_output=True)  # fmt: skip

    first, log = farm.build(A)
    assert ran(log) == ["build", "final"] and "Using cache" not in log, log

    other, log = farm.build(B)  # another tenant, same tier, same Dockerfile
    assert ran(log) == ["build", "final"] and "Using cache" not in log, log
    assert other.image.id != first.image.id

    again, log = farm.build(A)  # the same tenant and tier: every step a hit, the same image
    assert ran(log) == [] and log.count("Using cache") == 3, log
    assert again.image.id == first.image.id

    protected, log = farm.build(A, "protected")  # the same tenant's protected builds take nothing of its unprotected ones
    assert ran(log) == ["build", "final"] and "Using cache" not in log, log
    assert protected.image.id not in (first.image.id, other.image.id)

    if runtime == "dind":  # each change of scope restarted the daemon on that scope's store
        assert all(RESTARTED in full_log(farm.store, j.id) for j in (other, again, protected))


def test_a_dind_steps_leftovers_do_not_reach_another_tenants_next_job(dind: Farm, dind_image: str, docker_image: str):
    leave = (f"docker run -d --network none --name left-running {docker_image} sleep 300 >/dev/null"
             f" && docker create --network none --name left-stopped {docker_image} true >/dev/null"
             f" && docker volume create left-volume >/dev/null && docker tag {docker_image} left/tag:1 && echo left")  # fmt: skip
    # What the private daemon holds, the looking step's own container (and the anonymous
    # volume its image declares) aside: they are the job's, made by farm, labelled farm.job.
    look = ("for c in $(docker ps -aq); do docker inspect -f 'container {{.Name}} {{index .Config.Labels \"farm.job\"}}' $c; done;"
            " docker volume ls --format 'volume {{.Name}}'; docker images --format 'image {{.Repository}}:{{.Tag}}'")  # fmt: skip
    leftovers = ("container /left-running", "container /left-stopped", "volume left-volume")
    job, log = dind.step(A, dind_image, leave)
    assert "left" in log, log

    job, log = dind.step(A, dind_image, look)  # the same scope: the daemon kept, the job's containers and volume gone
    assert RESTARTED not in log and f"image {dind_image}" in log, log
    assert "image left/tag:1" in log, log  # a tag is layer cache: the scope keeps it
    assert not [x for x in leftovers if x in log] and log.count("container ") == 1 and f" {job.id}" in log, log

    job, log = dind.step(B, dind_image, look)  # another tenant on the same executor: none of it
    assert RESTARTED in log and f"image {dind_image}" in log, log
    assert not [x for x in (*leftovers, "left/tag") if x in log] and log.count("container ") == 1, log
