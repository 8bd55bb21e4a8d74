"""The escape suite's fixtures: the farm under attack (one per module) and one executor per
runtime (module-scoped, as tests/integration/test_runtime_contract.py does: a DinD daemon is
slow to start), on a pool of its own.

The farm is laid out as `farm up` lays it out: a 0700 data dir holding the admin token
(0600), the embedded Valkey's directory with its password, workspaces, caches and artifacts;
plus a planted file, a victim directory the link attacks aim at, and a canary process
holding one secret in its environment and another in its memory. The API is served on
127.0.0.1 and Ray runs on loopback (its GCS port is an attack's target).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import pytest

from agents.cache import unmount_under
from farm.embedded import ensure_admin_token
from farm.settings import ExecutorSettings, Settings
from farm.store.client import connect
from farm.store.executors import ExecutorState
from farm.store.jobs import JobStore
from farm.store.server import EmbeddedRedis
from tests.conftest import BASE_IMAGE, IN_CI, REPO, RunningExecutor, ServedApp, require_tool, wait_for
from tests.security.attacks import DISK_QUOTA, MEMORY, pids_limit
from tests.security.harness import Host, Target, make_repo, tools_image

RUNTIMES = [
    pytest.param("local", id="local"),
    pytest.param("docker", id="docker", marks=pytest.mark.docker),
    pytest.param("dind", id="dind", marks=pytest.mark.docker),
    pytest.param("sandbox", id="sandbox", marks=pytest.mark.docker),
]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _docker() -> Any:
    try:
        import docker

        client = docker.from_env(timeout=60)
        client.ping()
        return client
    except Exception as e:  # noqa: BLE001
        if IN_CI:
            pytest.fail(f"Docker is required in CI: {e}")
        return None


@pytest.fixture(scope="module")
def escape_host(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> Iterator[Host]:
    import httpx
    import ray

    from farm.api.app import create_app

    busybox = require_tool("busybox", "busybox-static")  # the local runtime's steps use the node's
    base = tmp_path_factory.mktemp("escape")
    data = base / "data"
    data.mkdir(mode=0o700)
    planted = f"PLANTED-{secrets.token_hex(16)}"
    _write_private(data / "planted", planted)
    token, _ = ensure_admin_token(Settings.load(data_dir=data))
    (data / "victim").mkdir()
    victim_text = f"victim-{secrets.token_hex(8)}\n"
    (data / "victim" / "keep").write_text(victim_text)
    (data / "victim" / "chown-me").write_text("root's\n")
    with ExitStack() as cleanup:
        cleanup.callback(unmount_under, data)  # the bait, and what a swapped workspace left mounted beside itself
        redis = EmbeddedRedis(data / "redis")
        cleanup.callback(redis.stop)
        redis.start()
        # A process of farm's user holding one secret in its environment and another only in its
        # memory (not in its environment, command line or files). Not Valkey itself: it rewrites
        # its argv and environment area for its process title, so /proc shows neither.
        canary = secrets.token_hex(16)
        ptrace_secret = f"FARM-PTRACE-{secrets.token_hex(12)}"
        holder = subprocess.Popen([busybox, "sh", "-c", "read -r S; read -r _", "farm-escape-ptrace"], stdin=subprocess.PIPE,
                                  env={"PATH": os.environ.get("PATH", ""), "FARM_ESCAPE_CANARY": canary})  # fmt: skip
        cleanup.callback(_end, holder)
        assert holder.stdin is not None
        holder.stdin.write(f"{ptrace_secret}\n".encode())
        holder.stdin.flush()
        gcs_port = int(ray.get_runtime_context().gcs_address.rsplit(":", 1)[1])
        api = ServedApp(create_app(Settings.load(redis_url=redis.url, data_dir=data, admin_token=token)))
        cleanup.callback(api.stop)
        httpx.get(f"{api.url}/healthz", timeout=30).raise_for_status()  # its first answer is slow (connections to open)
        image, docker_id = "", None
        if (client := _docker()) is not None:
            with closing(client):
                if not client.images.list(name=BASE_IMAGE):
                    subprocess.run([str(REPO / "images" / "make-bases.sh"), "busybox"], check=True)
                image, docker_id = tools_image(client, BASE_IMAGE), client.info()["ID"]
        yield Host(
            data=data, redis_url=redis.url,
            secrets={"planted": planted, "admin-token": token, "valkey-password": redis.password, "environ": canary,
                     "ptrace": ptrace_secret},
            ports={"valkey": redis.port, "api": api.port, "ray": gcs_port},
            boot_id=Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
            docker_id=docker_id, image=image, repo=make_repo(base, data), victim_text=victim_text, bait=data / "bait" / "mnt",
        )  # fmt: skip


def _end(holder: subprocess.Popen[bytes]) -> None:
    """The canary ends when its input does; killed (by its pid) if it does not."""
    if holder.stdin is not None:
        holder.stdin.close()
    try:
        holder.wait(5)
    except subprocess.TimeoutExpired:
        holder.kill()
        holder.wait()


@pytest.fixture(scope="module", params=RUNTIMES)
def target(request: pytest.FixtureRequest, escape_host: Host) -> Iterator[Target]:
    """A running executor of one runtime, shared by the module's attacks on that runtime."""
    runtime: str = request.param
    pool = f"escape-{runtime}"
    executors: dict[str, object] = {"runtime": runtime, "pool": pool, "pids_limit": pids_limit(runtime)}
    if "disk_quota_bytes" in ExecutorSettings.model_fields:
        executors["disk_quota_bytes"] = DISK_QUOTA
    overrides: dict[str, object] = {"executors": executors, "pools": [pool]}
    docker = None
    if runtime != "local":
        request.getfixturevalue("docker_image")  # fails in CI without Docker, skips elsewhere
        docker = _docker()
        overrides["docker"] = {"default_image": escape_host.image, "memory": MEMORY, "pids_limit": pids_limit(runtime)}
    if runtime == "dind":
        overrides["dind"] = {"image": request.getfixturevalue("dind_image")}
    settings = Settings.load(redis_url=escape_host.redis_url, data_dir=escape_host.data, **overrides)
    ex = RunningExecutor(f"ex-escape-{runtime}", settings)
    store = JobStore(connect(escape_host.redis_url))
    t = Target(runtime, ex, store, settings, escape_host, pool, docker=docker)
    try:
        wait_for(lambda: ex.executor.state is not ExecutorState.STARTING or ex.executor.error, 120,
                 interval=0.05, what=f"the {runtime} executor to start")  # fmt: skip
        assert ex.executor.error is None, f"the {runtime} runtime could not start: {ex.executor.error}"
        yield t
    finally:
        ex.stop()
        t.close()
        store.client.close()
        if docker is not None:
            docker.close()
