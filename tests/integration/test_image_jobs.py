"""Image jobs on the docker runtime (DooD): build from the job's source, stream the build
log, tag, and push to a real registry on 127.0.0.1."""

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


def test_an_image_job_builds_from_its_source_and_pushes(store, make_settings, run_executor, docker_image, registry_host, tmp_path):
    run_executor(make_settings(executors={"runtime": "docker"}, docker={"default_image": docker_image},
                               images={"registry": registry_host}))  # fmt: skip
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
    out = docker.from_env().containers.run(image.id, "cat /greeting", remove=True, network_mode="none")
    assert out == b"from-farm\n"


def test_a_failing_build_fails_the_job_with_its_reason(store, make_settings, run_executor, docker_image, tmp_path):
    run_executor(make_settings(executors={"runtime": "docker"}, docker={"default_image": docker_image}))
    url = repo_with(tmp_path, f"FROM {docker_image}\nRUN exit 7\n")
    spec = JobSpec(kind="image", source={"git": {"url": url}}, build={"context": "app", "tags": ["farm-test/broken:1"]})
    done = wait_done(store, store.enqueue(spec, "t").id, timeout=120)
    assert done.state is JobState.FAILED and done.error is ErrorCode.BUILD_FAILED
    assert "build failed" in full_log(store, done.id) and done.image is None


def test_image_jobs_need_the_docker_runtime(store, make_settings, run_executor, tmp_path):
    run_executor(make_settings())  # local runtime
    url = repo_with(tmp_path, "FROM scratch\n")
    done = wait_done(store, store.enqueue(JobSpec(kind="image", source={"git": {"url": url}},
                                                  build={"context": "app", "tags": ["x/y:1"]}), "t").id)  # fmt: skip
    assert done.state is JobState.FAILED and done.error is ErrorCode.BUILD_FAILED
    assert "image jobs need the docker runtime" in full_log(store, done.id)
