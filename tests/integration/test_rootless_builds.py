"""Rootless image builds (agents/runtimes/rootless.py), with real buildah as the build user,
the host daemon's base image and a real registry on 127.0.0.1:

- a build streams its output, and a rebuild by a fresh builder is all cache hits;
- layers are never shared across tenants, nor from an unprotected build to a protected one;
- the host's base is copied once per node, into the bases store, which tenant builds read
  only (mounted read-only; a tenant's tag stays in its store; its own name for the base is
  moved back to the host's image); a store of another driver gets its own copy;
- a push gives the registry's digest, and a FROM of the registry's image builds;
- a FROM that is neither on the host nor in the registry fails, saying so;
- RUN has no network (unless the build asks for the host's) and its root is not host root;
- a stop abandons the build within 2 s and leaves no process; the store still builds;
- two builds at once (one store, or two tenants' first) both succeed, the base copied once;
  a store over its size is pruned;
- a missing build user is refused with what to do; an image job on the sandbox runtime builds.

Builds run as `sandbox.build_user` (farm-build), which .ci/run creates with its subuid range.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from agents.runtimes.base import StepContext
from agents.runtimes.rootless import BASES, LayerStore, RootlessBuilder, build_user, check
from farm.errors import RuntimeFailure
from farm.models import ImageBuild, JobSpec, JobState
from farm.settings import Settings
from tests.conftest import IN_CI, require_tool, wait_for

pytestmark = pytest.mark.docker
STEP_OWNER = (65532, 65532)  # who owns a sandbox job's workspace after its steps ran


@pytest.fixture(scope="module")
def rootless_ready() -> None:
    require_tool("buildah", "buildah")
    try:
        build_user(Settings().sandbox.build_user)
    except RuntimeFailure as e:
        if IN_CI:
            pytest.fail(f"rootless builds are required in CI: {e}")
        pytest.skip(str(e))


@pytest.fixture
def settings(rootless_ready, make_settings) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings()


@pytest.fixture
def host() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=60)
    yield client
    client.close()


class Build:
    """One build driven directly, as the sandbox runtime drives it: output, time, result."""

    def __init__(self, builder: RootlessBuilder, workspace: Path, *, tenant: str = "acme", tier: str = "unprotected",
                 registry: str | None = None, stop: threading.Event | None = None, **build: object) -> None:  # fmt: skip
        self.chunks: list[tuple[float, bytes]] = []
        self.stop = stop or threading.Event()
        self.ctx = StepContext("job1", workspace, {}, lambda b: self.chunks.append((time.monotonic(), b)), self.stop,
                               tenant=tenant, tier=tier)  # fmt: skip
        image = ImageBuild(context="app", tags=build.pop("tags", ["farm-test/app:1"]), **build)  # type: ignore[arg-type]
        self.args = (builder, image, workspace, registry)
        self.result, self.error, self.seconds, self.ended = None, None, 0.0, 0.0

    def run(self) -> Build:
        builder, build, workspace, registry = self.args
        t0 = time.monotonic()
        try:
            self.result = builder.build_image(build, workspace, self.ctx, registry)
        except RuntimeFailure as e:
            self.error = e
        self.ended = time.monotonic()
        self.seconds = self.ended - t0
        return self

    @property
    def log(self) -> str:
        return b"".join(c for _, c in self.chunks).decode(errors="replace")

    def ok(self) -> Build:
        assert self.error is None, f"{self.error}\n{self.log}"
        return self


def workspace(tmp_path: Path, dockerfile: str, name: str = "ws") -> Path:
    """A job's workspace as the sandbox's steps leave it: theirs, one file private."""
    ws = tmp_path / name
    (ws / "app").mkdir(parents=True)
    (ws / "app" / "Dockerfile").write_text(dockerfile)
    (ws / "app" / "hello.txt").write_text("hello\n")
    (ws / "app" / "hello.txt").chmod(0o600)
    for path in [ws, *ws.rglob("*")]:
        os.lchown(path, *STEP_OWNER)
    return ws


STAMPED = "RUN cat /proc/sys/kernel/random/uuid > /stamp && echo stamp=$(cat /stamp)\n"


def stamps(log: str) -> list[str]:
    return re.findall(r"^stamp=(\S+)", log, re.M)


def test_a_build_streams_and_a_fresh_builder_rebuilds_from_cache(settings, host, docker_image, tmp_path):
    ws = workspace(tmp_path, f"FROM {docker_image}\n{STAMPED}COPY hello.txt /hello.txt\nRUN echo marker && sleep 1\n")
    cold = Build(RootlessBuilder(settings, host), ws).run().ok()
    assert cold.result.id.startswith("sha256:") and cold.result.tags == ["farm-test/app:1"]
    marker_at = next(t for t, c in cold.chunks if b"marker" in c)
    assert cold.ended - marker_at > 0.5, "RUN's output reached the log only when the build ended"
    assert len(stamps(cold.log)) == 1 and "Using cache" not in cold.log, cold.log
    assert [p.stat().st_uid for p in (ws / "app", ws / "app" / "hello.txt")] == [STEP_OWNER[0]] * 2  # given back

    warm = Build(RootlessBuilder(settings, host), ws).run().ok()  # a fresh executor's builder: the store is on disk
    assert warm.log.count("Using cache") == 3 and stamps(warm.log) == [], warm.log  # RUN, COPY, RUN
    assert warm.result.id == cold.result.id
    assert warm.seconds < cold.seconds / 2, (cold.seconds, warm.seconds)
    print(f"cold {cold.seconds:.2f}s, rebuild {warm.seconds:.2f}s")


def test_layers_are_not_shared_across_tenants_nor_from_unprotected_to_protected(settings, host, docker_image, tmp_path):
    ws = workspace(tmp_path, f"FROM {docker_image}\n{STAMPED}COPY hello.txt /hello.txt\n")
    builder = RootlessBuilder(settings, host)
    first = Build(builder, ws, tenant="acme", tier="unprotected").run().ok()
    other = Build(builder, ws, tenant="globex", tier="unprotected").run().ok()
    protected = Build(builder, ws, tenant="acme", tier="protected").run().ok()
    for build in (other, protected):
        assert "Using cache" not in build.log, build.log
    runs = [stamps(b.log) for b in (first, other, protected)]
    assert all(len(r) == 1 for r in runs) and len({r[0] for r in runs}) == 3, runs  # RUN ran in each store
    stores = settings.rootless_dir
    assert sorted(str(p.relative_to(stores)) for p in stores.glob("*/*") if p.is_dir()) == [
        f"{BASES}/store", "acme/protected", "acme/unprotected", "globex/unprotected"]  # fmt: skip
    assert {p.stat().st_uid for p in stores.glob("*/*")} == {build_user(settings.sandbox.build_user).uid}
    assert (stores / BASES).stat().st_uid == 0 and (stores / BASES).stat().st_mode & 0o777 == 0o700


def fingerprint(store: LayerStore) -> dict[str, str]:
    """What containers/storage keeps of a store's images, layers and containers: hashes of its files."""
    return {str(p.relative_to(store.path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((store.path / "root").glob("*-*/*.json"))}  # fmt: skip


def images(store: LayerStore) -> list[dict]:
    code, out = store.query(["images", "--all", "--json", "--no-trunc"], threading.Event())
    assert code == 0, out
    return json.loads(out)


def test_the_base_is_copied_once_per_node_and_tenants_only_read_it(settings, host, docker_image, tmp_path):
    ws = workspace(tmp_path, f"FROM {docker_image}\n{STAMPED}")
    builder = RootlessBuilder(settings, host)
    first = Build(builder, ws, tenant="acme").run().ok()
    assert "copied" in first.log and "into the node's bases store" in first.log, first.log
    second = Build(builder, ws, tenant="globex").run().ok()
    assert "copied" not in second.log and "Using cache" not in second.log, second.log  # the base, not acme's RUN
    assert len({*stamps(first.log), *stamps(second.log)}) == 2
    store = builder.store(second.ctx)
    assert store.bases is not None and store.shares_bases()
    host_id = host.api.inspect_image(docker_image)["Id"].removeprefix("sha256:")
    assert [i["readonly"] for i in images(store) if i["id"] == f"sha256:{host_id}"] == [True]  # seen in the bases store only
    before = fingerprint(store.bases)

    # Inside a build's namespace the bases store is a read-only mount: the build user, whose
    # files they are, cannot write there.
    inside = build_user(settings.sandbox.build_user).mnt / "bases"
    code, out = store.query(["unshare", "sh", "-c", f"grep ' {inside} ' /proc/self/mountinfo; touch {inside}/x"],
                            threading.Event())  # fmt: skip
    mount = out.splitlines()[0].split()
    assert code != 0 and "Read-only file system" in out and mount[5].split(",")[0] == "ro", out
    # A tenant's tag of the base is a record in its own store; a name of its own for the base
    # (a build tagged it so) is moved back to the host's image by its next build FROM it.
    assert store.query(["tag", host_id, "farm-test/mine:1"], threading.Event())[0] == 0
    (ws / "app" / "Dockerfile").write_text(f"FROM {docker_image}\nRUN echo shadow > /shadow\n")
    Build(builder, ws, tenant="globex", tags=[docker_image]).run().ok()
    (ws / "app" / "Dockerfile").write_text(f"FROM {docker_image}\nRUN test ! -e /shadow && echo clean\n")
    clean = Build(builder, ws, tenant="globex").run().ok()
    assert "clean" in clean.log.split("RUN test", 1)[1] and "copied" not in clean.log, clean.log
    names = {n for i in images(store) for n in i["names"] or ()}
    assert {"localhost/farm-test/mine:1", f"localhost/{docker_image}"} <= names, names
    assert fingerprint(store.bases) == before and [i["names"] for i in images(store.bases)] == [[f"localhost/{docker_image}"]]


def test_a_push_gives_the_registrys_digest_and_its_image_is_a_base(settings, host, docker_image, registry_host, tmp_path):
    ws = workspace(tmp_path, f"FROM {docker_image}\nRUN echo base > /base\n")
    pushed = Build(RootlessBuilder(settings, host), ws, registry=registry_host, push=True,
                   tags=["farm-test/rootless:1", "farm-test/rootless:latest"]).run().ok()  # fmt: skip
    result = pushed.result
    assert result.digest and result.digest.startswith("sha256:")
    assert result.pushed == [f"{registry_host}/farm-test/rootless:1@{result.digest}",
                             f"{registry_host}/farm-test/rootless:latest@{result.digest}"]  # fmt: skip
    manifest = httpx.get(f"http://{registry_host}/v2/farm-test/rootless/manifests/1",
                         headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})  # fmt: skip
    assert manifest.status_code == 200 and manifest.headers["Docker-Content-Digest"] == result.digest

    ws2 = workspace(tmp_path, f"FROM {registry_host}/farm-test/rootless:1\nRUN cat /base\n", name="ws2")
    child = Build(RootlessBuilder(settings, host), ws2, tenant="other", registry=registry_host).run().ok()
    assert "base" in child.log.split("RUN cat /base", 1)[1], child.log


def test_a_from_neither_on_the_host_nor_in_the_registry_fails_clearly(settings, host, registry_host, tmp_path):
    ws = workspace(tmp_path, "FROM farm-test/absent:1\nRUN true\n")
    failed = Build(RootlessBuilder(settings, host), ws, registry=registry_host).run()
    assert failed.error is not None
    assert str(failed.error) == ("base image 'farm-test/absent:1' is not on the docker daemon, and farm pulls base "
                                 f"images only from images.registry ({registry_host})")  # fmt: skip
    ws2 = workspace(tmp_path, f"FROM {registry_host}/farm-test/absent:1\nRUN true\n", name="ws2")
    failed = Build(RootlessBuilder(settings, host), ws2, registry=registry_host).run()
    assert failed.error is not None and str(failed.error).startswith(
        f"base image '{registry_host}/farm-test/absent:1' could not be pulled from images.registry"), failed.error  # fmt: skip


def test_run_has_no_network_and_its_root_is_not_host_root(settings, host, docker_image, tmp_path, listener):
    port, heard = listener
    probe = f"RUN cat /proc/self/uid_map; (nc -w 2 127.0.0.1 {port} </dev/null || echo unreachable) 2>&1\n"
    ws = workspace(tmp_path, f"FROM {docker_image}\n{probe}")
    isolated = Build(RootlessBuilder(settings, host), ws).run().ok()
    assert "unreachable" in isolated.log and "reached-the-node" not in isolated.log and not heard, isolated.log
    user = build_user(settings.sandbox.build_user)
    maps = re.findall(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s*$", isolated.log, re.M)
    assert maps and maps[0] == ("0", str(user.uid), "1"), isolated.log  # RUN's root is the build user
    assert all(outside != "0" for _, outside, _ in maps), maps  # and no uid of RUN is host root

    # The network is not part of a RUN's cache key (in buildah as in docker): another RUN.
    (ws / "app" / "Dockerfile").write_text(f"FROM {docker_image}\nRUN echo host-network; {probe[4:]}")
    hosted = Build(RootlessBuilder(settings, host), ws, network="host").run().ok()  # tenants allowed it only (the API)
    assert "reached-the-node" in hosted.log and heard, hosted.log


def build_processes(store: Path) -> list[str]:
    """Processes of a build of `store`: the namespace's first process names the store, and
    when it is gone the kernel has killed the rest of its PID namespace."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and str(store) in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def test_a_stop_abandons_the_build_within_2s_and_leaves_nothing(settings, host, docker_image, tmp_path):
    ws = workspace(tmp_path, f"FROM {docker_image}\nRUN echo sleeping && sleep 60\n")
    builder = RootlessBuilder(settings, host)
    build = Build(builder, ws)
    thread = threading.Thread(target=build.run)
    thread.start()
    wait_for(lambda: "sleeping" in build.log, 60, what="RUN to start")
    store = settings.rootless_dir / "acme" / "unprotected"
    assert build_processes(store)
    stopped_at = time.monotonic()
    build.stop.set()
    thread.join(10)
    assert not thread.is_alive() and str(build.error) == "build stopped", build.error
    assert build.ended - stopped_at < 2.0, build.ended - stopped_at
    print(f"stopped in {build.ended - stopped_at:.2f}s")
    assert build_processes(store) == []
    assert [p.stat().st_uid for p in (ws / "app", ws / "app" / "hello.txt")] == [STEP_OWNER[0]] * 2

    # The store still builds, and the next build removes the container the stopped one left.
    (ws / "app" / "Dockerfile").write_text(f"FROM {docker_image}\nRUN echo after\n")
    Build(builder, ws).run().ok()
    code, out = builder.store(build.ctx).query(["containers", "--quiet"], threading.Event())
    assert code == 0 and out.strip() == "", out


@pytest.mark.parametrize("tenants", [("acme", "acme"), ("acme", "globex")], ids=["one-store", "two-tenants"])
def test_two_builds_at_once_both_succeed(settings, host, docker_image, tmp_path, tenants):
    builder = RootlessBuilder(settings, host)
    builds = [Build(builder, workspace(tmp_path, f"FROM {docker_image}\n{STAMPED}RUN echo {n} > /n\nCOPY hello.txt /\n",
                                       name=f"ws{n}"), tenant=tenant, tags=[f"farm-test/concurrent:{n}"])
              for n, tenant in enumerate(tenants)]  # fmt: skip
    threads = [threading.Thread(target=b.run) for b in builds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for b in builds:
        b.ok()
    assert builds[0].result.id != builds[1].result.id
    assert builds[0].log.count("copied") + builds[1].log.count("copied") == 1  # the base was copied in once


def test_a_store_over_its_size_is_pruned_vfs_too(rootless_ready, make_settings, host, docker_image, tmp_path):
    settings = make_settings(sandbox={"build_store_max_bytes": 1})
    ws = workspace(tmp_path, f"FROM {docker_image}\n{STAMPED}")
    Build(RootlessBuilder(settings, host), ws, tenant="other").run().ok()  # the bases store takes the node's driver
    builder = RootlessBuilder(settings, host)
    builder.drivers = ("vfs",)  # the driver of nodes whose kernel cannot mount overlay in a user namespace
    first = Build(builder, ws).run().ok()
    assert "in the vfs layer store" in first.log and "over sandbox.build_store_max_bytes" in first.log, first.log
    store = builder.store(first.ctx)
    assert store.size() < 1024 * 1024, store.size()  # everything went, base image included if it was there
    again = Build(builder, ws).run().ok()  # and comes back: the RUN run again
    assert len(stamps(again.log)) == 1, again.log
    assert store.bases is not None
    if store.bases.known_driver() == "vfs":  # a node without overlay: the vfs store reads the bases store
        assert store.shares_bases() and "copied" not in first.log + again.log, again.log
    else:  # the bases store is overlay, which a vfs store cannot read: its own copy, again after the prune
        assert not store.shares_bases() and "copied" in first.log and "into the layer store of acme/" in again.log, again.log


def test_a_missing_build_user_is_refused_with_what_to_do(rootless_ready, make_settings, host, tmp_path):
    settings = make_settings(sandbox={"build_user": "farm-no-such-user"})
    missing = r"'farm-no-such-user' .*does not exist: images/add-build-user.sh .*useradd .*--add-subuids"
    with pytest.raises(RuntimeFailure, match=missing):
        check(settings)
    failed = Build(RootlessBuilder(settings, host), workspace(tmp_path, "FROM scratch\n")).run()
    assert failed.error is not None and "useradd" in str(failed.error)


def test_check_passes_here(settings):
    assert check(settings) in ("overlay", "vfs")
    assert list(settings.rootless_dir.iterdir()) == []  # the probe's store is gone


def test_an_image_job_on_the_sandbox_runtime_builds_rootless(rootless_ready, store, make_settings, run_executor, docker_image,
                                                             registry_host, tmp_path):  # fmt: skip
    from farm.store.executors import ExecutorState
    from tests.integration.test_executor_local import full_log, wait_done
    from tests.integration.test_image_jobs import repo_with

    settings = make_settings(executors={"runtime": "sandbox"}, docker={"default_image": docker_image},
                             images={"registry": registry_host})  # fmt: skip
    ex = run_executor(settings, "ex-rootless")
    wait_for(lambda: ex.executor.state is not ExecutorState.STARTING, 60, what="the sandbox executor to start")
    assert ex.executor.error is None, ex.executor.error
    url = repo_with(tmp_path, f"FROM {docker_image}\nRUN cat /proc/self/uid_map\n")
    build = {"context": "app", "tags": ["farm-test/sandboxed:1"], "push": True}
    spec = JobSpec(kind="image", source={"git": {"url": url}}, build=build)  # type: ignore[arg-type]
    done = wait_done(store, store.submit(spec, "t", tier="protected").job.id, timeout=60)
    log = full_log(store, done.id)
    assert done.state is JobState.SUCCEEDED, log
    assert "in the overlay layer store of t/protected" in log or "in the vfs layer store of t/protected" in log, log
    assert done.image.pushed == [f"{registry_host}/farm-test/sandboxed:1@{done.image.digest}"]
    assert (settings.rootless_dir / "t" / "protected" / "root").is_dir()
    shutil.rmtree(settings.rootless_dir, ignore_errors=True)
