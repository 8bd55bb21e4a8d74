"""Shared fixtures: one real embedded Redis per session (flushed per test), one local Ray
per session, and the Docker daemon with a locally made base image.

Docker and Ray tests never skip in CI (CI=true): a missing daemon there is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from farm.settings import Settings
from farm.store.client import connect
from farm.store.executors import ExecutorRegistry
from farm.store.jobs import JobStore
from farm.store.server import EmbeddedRedis

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"
BASE_IMAGE = "farm/busybox:latest"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    client = connect(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def store(redis_url: str) -> JobStore:
    return JobStore(connect(redis_url))


@pytest.fixture
def registry(store: JobStore) -> ExecutorRegistry:
    return ExecutorRegistry(store.client, store.keys)


@pytest.fixture
def make_settings(redis_url: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        base: dict[str, object] = {"redis_url": redis_url, "data_dir": tmp_path / "data"}
        base.update(overrides)
        return Settings.load(**base)

    return make


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The local base image for docker-runtime steps; made from busybox-static if absent."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as e:  # noqa: BLE001
        if IN_CI:
            pytest.fail(f"Docker is required in CI: {e}")
        pytest.skip(f"no Docker daemon: {e}")
    if not client.images.list(name=BASE_IMAGE):
        subprocess.run([str(REPO / "images" / "make-bases.sh"), "busybox"], check=True)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def dind_image(docker_image: str) -> str:
    """The executor-dind image (a private dockerd), built from images/ on the local base
    (made first if absent; debootstrap needs root). Cheap when nothing changed."""
    require_tool("debootstrap", "debootstrap")
    run = subprocess.run([str(REPO / "images" / "build.sh"), "executor-dind"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def require(what: str, found: object, why: str) -> None:
    """Fail in CI (which installs everything the tests need), skip elsewhere."""
    if not found:
        if IN_CI:
            pytest.fail(f"{what} is required in CI: {why}")
        pytest.skip(f"no {what}: {why}")


def require_tool(name: str, package: str) -> str:
    """The path of a tool from a Debian package (.ci/run installs it)."""
    import shutil

    path = shutil.which(name)
    require(name, path, f"Debian's {package} package")
    return path  # type: ignore[return-value]


@pytest.fixture(scope="session")
def registry_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real image registry (Debian's docker-registry) on 127.0.0.1: host:port."""
    from farm.store.server import free_port

    binary = require_tool("docker-registry", "docker-registry")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    (root / "config.yml").write_text(
        f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx

    wait_for(lambda: _answers(httpx, f"http://127.0.0.1:{port}/v2/"), 30, interval=0.1, what="the registry")
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def _answers(httpx, url: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    from farm.embedded import init_ray

    init_ray(num_cpus=2)
    yield
    import ray

    ray.shutdown()


def end_actors(handles: list[object], timeout: float = 15) -> None:
    """Kill Ray actors and wait until each is gone: ray.kill only asks, and an executor
    still alive for a moment after its test would claim the next test's jobs (the Redis
    server is shared, flushed per test)."""
    import ray
    from ray.exceptions import RayActorError

    for handle in handles:
        ray.kill(handle, no_restart=True)
    for handle in handles:
        deadline = time.monotonic() + timeout
        while True:
            try:
                ray.get(handle.__ray_ready__.remote(), timeout=1)  # type: ignore[attr-defined]
            except RayActorError:
                break
            except ray.exceptions.GetTimeoutError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"actor {handle} still alive {timeout}s after ray.kill")
            time.sleep(0.05)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.02, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RunningExecutor:
    """An Executor loop on a thread (no Ray): for tests of the executor's behaviour."""

    def __init__(self, executor_id: str, settings: Settings) -> None:
        from agents.executor import build_executor

        self.executor = build_executor(executor_id, settings)
        self.thread = threading.Thread(target=self.executor.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.executor.drain()
        self.thread.join(30)
        assert not self.thread.is_alive(), "executor did not drain"


@pytest.fixture
def run_executor() -> Iterator[Callable[..., RunningExecutor]]:
    started: list[RunningExecutor] = []

    def start(settings: Settings, executor_id: str = "ex-test") -> RunningExecutor:
        ex = RunningExecutor(executor_id, settings)
        started.append(ex)
        return ex

    yield start
    for ex in started:
        ex.stop()


class ServedApp:
    """The API app served by a real uvicorn on 127.0.0.1 in a thread: for what TestClient
    cannot show (clients that hang up, bodies sent in chunks, the server's own limits)."""

    def __init__(self, app: object, *, graceful_s: float = 1.0, port: int | None = None) -> None:
        import uvicorn

        from farm.store.server import free_port

        self.port = port or free_port()  # a port given: the app's settings name it (an OIDC issuer)
        self.url = f"http://127.0.0.1:{self.port}"
        from farm.api.server import BoundedHttpToolsProtocol

        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,  # type: ignore[arg-type]
                                http=BoundedHttpToolsProtocol,
                                timeout_graceful_shutdown=graceful_s)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 15, what="uvicorn to start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def serve_app() -> Iterator[Callable[..., ServedApp]]:
    served: list[ServedApp] = []

    def serve(app: object, **kw: object) -> ServedApp:
        s = ServedApp(app, **kw)  # type: ignore[arg-type]
        served.append(s)
        return s

    yield serve
    for s in served:
        s.stop()


_EXECUTOR_MAIN = """
import json, logging, sys
from agents.executor import build_executor
from farm.settings import Settings
logging.basicConfig(level=logging.INFO)
build_executor(sys.argv[1], Settings.load(**json.loads(sys.argv[2]))).run()
"""


def executor_process(settings: Settings, executor_id: str) -> subprocess.Popen[bytes]:
    """An executor in a process of its own (as a Ray worker hosts one): for tests that
    SIGKILL it the way a crash would."""
    import json

    from farm.ray_seam import actor_settings

    plain = {**actor_settings(settings), "admin_token": None}
    return subprocess.Popen([sys.executable, "-c", _EXECUTOR_MAIN, executor_id, json.dumps(plain)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP listener on 127.0.0.1 answering every connection with `reached-the-node`: its
    port, and a list with one entry per connection it took (what a step must not reach)."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    heard: list[bytes] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"reached-the-node\n")
                heard.append(b"connected")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], heard
    done.set()
    thread.join(2)
    server.close()


def processes(marker: str) -> list[int]:
    """Live processes of this kernel whose command line holds `marker` (zombies are dead)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes() and (entry / "stat").read_text().split()[2] != "Z":
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue  # exited while we looked
    return found

