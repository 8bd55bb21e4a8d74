"""The `dind` runtime: each executor owns a private Docker daemon (Docker-in-Docker).

Steps and image builds run exactly as in the docker runtime (agents/runtimes/docker.py),
but against the executor's own dockerd, and steps get that daemon's socket
(`DOCKER_HOST=unix:///var/run/docker.sock`), so a step may `docker build`/`docker run`.
Jobs never touch the host's daemon or see another executor's images and containers. When a
job's attempt ends, everything its steps made on the daemon but images and build cache goes:
containers (running or not), volumes (named ones too), networks, a swarm it joined.

Where the daemon comes from:
- `dind.docker_host` set: a daemon someone else runs beside this executor (the Helm chart's
  privileged sidecar, torn down with the pod).
- otherwise (one machine): farm starts a container of `dind.image` on the host's daemon, on
  the host network (so it reaches a registry on 127.0.0.1; its dockerd runs with
  `--bridge=none` and touches no iptables), with the capabilities and security options of
  `dind` settings, the executor's workspaces bind-mounted at the same path (so the inner
  daemon can mount a job's workspace into its step containers), and removes it when the
  executor drains.

What DinD exposes: the daemon's container has every capability but one and no seccomp or
AppArmor profile, and steps control that daemon, so a step can reach the host as root.
DinD isolates jobs from each other and from the host's daemon and images; it is not a
security boundary against hostile build code (nor is DooD). Run untrusted work on nodes
that hold nothing else, as the chart's dedicated worker group does.

Layer cache, per pool, tenant and tier (`LayerStores`): each pool keeps up to
`dind.layer_stores` daemon data roots on the machine, each holding one scope's layers: one
tenant's, of one trust tier (from the submitting token, as for the dependency cache: a pull
request's layers never feed a protected job). A daemon runs on the store of its job's scope.
At the first step or build of a job of another scope, the executor restarts its daemon on
that scope's store (its warmest free one; else the coldest free store, emptied first; else
a scratch root deleted when released): 0.6 s (median) here, noted in the job's log, as the
old daemon stops on a thread while the new one starts. A starting executor guesses: the store
released last. So a fresh executor's rebuild is all cache hits with nothing to pull, and no
other tenant's or tier's layer is ever a candidate; a store is never used by two live
daemons. Chosen over `--cache-from` the registry, which pulls every cached layer into each
fresh daemon first and cannot name base images; docs/BENCHMARKS.md has the numbers. A
daemon someone else runs (the chart's sidecar) cannot change stores: at a change of scope
(and at the executor's first job) every image and the build cache on it are removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import closing
from pathlib import Path

import docker
import docker.errors

from agents.runtimes.base import StepContext
from agents.runtimes.docker import DockerRuntime, LayerScope
from agents.runtimes.errors import DOCKER_ERRORS, docker_errors
from agents.runtimes.layerstores import LayerStores, StoreLease
from agents.workspace import workspace_root
from farm.errors import RuntimeFailure
from farm.models import ImageBuild, ImageResult, Step
from farm.settings import Settings

log = logging.getLogger("farm.dind")

SOCKET = "/var/run/docker.sock"  # where steps find the private daemon


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


class DindRuntime(DockerRuntime):
    name = "dind"

    def __init__(self, settings: Settings, executor_id: str) -> None:
        super().__init__(settings.docker)
        self.dind = settings.dind
        self.pool = settings.executors.pool
        self.executor_id = executor_id or f"dind-{os.getpid()}"
        self.workspaces = workspace_root(settings) / self.executor_id
        self.stores = LayerStores(settings.dind_dir / self.pool / self.dind.storage_driver, self.dind.layer_stores)
        self.lease: StoreLease | None = None
        # Whose layers the daemon holds; None: nobody's yet (a scratch root, a sidecar's unknown store).
        self.scope: LayerScope | None = None
        self.container_name: str | None = None
        self._host: docker.DockerClient | None = None
        self._no_host = False  # beside a sidecar daemon with no host daemon to copy images from
        self._sockdir: Path | None = None
        self._stopping: list[tuple[threading.Thread, LayerScope | None]] = []  # daemons of other scopes, being stopped
        self._url = ""  # the private daemon's
        self._shared = False
        self.sees_new_mounts = True

    # -- the daemon ---------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            raise RuntimeFailure("the private docker daemon is not running")
        return self._client

    @property
    def host(self) -> docker.DockerClient | None:
        """The host's daemon: where farm starts private daemons and copies images from."""
        if self._host is None and not self._no_host and (self.dind.docker_host is None or self.dind.copy_images):
            try:
                host = docker.from_env(timeout=120)
                host.ping()
                self._host = host
            except DOCKER_ERRORS as e:
                # Beside a sidecar daemon, the host's is only where images are copied from:
                # without it, steps and builds use what the sidecar has.
                if self.dind.docker_host is None:
                    raise RuntimeFailure(f"the host's docker daemon is unreachable: {e}") from e
                self._no_host = True
        return self._host

    def prepare(self) -> None:
        if self.dind.docker_host is not None:
            # Another container's daemon: overlays this executor mounts later do not reach it,
            # so cache entries are unpacked into the workspace instead.
            self.sees_new_mounts = False
            self._wait_ready(self.dind.docker_host, f"the docker daemon at {self.dind.docker_host}")
        else:
            try:
                self._start_daemon(self.stores.warmest(), recycle=False)  # a guess: never another scope's store for it
            except RuntimeFailure:
                self.close()
                raise
        self._seed()

    def _seed(self) -> None:
        for image in (self.settings.default_image, *self.dind.images):
            self._ensure_image(image)

    def _use(self, ctx: StepContext) -> None:
        """Run the job on its own scope's layers: a daemon on another scope's store (or on
        nobody's) is replaced by one on this scope's; a sidecar daemon is emptied instead."""
        scope = LayerScope.of(ctx)
        if scope == self.scope and self._client is not None:
            return
        t0, sidecar = time.monotonic(), self.dind.docker_host is not None
        if sidecar:
            self._empty()
        else:
            self._stop_daemon(wait=self._client is None)  # a live one stops while the next starts: another store
            for thread, stopping in self._stopping:
                if stopping == scope:
                    thread.join(60)  # back to a scope whose daemon is still stopping: its warm store, not a cold one
            try:
                self._start_daemon(scope)
            except RuntimeFailure:
                self._stop_daemon()  # the store goes back; the next job starts over
                raise
        self._seed()
        self.scope = scope
        took = time.monotonic() - t0
        how = "emptied of other scopes' images" if sidecar else f"restarted on this tenant's {scope.tier} layer store"
        log.info("%s: docker daemon %s (%s) in %.2fs", self.executor_id, how, scope, took)
        ctx.output(f"[farm] docker daemon {how} ({took:.1f}s)\n".encode())

    def _start_daemon(self, scope: LayerScope | None, *, recycle: bool = True) -> None:
        with docker_errors("cannot start a private docker daemon"):
            self._start_container(scope, recycle)
        # A guess (no recycling) that found its store taken runs on a scratch root: nobody's,
        # so that the first job moves to its scope's store, not stay on one it will lose.
        self.scope = scope if recycle or self.lease.slot is not None else None  # type: ignore[union-attr]

    def _start_container(self, scope: LayerScope | None, recycle: bool) -> None:
        host = self.host
        assert host is not None
        self.lease = self.stores.lease(scope, recycle=recycle)
        slot = self.lease.slot
        # A store's container is named after its slot: one left by a crashed executor is
        # still using the data root, and goes before a new daemon may use it.
        self.container_name = (f"farm-dind-{self.pool}-{slot}" if slot is not None
                               else f"farm-dind-{self.executor_id}-{uuid.uuid4().hex[:6]}")  # fmt: skip
        try:
            host.containers.get(self.container_name).remove(force=True)
            log.warning("removed %s, left by an executor that did not drain", self.container_name)
        except docker.errors.NotFound:
            pass  # none left: the usual case, not a failure
        except docker.errors.APIError:  # being removed already (the node's warden fencing it): wait until it is gone
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    host.containers.get(self.container_name)
                except docker.errors.NotFound:
                    break
                time.sleep(0.1)
        if scope is not None:
            self.stores.adopt(self.lease, scope)  # emptied of another scope's layers, now that no daemon uses it
        self._sockdir = Path(tempfile.mkdtemp(prefix="farm-dind-"))  # short: a socket path has 108 bytes
        self.workspaces.mkdir(parents=True, exist_ok=True)
        if not self._shared:  # once per executor: each bind would stack another mount
            self._share_workspaces()
        propagation = ",rslave" if self._shared else ""
        command = [
            "dockerd", "--host=unix:///run/dind/docker.sock", "--bridge=none", "--iptables=false", "--ip-masq=false",
            f"--storage-driver={self.dind.storage_driver}", f"--group={(self.step_owner or (0, os.getgid()))[1]}",  # steps' gid
        ]  # fmt: skip
        with docker_errors(f"cannot read {self.dind.image!r} from the host's daemon",
                           missing=f"image {self.dind.image!r} is not on the host's daemon (images/build.sh executor-dind)"):
            host.images.get(self.dind.image)  # never pulled: create would try a public registry
        container = host.containers.create(
            self.dind.image,
            command=command,
            name=self.container_name,
            network_mode="host",
            environment=self.dind.env or None,
            privileged=self.dind.privileged,
            cap_add=None if self.dind.privileged else self.dind.cap_add,
            cap_drop=None if self.dind.privileged else self.dind.cap_drop,
            security_opt=None if self.dind.privileged else self.dind.security_opt,
            devices=["/dev/fuse:/dev/fuse:rwm"] if self.dind.storage_driver == "fuse-overlayfs" and not self.dind.privileged else None,
            volumes={
                str(self._sockdir): {"bind": "/run/dind", "mode": "rw"},
                str(self.lease.path): {"bind": "/var/lib/docker", "mode": "rw"},
                str(self.workspaces): {"bind": str(self.workspaces), "mode": "rw" + propagation},
            },
            labels={"farm.dind": "1", "farm.executor": self.executor_id, "farm.pool": self.pool},
        )
        container.start()
        self._wait_ready(f"unix://{self._sockdir}/docker.sock", f"the private docker daemon ({self.container_name})")

    def _share_workspaces(self) -> None:
        """Make the workspaces a shared mount, so the overlays a warm cache restore mounts
        there later propagate into the daemon's container. Without it (not root), cache
        entries are unpacked into the workspace instead."""
        if os.geteuid() != 0:
            self.sees_new_mounts = False
            return
        path = str(self.workspaces)
        if os.path.ismount(path) or _mount("--bind", path, path):
            self._shared = _mount("--make-rshared", path)
        self.sees_new_mounts = self._shared

    def _wait_ready(self, url: str, what: str) -> None:
        deadline = time.monotonic() + self.dind.start_timeout_s
        error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self._client = docker.DockerClient(base_url=url, timeout=120)  # asks the daemon its version
                self._url = url
                return
            except DOCKER_ERRORS as e:  # not up yet: the loop's business, reported below if it never is
                error = e
            if self.container_name and self._host is not None:
                try:
                    if self._host.containers.get(self.container_name).status == "exited":
                        break
                except docker.errors.NotFound:
                    break  # gone: it will not answer either
            time.sleep(0.1)
        detail = ""
        if self.container_name and self._host is not None:
            try:
                logs = self._host.containers.get(self.container_name).logs(tail=15).decode(errors="replace")
                detail = f"; its last words:\n{logs}"
            except DOCKER_ERRORS:
                pass  # only a detail of the failure below
        raise RuntimeFailure(f"{what} did not answer within {self.dind.start_timeout_s:.0f}s ({error}){detail}")

    # -- what steps and builds see ------------------------------------------------------

    def _build_api(self) -> docker.APIClient:
        return docker.APIClient(base_url=self._url, timeout=None)

    def _ensure_image(self, image: str) -> None:
        """Copy `image` from the host's daemon if the private one lacks it (once per store:
        it stays in the data root), or holds something else under its name: a step has the
        private daemon's socket and could have re-tagged `farm/busybox:latest` in its scope's
        layer store for the next job to run; an image the host has is the host's."""
        host = self.host if self.dind.copy_images else None
        if host is None:
            return  # the daemon pulls it, or the step/build says it is missing
        reading = f"cannot read {image!r} from the host's daemon"
        with docker_errors(reading):
            try:
                want = host.api.inspect_image(image)["Id"]
            except docker.errors.ImageNotFound:
                return  # not the host's to give: the step or build says it is missing
        with docker_errors("docker"):
            try:
                if self.client.api.inspect_image(image)["Id"] == want:
                    return
            except docker.errors.ImageNotFound:
                pass  # copied below
        with docker_errors(reading):
            stream = host.api.get_image(image)
        with docker_errors(f"cannot copy {image!r} into the private daemon"):
            self.client.api.load_image(stream)
        log.info("copied %s into %s", image, self.container_name or self.dind.docker_host)

    def _step_mounts(self) -> dict[str, dict[str, str]]:
        return {"/run/dind/docker.sock" if self.dind.docker_host is None else _socket_path(self.dind.docker_host):
                {"bind": SOCKET, "mode": "rw"}}  # fmt: skip

    def _step_env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"unix://{SOCKET}"}

    def _cache_scope(self, ctx: StepContext) -> LayerScope | None:
        return None  # the daemon's whole store is the job's scope's (`_use`): every layer in it may be a hit

    def run_step(self, step: Step, ctx: StepContext) -> int:
        self._use(ctx)
        return super().run_step(step, ctx)

    def build_image(self, build: ImageBuild, workspace: Path, ctx: StepContext, registry: str | None) -> ImageResult:
        self._use(ctx)
        return super().build_image(build, workspace, ctx, registry)

    def end_job(self, job_id: str) -> None:
        """Everything on the private daemon but its images and build cache belonged to the
        job that just ended (it had the socket): leave a swarm it joined (whose services
        would start containers again), remove its containers, volumes (named ones too, which
        `volume prune` keeps on newer daemons) and networks."""
        if self._client is not None:
            _clear(self._client.api, job_id)

    def _empty(self) -> None:
        """A sidecar daemon, about to serve another scope: nothing of the last one stays."""
        self.end_job("(another scope)")
        with docker_errors("cannot empty the docker daemon for another tenant's job"):
            api = self.client.api
            api.prune_builds(all=True)
            for _ in range(3):
                for image in api.images():  # each with its untagged parents
                    try:
                        api.remove_image(image["Id"], force=True)
                    except docker.errors.APIError:
                        continue  # gone meanwhile, or a parent still: the next pass
                if not api.images(all=True):
                    break
            else:
                raise RuntimeFailure("images of another tenant's job stay on the docker daemon")
        self.scope = None

    # -- teardown -----------------------------------------------------------------------

    def _stop_daemon(self, *, wait: bool = True) -> None:
        """Stop the private daemon (its store left clean and within its size cap) and give
        its store back; `wait=False`: on a thread of its own, which `close` waits for."""
        client, name, lease, sockdir, scope = self._client, self.container_name, self.lease, self._sockdir, self.scope
        self._client, self.container_name, self.lease, self._sockdir, self.scope = None, None, None, None, None
        max_bytes = self.dind.store_max_bytes

        def stop() -> None:
            if client is not None:
                _clear(client.api, "(daemon stop)")
                _prune_if_over(client.api, max_bytes, name)
                client.close()
            if name and self.dind.docker_host is None:
                try:
                    with closing(docker.from_env(timeout=60)) as host:  # a client of its own: this may run on a thread
                        container = host.containers.get(name)
                        container.stop(timeout=15)  # dockerd shuts its containers and store down cleanly
                        container.remove(force=True)
                except docker.errors.NotFound:
                    pass  # gone already: what we wanted
                except DOCKER_ERRORS as e:  # teardown goes on; the next daemon of this store removes it first
                    log.warning("could not remove %s: %s", name, e)
            if lease is not None:
                self.stores.release(lease)  # only now: no two daemons ever use one store
            if sockdir is not None:
                shutil.rmtree(sockdir, ignore_errors=True)

        if wait:
            stop()
        else:
            thread = threading.Thread(target=stop, name=f"stop-{name}", daemon=True)
            self._stopping = [(t, s) for t, s in self._stopping if t.is_alive()] + [(thread, scope)]
            thread.start()

    def close(self) -> None:
        if self.dind.docker_host is not None:
            super().close()
            return
        self._stop_daemon()
        for thread, _ in self._stopping:
            thread.join(60)
        if self._shared:
            subprocess.run(["umount", "-l", str(self.workspaces)], capture_output=True)
            self._shared = False
        if self._host is not None:
            self._host.close()
            self._host = None


def _clear(api: docker.APIClient, job_id: str) -> None:
    """What `end_job` removes from a private daemon."""
    try:
        if (api.info().get("Swarm") or {}).get("LocalNodeState", "inactive") != "inactive":
            api.leave_swarm(force=True)
        for container in api.containers(all=True, quiet=True):  # ids only: some may be going already
            _gone_or(api.remove_container, container["Id"], force=True, v=True)
        for volume in api.volumes().get("Volumes") or []:
            _gone_or(api.remove_volume, volume["Name"], force=True)
        api.prune_networks()  # the predefined ones (none, host) stay
    except DOCKER_ERRORS as e:  # best effort after the job's end, not its failure; the next end tries again
        log.warning("could not clear the private daemon after job %s: %s", job_id, e)


def _prune_if_over(api: docker.APIClient, max_bytes: int, name: str | None) -> None:
    """A store past `dind.store_max_bytes` loses its unused images and build cache."""
    try:
        used = sum(int(i.get("Size") or 0) for i in api.images())
        if used > max_bytes:
            api.prune_images(filters={"dangling": False})
            api.prune_builds()
            log.info("pruned the layer store of %s: %d bytes of images", name, used)
    except DOCKER_ERRORS as e:  # a housekeeping chore: skipped, not a failure
        log.warning("layer store prune skipped: %s", e)


def _gone_or(remove, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
    """Remove something of the daemon's; one gone already is what was wanted."""
    try:
        remove(*args, **kwargs)
    except docker.errors.NotFound:
        pass


def _socket_path(docker_host: str) -> str:
    if not docker_host.startswith("unix://"):
        raise RuntimeFailure(f"dind.docker_host must be a unix socket for steps to use it, not {docker_host!r}")
    return docker_host.removeprefix("unix://")
