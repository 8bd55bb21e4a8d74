"""Image jobs on the docker runtime (DooD) and the dind runtime (a private daemon per
executor): build from the job's source, stream the build log, tag, and push to a real
registry on 127.0.0.1."""

import subprocess

import docker
import httpx
import pytest

from farm.models import ErrorCode, JobSpec, JobState
from tests.integration.test_executor_local import full_log, wait_done

pytestmark = pytest.mark.docker


def repo_with(tmp_path, dockerfile: str):
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "app").mkdir()
    (repo / "app" / "Dockerfile").write_text(dockerfile)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    return str(repo)


@pytest.fixture
def host_images():
    """Images a test put on the host's daemon, removed afterwards."""
    made: list[str] = []
    yield made
    client = docker.from_env()
    for ref in made:
        try:
            client.images.remove(ref, force=True)
        except docker.errors.ImageNotFound:
            pass


@pytest.mark.parametrize("runtime", ["docker", "dind"])
def test_an_image_job_builds_from_its_source_and_pushes(
    runtime, store, make_settings, run_executor, docker_image, registry_host, tmp_path, request, host_images
):
    extra = {"dind": {"image": request.getfixturevalue("dind_image")}} if runtime == "dind" else {}
    run_executor(make_settings(executors={"runtime": runtime}, docker={"default_image": docker_image},
                               images={"registry": registry_host}, **extra))  # fmt: skip
    url = repo_with(tmp_path, f'FROM {docker_image}\nARG GREETING=hello\nRUN echo "$GREETING" > /greeting\n')
    spec = JobSpec(kind="image", source={"git": {"url": url}}, build={
        "context": "app", "tags": ["farm-test/app:1", "farm-test/app:latest"], "build_args": {"GREETING": "from-farm"}, "push": True,
    })  # fmt: skip
    done = wait_done(store, store.enqueue(spec, "t").id, timeout=120)
    log = full_log(store, done.id)
    assert done.state is JobState.SUCCEEDED, log
    assert "RUN echo" in log and "pushed" in log  # the build's own output streamed into the log
    image = done.image
    assert image.id.startswith("sha256:") and image.digest.startswith("sha256:")
    assert [p.split("@")[0] for p in image.pushed] == [f"{registry_host}/farm-test/app:1", f"{registry_host}/farm-test/app:latest"]
    tags = httpx.get(f"http://{registry_host}/v2/farm-test/app/tags/list").json()["tags"]
    assert sorted(tags) == ["1", "latest"]
    manifest = httpx.head(f"http://{registry_host}/v2/farm-test/app/manifests/1",
                          headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})  # fmt: skip
    assert manifest.headers["docker-content-digest"] == image.digest
    # What the registry holds is the image that was built: pulled back onto the host's daemon.
    ref = f"{registry_host}/farm-test/app@{image.digest}"
    host_images.extend([image.id] if runtime == "docker" else [])
    host_images.append(ref)
    docker.from_env().images.pull(ref)
    out = docker.from_env().containers.run(ref, "cat /greeting", remove=True, network_mode="none")
    assert out == b"from-farm\n"
    on_host = {t for i in docker.from_env().images.list() for t in i.tags}
    assert ("farm-test/app:1" in on_host) is (runtime == "docker")  # a DinD build never touches the host's daemon


def test_a_failing_build_fails_the_job_with_its_reason(store, make_settings, run_executor, docker_image, tmp_path):
    run_executor(make_settings(executors={"runtime": "docker"}, docker={"default_image": docker_image}))
    url = repo_with(tmp_path, f"FROM {docker_image}\nRUN exit 7\n")
    spec = JobSpec(kind="image", source={"git": {"url": url}}, build={"context": "app", "tags": ["farm-test/broken:1"]})
    done = wait_done(store, store.enqueue(spec, "t").id, timeout=120)
    assert done.state is JobState.FAILED and done.error is ErrorCode.BUILD_FAILED
    assert "build failed" in full_log(store, done.id) and done.image is None


def test_a_base_image_the_daemon_lacks_is_not_pulled_from_a_public_registry(store, make_settings, run_executor, docker_image, tmp_path):
    run_executor(make_settings(executors={"runtime": "docker"}, docker={"default_image": docker_image}))
    url = repo_with(tmp_path, "FROM example.org/nobody/nothing:1\nRUN true\n")
    spec = JobSpec(kind="image", source={"git": {"url": url}}, build={"context": "app", "tags": ["farm-test/nobase:1"]})
    done = wait_done(store, store.enqueue(spec, "t").id, timeout=60)
    assert done.state is JobState.FAILED and done.error is ErrorCode.BUILD_FAILED
    assert "base image 'example.org/nobody/nothing:1' is not on the docker daemon" in full_log(store, done.id)


def test_image_jobs_need_the_docker_runtime(store, make_settings, run_executor, tmp_path):
    run_executor(make_settings())  # local runtime
    url = repo_with(tmp_path, "FROM scratch\n")
    done = wait_done(store, store.enqueue(JobSpec(kind="image", source={"git": {"url": url}},
                                                  build={"context": "app", "tags": ["x/y:1"]}), "t").id)  # fmt: skip
    assert done.state is JobState.FAILED and done.error is ErrorCode.BUILD_FAILED
    assert "image jobs need the docker, dind or sandbox runtime" in full_log(store, done.id)


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_a_quiet_build_stops_at_a_cancel_or_timeout_and_leaves_nothing(how, store, make_settings, run_executor, docker_image,
                                                                      tmp_path, host_images):  # fmt: skip
    """Found by a red-team run: the build was checked for a stop only when it printed, so a
    `RUN sleep` outlived its job's cancel and timeout and was tagged afterwards."""
    import time

    client = docker.from_env()
    tag = f"farm-test/quiet-{how}:1"
    host_images.append(tag)
    run_executor(make_settings(executors={"runtime": "docker"}, docker={"default_image": docker_image}))
    import uuid

    url = repo_with(tmp_path, f"FROM {docker_image}\nRUN echo {uuid.uuid4().hex} && sleep 30\n")  # never a cached layer
    spec = JobSpec(kind="image", source={"git": {"url": url}}, build={"context": "app", "tags": [tag]},
                   timeout_s=4 if how == "timeout" else 600)  # fmt: skip
    job = store.enqueue(spec, "t")
    deadline = time.monotonic() + 60
    while "RUN echo" not in full_log(store, job.id):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    t0 = time.monotonic()
    if how == "cancel":
        store.cancel(job.id)
    try:
        done = wait_done(store, job.id, timeout=30)
    except AssertionError:
        raise AssertionError(full_log(store, job.id)) from None
    assert done.state is (JobState.CANCELLED if how == "cancel" else JobState.TIMED_OUT)

    def sleeping() -> int:
        return sum(1 for c in client.containers.list() if "sleep 30" in " ".join(c.attrs["Config"]["Cmd"] or []))

    while sleeping():
        assert time.monotonic() - t0 < 10, f"the build's container outlived its job: {full_log(store, job.id)}"
        time.sleep(0.2)
    time.sleep(1)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(tag)
