"""images/: the Dockerfiles build here from the locally made base (no registry to pull
from) and what they build runs."""

import re
import subprocess
import textwrap

import docker
import pytest

from tests.conftest import REPO, require_tool

pytestmark = pytest.mark.docker

NAMES = ["farm", "executor-dood", "executor-dind", "executor-sandbox"]


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


def test_the_sandbox_executor_image_has_buildah_and_its_user(built):
    out = sh(built["executor-sandbox"], "id farm-build; cat /etc/subuid /etc/subgid; buildah --version; "
             "echo runtime=$FARM_EXECUTORS__RUNTIME; find / -xdev -type f -perm /6000 | wc -l; "
             "python -c 'import os; print(os.getxattr(\"/usr/bin/newuidmap\", \"security.capability\").hex()[:8])'")  # fmt: skip
    assert "uid=10002(farm-build) gid=10002(farm-build)" in out and out.count("farm-build:1000000:65536") == 2
    assert "buildah version" in out and "runtime=sandbox" in out
    lines = out.split()
    assert lines[-2] == "0"  # no setuid or setgid program
    assert lines[-1] == "01000002"  # newuidmap: a file capability (v2), not setuid root


BUILD = textwrap.dedent("""
    import threading
    from pathlib import Path
    from agents.runtimes.base import StepContext
    from agents.runtimes.sandbox import SandboxRuntime
    from farm.models import ImageBuild
    from farm.settings import Settings

    rt = SandboxRuntime(Settings.load(data_dir=Path("/var/lib/farm"), executors={"runtime": "sandbox"}))
    ws = Path("/var/lib/farm/workspaces/e1/job1-1")
    ws.mkdir(parents=True)
    (ws / "Dockerfile").write_text("FROM %s\\nRUN cat /proc/self/uid_map\\nCOPY Dockerfile /copied\\n")
    out = []
    ctx = StepContext("job1", ws, {}, out.append, threading.Event(), tenant="t1", tier="unprotected")
    print(rt.build_image(ImageBuild(tags=["t1/app:1"]), ws, ctx, None).id)
    print(b"".join(out).decode())
""")


def test_the_sandbox_executor_builds_rootless_as_the_charts_pod_runs_it(built, docker_image):
    """The helm chart's securityContext of the sandbox group, as Docker gives it: not privileged,
    these capabilities only, no seccomp profile (AppArmor is not here). A build through farm's
    rootless builder gets the build user's whole id range."""
    caps = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETUID", "SETGID", "SYS_ADMIN"]
    out = docker.from_env().containers.run(
        built["executor-sandbox"], ["/opt/farm/bin/python", "-c", BUILD % docker_image], entrypoint=[], remove=True,
        network_mode="none", cap_drop=["ALL"], cap_add=caps, security_opt=["seccomp=unconfined"],
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        tmpfs={"/var/lib/farm/rootless": "exec"},
    ).decode()  # fmt: skip
    assert out.startswith("sha256:"), out
    assert re.search(r"^\s*1\s+1000000\s+65536\s*$", out, re.M), out  # the whole range, not a single-id map
