"""The `dind` runtime: each executor owns a private Docker daemon (Docker-in-Docker).

Steps and image builds run exactly as in the docker runtime (agents/runtimes/docker.py),
but against the executor's own dockerd, and steps get that daemon's socket
(`DOCKER_HOST=unix:///var/run/docker.sock`), so a step may `docker build`/`docker run`.
Jobs never touch the host's daemon or see another executor's images and containers; what
one job left running on the private daemon is removed when its attempt ends.

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

Layer cache across ephemeral executors (`LayerStores`): each pool keeps up to
`dind.layer_stores` daemon data roots on the machine. A starting daemon leases one (an
exclusive lock, held while the executor lives; the warmest free one first), so a fresh
executor starts with every layer and base image earlier executors of the pool built or
loaded: a rebuild is all cache hits with nothing to pull. A store is never shared by two
live daemons; when all are leased, the daemon gets a scratch data root that is deleted at
drain. Chosen over `--cache-from` the registry because that pulls (and decompresses) every
cached layer into each fresh daemon before the build can use it, and the classic builder
cannot name base images from a pulled cache; docs/BENCHMARKS.md has the numbers. A store
mixes the layers of every job of the pool: pools are the unit that shares a layer cache.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from agents.runtimes.docker import DockerRuntime
from agents.runtimes.errors import DOCKER_ERRORS, docker_errors
from agents.workspace import workspace_root
from farm.errors import RuntimeFailure
from farm.settings import Settings

log = logging.getLogger("farm.dind")

SOCKET = "/var/run/docker.sock"  # where steps find the private daemon


@dataclass
class StoreLease:
    slot: int | None  # None: a scratch data root, deleted when released
    path: Path
    fd: int | None = None


class LayerStores:
    """Daemon data roots of one pool on this machine, each leased by one daemon at a time.

    The lease is an exclusive `flock` on `<slot>.lock`, so it ends when its holder does,
    crash included; the lock file's mtime says when the slot was last released, and the
    most recently released free slot (the warmest) is leased first."""

    def __init__(self, root: Path, slots: int) -> None:
        self.root, self.slots = root, slots

    def _order(self) -> list[int]:
        def last_used(i: int) -> float:
            try:
                return (self.root / f"{i}.lock").stat().st_mtime
            except FileNotFoundError:
                return 0.0

        return sorted(range(self.slots), key=lambda i: (-last_used(i), i))

    def lease(self) -> StoreLease:
        self.root.mkdir(parents=True, exist_ok=True)
        for slot in self._order():
            fd = os.open(self.root / f"{slot}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            path = self.root / str(slot)
            path.mkdir(mode=0o700, exist_ok=True)
            return StoreLease(slot, path, fd)
        scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=self.root))
        return StoreLease(None, scratch)

    def release(self, lease: StoreLease) -> None:
        if lease.fd is None:
            shutil.rmtree(lease.path, ignore_errors=True)
            return
        try:
            os.utime(self.root / f"{lease.slot}.lock")
        finally:
            fcntl.flock(lease.fd, fcntl.LOCK_UN)
            os.close(lease.fd)


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
        self.container_name: str | None = None
        self._host: docker.DockerClient | None = None
        self._no_host = False  # beside a sidecar daemon with no host daemon to copy images from
        self._sockdir: Path | None = None
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
                with docker_errors("cannot start a private docker daemon"):
                    self._start_daemon()
            except RuntimeFailure:
                self.close()
                raise
        for image in (self.settings.default_image, *self.dind.images):
            self._ensure_image(image)

    def _start_daemon(self) -> None:
        host = self.host
        assert host is not None
        self.lease = self.stores.lease()
        slot = self.lease.slot
        # A store's container is named after its slot: one left by a crashed executor is
        # still using the data root, and goes before a new daemon may use it.
        self.container_name = f"farm-dind-{self.pool}-{slot}" if slot is not None else f"farm-dind-{self.executor_id}"
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
        self._sockdir = Path(tempfile.mkdtemp(prefix="farm-dind-"))  # short: a socket path has 108 bytes
        self.workspaces.mkdir(parents=True, exist_ok=True)
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
        private daemon's socket and could have re-tagged `farm/busybox:latest` in the pool's
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

    def end_job(self, job_id: str) -> None:
        """Everything on the private daemon but its images belonged to the job that just
        ended (it had the socket): remove its containers and volumes."""
        if self._client is None:
            return
        api = self._client.api
        try:
            for container in api.containers(all=True, quiet=True):  # ids only: some may be going already
                try:
                    api.remove_container(container["Id"], force=True, v=True)
                except docker.errors.NotFound:
                    pass  # gone already: what we wanted
            api.prune_volumes()
        except DOCKER_ERRORS as e:  # best effort after the job's end, not its failure; the next end tries again
            log.warning("could not clear the private daemon after job %s: %s", job_id, e)

    # -- teardown -----------------------------------------------------------------------

    def _prune_if_over(self) -> None:
        try:
            used = sum(int(i.get("Size") or 0) for i in self.client.api.images())
            if used > self.dind.store_max_bytes:
                self.client.api.prune_images(filters={"dangling": False})
                self.client.api.prune_builds()
                log.info("pruned the layer store of %s: %d bytes of images", self.container_name, used)
        except DOCKER_ERRORS as e:  # a housekeeping chore at drain: skipped, not a failure
            log.warning("layer store prune skipped: %s", e)

    def close(self) -> None:
        if self.dind.docker_host is not None:
            super().close()
            return
        if self._client is not None:
            self.end_job("(drain)")
            self._prune_if_over()
        super().close()
        if self.container_name and self._host is not None:
            try:
                container = self._host.containers.get(self.container_name)
                container.stop(timeout=15)  # dockerd shuts its containers and store down cleanly
                container.remove(force=True)
            except docker.errors.NotFound:
                pass  # gone already: what we wanted
            except DOCKER_ERRORS as e:  # teardown goes on; the next daemon of this store removes it first
                log.warning("could not remove %s: %s", self.container_name, e)
        self.container_name = None
        if self.lease is not None:
            self.stores.release(self.lease)
            self.lease = None
        if self._shared:
            subprocess.run(["umount", "-l", str(self.workspaces)], capture_output=True)
            self._shared = False
        if self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None
        if self._host is not None:
            self._host.close()
            self._host = None


def _socket_path(docker_host: str) -> str:
    if not docker_host.startswith("unix://"):
        raise RuntimeFailure(f"dind.docker_host must be a unix socket for steps to use it, not {docker_host!r}")
    return docker_host.removeprefix("unix://")
