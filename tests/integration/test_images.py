"""images/: the three Dockerfiles build here from the locally made base (no registry to
pull from) and what they build runs."""

import subprocess

import docker
import pytest

from tests.conftest import REPO, require_tool

pytestmark = pytest.mark.docker

NAMES = ["farm", "executor-dood", "executor-dind"]


@pytest.fixture(scope="module")
def built(docker_image) -> dict[str, str]:
    require_tool("debootstrap", "debootstrap")
    run = subprocess.run([str(REPO / "images" / "build.sh"), *NAMES], capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr
    return dict(zip(NAMES, run.stdout.split(), strict=True))


def sh(image: str, script: str) -> str:
    out = docker.from_env().containers.run(image, ["/bin/sh", "-c", script], entrypoint=[], remove=True, network_mode="none")
    return out.decode()


def test_each_dockerfile_starts_from_a_base_argument():
    for name in NAMES:
        lines = (REPO / "images" / name / "Dockerfile").read_text().splitlines()
        assert any(line.startswith("ARG BASE=") for line in lines) and "FROM ${BASE}" in lines, name


def test_the_control_plane_image_runs_farm(built):
    assert "farm: an elastic build farm" in sh(built["farm"], "farm --help")
    assert sh(built["farm"], "id -un").strip() == "farm"


def test_the_dood_executor_image_has_farms_executor_and_git(built):
    out = sh(built["executor-dood"], "python -c 'import agents.executor, ray; print(ray.__version__)' && git --version")
    import ray

    assert ray.__version__ in out and "git version" in out  # the pinned Ray, as on this side


def test_the_dind_executor_image_has_a_docker_daemon(built):
    assert "Docker version" in sh(built["executor-dind"], "dockerd --version")
