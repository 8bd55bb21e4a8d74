"""Rootless image builds: buildah as an unprivileged user, in its own user namespace.

The sandbox runtime's image jobs (agents/runtimes/sandbox.py) never reach a daemon. Each
build is `buildah bud` run as `sandbox.build_user`, an unprivileged user with a subordinate
id range in /etc/subuid and /etc/subgid: RUN's root is that user on the host, every other
uid of the image one of its subordinate ids. No daemon socket, no privileged container.

Invariants:
- Layer stores are kept apart by tenant and trust tier: `<rootless_dir>/<tenant>/<tier>`,
  owned by the build user. A build uses only its own store, so one tenant's RUN layer is
  never another tenant's cache hit, and a pull request's (unprotected) layers never feed a
  protected build. The store outlives the executor: a fresh one rebuilds from its cache.
- FROM images come from the host daemon (copied in with `docker save`, once per store and
  image id; again when the host's image under that name changed or the store's name was
  moved) or from images.registry (loopback, plain HTTP: --tls-verify=false for it alone).
  `bud --pull=never` never reaches any registry; a base that is neither fails clearly.
- RUN has no network (`--network none`) unless the job asks for the host's, which rootless
  buildah gives by sharing the host's network namespace. (The network is not part of a RUN
  layer's cache key, in buildah as in docker: within one store a RUN cached under one
  network is a hit under the other.)
- Every process of a build belongs to the attempt: spawned by `run_process` (the attempt's
  cgroup, killed on stop) in a PID namespace of its own, which dies with its first process.
- Builds of one store may run at once: containers/storage locks its own files; farm's
  `farm.lock` is shared by builds and taken exclusively only to tidy the store (remove
  containers a killed build left, prune when over `sandbox.build_store_max_bytes`), which
  is skipped while another build runs.

How a build reaches its files. Each buildah process runs in a private mount namespace made
by root (so farm needs CAP_SYS_ADMIN; the build user never holds it): the store is bind-mounted at `<build user's home>/farm-mnt/store` with a fresh tmpfs
as its runroot (containers/storage's mount counts and runc's state then live and die with
that namespace: nothing stale after a kill), and the job's context read-only at
`.../farm-mnt/context`. So the store and the workspace may lie under directories the build
user cannot traverse (farm's data dir), and the paths buildah records are the same on every
build. The context is given to the build user for the build (`agents.workspace.give`:
metadata only, no copy of the tree; files steps made private would be unreadable otherwise)
and given back after. The Dockerfile is read by farm from inside the workspace and handed to
buildah as a copy, so a symlinked Dockerfile cannot make buildah read a host file. What is
left shared: every store is the build user's, so a RUN that escaped its container (as that
uid) could reach other tenants' stores; a user per tenant would close that.

Storage driver, measured (FROM a 120 MB base of 3,000 files + 3 RUN + COPY, 2 busy cores):
native rootless overlay 1.5 s cold, 0.46 s rebuild, 132 MB; vfs, which copies the whole root
for every layer, 19.3 s, 3.9 s, 663 MB. A new store takes overlay where the kernel mounts it
in a user namespace (Linux >= 5.13, not on an overlay filesystem), else vfs; fuse-overlayfs
would need /dev/fuse open to the build user, which container nodes rarely grant.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from agents.containment import Unit
from agents.runtimes.base import StepContext
from agents.runtimes.docker import _split, from_images
from agents.runtimes.errors import docker_errors
from agents.runtimes.local import DEFAULT_PATH, run_process
from agents.workspace import give
from farm.errors import RuntimeFailure
from farm.models import ImageBuild, ImageResult
from farm.settings import Settings

log = logging.getLogger("farm.rootless")

TIERS = ("protected", "unprotected")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$|^-$")  # farm's tenant names, or "-" (no tenant)
MIN_SUBIDS = 65536  # images use uids up to 65534 (nobody)
DRIVERS = ("overlay", "vfs")  # in order of preference (measured: see above)
TOOLS = ("buildah", "newuidmap", "newgidmap", "unshare", "setpriv", "mount")


def setup_help(user: str) -> str:
    return (f"images/add-build-user.sh makes it, or as the executor image does: `useradd --system --create-home --home-dir /var/lib/{user} "
            f"--shell /usr/sbin/nologin {user}` and `usermod --add-subuids 1000000-1065535 --add-subgids "
            f"1000000-1065535 {user}` (see docs/OPERATIONS.md)")  # fmt: skip


@dataclass(frozen=True)
class BuildUser:
    name: str
    uid: int
    gid: int
    home: Path

    @property
    def mnt(self) -> Path:
        """Where a build's namespace mounts its store and context (see the module docstring)."""
        return self.home / "farm-mnt"


def _subids(path: Path, user: pwd.struct_passwd) -> int:
    """How many subordinate ids /etc/subuid or /etc/subgid gives the user (by name or uid)."""
    try:
        text = path.read_text()
    except OSError:
        return 0
    owners = (re.escape(user.pw_name), str(user.pw_uid))
    return sum(int(n) for n in re.findall(rf"^(?:{'|'.join(owners)}):\d+:(\d+)\s*$", text, re.M))


def build_user(name: str) -> BuildUser:
    """The build user, or a RuntimeFailure that says how to make one."""
    if os.geteuid() != 0:
        raise RuntimeFailure("rootless image builds need farm to run as root: it drops each build to sandbox.build_user")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise RuntimeFailure(f"rootless image builds need the user {name!r} (sandbox.build_user), which does not exist: "
                             f"{setup_help(name)}") from None  # fmt: skip
    if pw.pw_uid == 0:
        raise RuntimeFailure(f"sandbox.build_user {name!r} is root: rootless builds need an unprivileged user")
    for kind in ("subuid", "subgid"):
        if _subids(Path("/etc") / kind, pw) < MIN_SUBIDS:
            raise RuntimeFailure(f"the build user {name!r} has no range of {MIN_SUBIDS} ids in /etc/{kind}: {setup_help(name)}")
    home = Path(pw.pw_dir)
    if not home.is_dir():
        raise RuntimeFailure(f"the build user {name!r} has no home directory ({home}): {setup_help(name)}")
    return BuildUser(name, pw.pw_uid, pw.pw_gid, home)


def check(settings: Settings, *, probe: bool = True) -> str | None:
    """Whether rootless builds can work on this node: the user, its id ranges, the tools,
    user namespaces, and (probe, ~0.5 s) buildah really entering one with the whole range.
    Returns the storage driver a new store gets (None unprobed); raises RuntimeFailure
    saying what is missing."""
    user = build_user(settings.sandbox.build_user)
    missing = [tool for tool in TOOLS if shutil.which(tool, path=DEFAULT_PATH) is None]
    if missing:
        raise RuntimeFailure(f"rootless image builds need {', '.join(missing)} (Debian's buildah, uidmap and util-linux)")
    try:
        userns = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        userns = 1  # not a Linux that says: the probe finds out
    if userns == 0:
        raise RuntimeFailure("rootless image builds need user namespaces: user.max_user_namespaces is 0")
    if not probe:
        return None
    path = settings.rootless_dir / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # executors start at once
    try:
        store = LayerStore(path, user)
        driver = store.driver(threading.Event())
        # newuidmap/newgidmap unable to map the range (no file capabilities, a container
        # refusing them) leave buildah a single-id map, silently: any chown in a RUN fails.
        code, out = store.query(["unshare", "cat", "/proc/self/uid_map", "/proc/self/gid_map"], threading.Event())
    finally:
        shutil.rmtree(path, ignore_errors=True)
    mapped = sum(int(n) for n in re.findall(r"^\s*\d+\s+\d+\s+(\d+)\s*$", out, re.M))
    if code != 0 or mapped < 2 * MIN_SUBIDS:
        raise RuntimeFailure(f"buildah's user namespace does not get {user.name!r}'s subordinate ids (newuidmap/newgidmap "
                             f"need CAP_SETUID/CAP_SETGID, setuid or as file capabilities): {_tail_error(out)}")  # fmt: skip
    return driver


# Run by /bin/sh as root, first process of a fresh mount and PID namespace. $1 the store,
# $2 the context or "", $3 and $4 their mount points, $5 $6 the build user's uid and gid;
# then buildah's argv, run as that user (no supplementary groups).
_ENTER = r"""set -e
mount --bind "$1" "$3"
mount -t tmpfs -o "mode=0700,uid=$5,gid=$6,size=64m" farm-run "$3/run"
if [ -n "$2" ]; then mount --rbind "$2" "$4"; mount -o remount,bind,ro "$4"; fi
uid=$5; gid=$6; cd "$3"; shift 6
setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
"""
# The namespace dies with the executor (pdeathsig) and with its first process (--kill-child).
_NAMESPACE = ["setpriv", "--pdeathsig", "KILL", "--", "unshare", "--mount", "--propagation", "private",
              "--pid", "--fork", "--kill-child", "--mount-proc", "--", "/bin/sh", "-c", _ENTER, "farm-rootless"]  # fmt: skip


def _wait_flock(fd: int, op: int, stop: threading.Event) -> None:
    """flock, giving up (RuntimeFailure) as soon as stop is set."""
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if stop.wait(0.05):
                raise RuntimeFailure("build stopped") from None


def _tail_error(text: str) -> str:
    """The line of buildah's output that says why it failed."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:") or "level=error" in line]
    return (errors or lines or ["no output"])[-1].removeprefix("Error: ")[:1000]


class LayerStore:
    """One tenant's and tier's store on this node, and how buildah runs against it."""

    def __init__(self, path: Path, user: BuildUser) -> None:
        self.path, self.user = path, user
        self.mounted = user.mnt / "store"  # what `path` is inside a build's namespace

    def buildah(self, args: list[str], ctx_stop: threading.Event, output: Callable[[bytes], None], *,
                unit: Unit | None = None, context: Path | None = None, tmp: str = "tmp") -> int:  # fmt: skip
        """Run `buildah <global options> args` as the build user against this store."""
        # HOME too is the store's: buildah keeps caches there (blob-info-cache: which blobs
        # exist where), and nothing of one store may be seen by a build of another.
        env = {"PATH": DEFAULT_PATH, "HOME": str(self.mounted / "home"), "USER": self.user.name, "LANG": "C.UTF-8",
               "XDG_RUNTIME_DIR": str(self.mounted / "run"), "TMPDIR": str(self.mounted / tmp),
               "CONTAINERS_CONF": str(self.mounted / "containers.conf"),
               "CONTAINERS_REGISTRIES_CONF": str(self.mounted / "registries.conf"),
               "CONTAINERS_STORAGE_CONF": str(self.mounted / "storage.conf")}  # fmt: skip
        driver = self._driver_file.read_text().strip() if self._driver_file.exists() else "overlay"
        argv = [*_NAMESPACE, str(self.path), str(context or ""), str(self.mounted), str(self.user.mnt / "context"),
                str(self.user.uid), str(self.user.gid), "buildah", "--root", str(self.mounted / "root"),
                "--runroot", str(self.mounted / "run" / "storage"), "--storage-driver", driver, *args]  # fmt: skip
        return run_process(argv, cwd=self.path, env=env, output=output, stop=ctx_stop, unit=unit)

    def query(self, args: list[str], stop: threading.Event, unit: Unit | None = None) -> tuple[int, str]:
        out = bytearray()
        code = self.buildah(args, stop, out.extend, unit=unit)
        return code, out.decode(errors="replace")

    # -- layout ---------------------------------------------------------------------------

    @property
    def _driver_file(self) -> Path:
        return self.path / "driver"

    def _mkdir(self, path: Path, owner: BuildUser | None) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if owner is not None:
            os.chown(path, owner.uid, owner.gid)

    def _write(self, name: str, text: str) -> None:
        path = self.path / name
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(".new")
            tmp.write_text(text)
            tmp.chmod(0o644)
            tmp.replace(path)

    def driver(self, stop: threading.Event, unit: Unit | None = None, *, drivers: tuple[str, ...] = DRIVERS) -> str:
        """Lay the store out (idempotent; under setup.lock); a new one gets the first of
        `drivers` buildah can use here, a store keeps its driver for life. Its driver."""
        for d in (self.user.mnt, self.user.mnt / "store", self.user.mnt / "context"):
            self._mkdir(d, self.user)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in (self.path, *(self.path / sub for sub in ("run", "tmp", "root", "home"))):
            self._mkdir(d, self.user)
        self._write("containers.conf", '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n')
        self._write("registries.conf", 'unqualified-search-registries = []\nshort-name-mode = "enforcing"\n')
        known = self._driver_file.read_text().strip() if self._driver_file.exists() else None
        out = bytearray()
        for driver in [known] if known else drivers:
            self._write("storage.conf", f'[storage]\ndriver = "{driver}"\ngraphroot = "{self.mounted / "root"}"\n'
                                        f'runroot = "{self.mounted / "run" / "storage"}"\n')  # fmt: skip
            if known:
                return known
            self._driver_file.write_text(driver)  # read by buildah() for the probe; removed if it fails
            if self.buildah(["info"], stop, out.extend, unit=unit) == 0:
                log.info("layer store %s: storage driver %s", self.path, driver)
                return driver
            self._driver_file.unlink()
            if stop.is_set():
                raise RuntimeFailure("build stopped")
            shutil.rmtree(self.path / "root", ignore_errors=True)
            self._mkdir(self.path / "root", self.user)
        why = _tail_error(out.decode(errors="replace"))
        raise RuntimeFailure(f"buildah cannot run as {self.user.name!r} in a user namespace here: {why}")

    @contextmanager
    def lock(self, name: str, op: int, stop: threading.Event) -> Iterator[None]:
        fd = os.open(self.path / name, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            _wait_flock(fd, op, stop)
            yield
        finally:
            os.close(fd)

    def size(self) -> int:
        """Bytes the store holds on disk (du: hard links once)."""
        run = subprocess.run(["du", "-s", "-x", "-B1", str(self.path / "root")], capture_output=True, text=True, timeout=300)
        return int(run.stdout.split()[0]) if run.stdout else 0


class RootlessBuilder:
    """Builds an image job's image rootless, from the layer store of its tenant and tier."""

    def __init__(self, settings: Settings, host_docker_client: Any | None) -> None:
        self.settings = settings
        self.sandbox = settings.sandbox
        self.host = host_docker_client  # the node's daemon: where FROM images come from
        self.drivers = DRIVERS  # what a new store may use, in order (tests force vfs)

    def store(self, ctx: StepContext) -> LayerStore:
        if not _TENANT.match(ctx.tenant) or ctx.tenant in (".", ".."):
            raise RuntimeFailure(f"cannot keep a layer store for tenant {ctx.tenant!r}")
        if ctx.tier not in TIERS:
            raise RuntimeFailure(f"unknown trust tier {ctx.tier!r}")
        return LayerStore(self.settings.rootless_dir / ctx.tenant / ctx.tier, build_user(self.sandbox.build_user))

    def build_image(self, build: ImageBuild, workspace: Path, ctx: StepContext, registry: str | None) -> ImageResult:
        """Build from `workspace / build.context` as the build user; tag, and push to
        `registry` if asked. Output streams to ctx.output; ctx.stop abandons the build."""
        root = workspace.resolve()
        context = (workspace / build.context).resolve()
        dockerfile = (context / build.dockerfile).resolve()
        # Resolved and held inside the workspace: farm (root) gives the context away and mounts it.
        if not context.is_relative_to(root) or not dockerfile.is_relative_to(context):
            raise RuntimeFailure(f"{build.context}/{build.dockerfile} leads outside the job's workspace")
        if not dockerfile.is_file():
            raise RuntimeFailure(f"no {build.dockerfile} in {build.context}")
        if build.push and not registry:
            raise RuntimeFailure("push asked, but no registry is configured (images.registry)")
        text = dockerfile.read_bytes()
        store = self.store(ctx)
        store.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with store.lock("setup.lock", fcntl.LOCK_EX, ctx.stop):
            driver = store.driver(ctx.stop, ctx.unit, drivers=self.drivers)
        token = f"{ctx.job_id}-{ctx.attempt}-{uuid.uuid4().hex[:8]}"
        tmp = store.path / "tmp" / token
        marker = store.path / "builds" / token  # left behind by a build that did not end: see _tidy
        clean = False
        with store.lock("farm.lock", fcntl.LOCK_SH, ctx.stop):
            store._mkdir(tmp, store.user)
            (tmp / "Dockerfile").write_bytes(text)
            marker.parent.mkdir(exist_ok=True)
            marker.touch()
            owner = (context.stat().st_uid, context.stat().st_gid)
            try:
                where = f"the {driver} layer store of {ctx.tenant}/{ctx.tier}"
                ctx.output(f"building rootless as {store.user.name} in {where}\n".encode())
                for base in from_images(text.decode(errors="replace"), build.build_args):
                    self._ensure_base(store, base, registry, ctx, tmp)
                give(context, (store.user.uid, store.user.gid))
                try:
                    image_id = self._bud(store, build, context, ctx, token)
                finally:
                    give(context, owner)
                pushed, digest = [], None
                for tag in build.tags if build.push else ():
                    repo, name = _split(f"{registry}/{tag}")
                    digest = self._push(store, image_id, repo, name, ctx, token)
                    pushed.append(f"{repo}:{name}@{digest}")
                clean = True
            except RuntimeFailure:
                clean = not ctx.stop.is_set()  # buildah ended by itself and removed its containers (--force-rm)
                raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                if clean:
                    marker.unlink(missing_ok=True)
        if not ctx.stop.is_set():
            self._tidy(store, ctx)
        return ImageResult(id=image_id, tags=list(build.tags), pushed=pushed, digest=digest)

    # -- steps of a build -----------------------------------------------------------------

    def _run(self, store: LayerStore, args: list[str], ctx: StepContext, what: str, *, context: Path | None = None,
             tmp: str = "tmp", stream: bool = True) -> str:  # fmt: skip
        """buildah args; its output (streamed to the job log too, unless not `stream`).
        RuntimeFailure("<what>: <buildah's error>") when it fails, "build stopped" on stop."""
        seen = bytearray()

        def output(chunk: bytes) -> None:
            seen.extend(chunk)
            del seen[:-65536]
            if stream:
                ctx.output(chunk)

        code = store.buildah(args, ctx.stop, output, unit=ctx.unit, context=context, tmp=tmp)
        if ctx.stop.is_set():
            raise RuntimeFailure("build stopped")
        if code != 0:
            raise RuntimeFailure(f"{what}: {_tail_error(seen.decode(errors='replace'))}")
        return seen.decode(errors="replace")

    def _store_id(self, store: LayerStore, ref: str, ctx: StepContext) -> str | None:
        """The id (hex) `ref` resolves to in the store, as bud would resolve it; None if it does not."""
        code, out = store.query(["inspect", "--type", "image", "--format", "{{.FromImageID}}", ref], ctx.stop, ctx.unit)
        if ctx.stop.is_set():
            raise RuntimeFailure("build stopped")
        found = re.findall(r"^([0-9a-f]{64})$", out, re.M)
        return found[-1] if code == 0 and found else None

    def _ensure_base(self, store: LayerStore, base: str, registry: str | None, ctx: StepContext, tmp: Path) -> None:
        """Make the store hold the FROM image `base`: the registry's, or the host daemon's."""
        if registry and base.startswith(f"{registry}/"):
            # The registry's current image under that name, every build: a pull of what the
            # store has already fetches the manifest only.
            self._run(store, ["pull", "--tls-verify=false", "--policy", "always", f"docker://{base}"], ctx,
                      f"base image {base!r} could not be pulled from images.registry ({registry})")  # fmt: skip
            return
        host_id = None
        if self.host is not None:
            with docker_errors(f"cannot read {base!r} from the host's daemon"):
                try:
                    host_id = self.host.api.inspect_image(base)["Id"].removeprefix("sha256:")
                except docker.errors.ImageNotFound:
                    pass  # said below
        if host_id is None:
            raise RuntimeFailure(f"base image {base!r} is not on the docker daemon, and farm pulls base images "
                                 f"only from images.registry ({registry or 'none is set'})")  # fmt: skip
        if self._store_id(store, base, ctx) == host_id:
            return
        with store.lock("setup.lock", fcntl.LOCK_EX, ctx.stop):  # one copy at a time per store
            if self._store_id(store, base, ctx) == host_id:
                return  # another build copied it meanwhile
            if store.query(["inspect", "--type", "image", host_id], ctx.stop, ctx.unit)[0] != 0:
                self._copy_from_host(store, base, host_id, ctx, tmp)
            if "@" not in base:
                self._run(store, ["tag", host_id, base], ctx, f"cannot name {base!r} in the layer store", stream=False)
            if self._store_id(store, base, ctx) != host_id:
                raise RuntimeFailure(f"base image {base!r} in the layer store of {ctx.tenant}/{ctx.tier} is not the host's "
                                     f"{host_id[:12]}: an image of this store holds a name that {base!r} resolves to first")  # fmt: skip

    def _copy_from_host(self, store: LayerStore, base: str, host_id: str, ctx: StepContext, tmp: Path) -> None:
        t0 = time.monotonic()
        archive = tmp / f"{host_id}.tar"
        with docker_errors(f"cannot copy {base!r} from the host's daemon"), open(archive, "wb") as f:
            for chunk in self.host.api.get_image(base, chunk_size=1 << 20):
                if ctx.stop.is_set():
                    raise RuntimeFailure("build stopped")
                f.write(chunk)
        os.chown(archive, store.user.uid, store.user.gid)
        inside = f"docker-archive:{store.mounted / 'tmp' / tmp.name / archive.name}"
        self._run(store, ["pull", "--quiet", inside], ctx, f"cannot copy {base!r} into the layer store", stream=False)
        archive.unlink()
        ctx.output(f"copied {base} ({host_id[:12]}) from the host's daemon into the layer store "
                   f"in {time.monotonic() - t0:.1f}s\n".encode())  # fmt: skip

    def _bud(self, store: LayerStore, build: ImageBuild, context: Path, ctx: StepContext, token: str) -> str:
        tmp = store.mounted / "tmp" / token
        args = ["bud", "--layers", "--pull=never", "--isolation", "rootless", "--format", "docker", "--force-rm",
                "--network", "host" if build.network == "host" else "none",
                "--iidfile", str(tmp / "iid"), "-f", str(tmp / "Dockerfile")]  # fmt: skip
        args += [arg for tag in build.tags for arg in ("-t", tag)]
        args += [arg for name, value in build.build_args.items() for arg in ("--build-arg", f"{name}={value}")]
        args += ["--target", build.target] if build.target else []
        self._run(store, [*args, str(store.user.mnt / "context")], ctx, "build failed", context=context,
                  tmp=f"tmp/{token}")  # fmt: skip
        image_id = (store.path / "tmp" / token / "iid").read_text().strip()
        if not image_id.startswith("sha256:"):
            raise RuntimeFailure("build finished without an image")
        return image_id

    def _push(self, store: LayerStore, image_id: str, repo: str, tag: str, ctx: StepContext, token: str) -> str:
        digestfile = store.path / "tmp" / token / "digest"
        digestfile.unlink(missing_ok=True)
        self._run(store, ["push", "--tls-verify=false", "--retry", "1", "--digestfile",
                          str(store.mounted / "tmp" / token / "digest"), image_id.removeprefix("sha256:"),
                          f"docker://{repo}:{tag}"], ctx, f"push of {repo}:{tag} failed", tmp=f"tmp/{token}")  # fmt: skip
        digest = digestfile.read_text().strip() if digestfile.exists() else ""
        if not digest.startswith("sha256:"):
            raise RuntimeFailure(f"push of {repo}:{tag} reported no digest")
        ctx.output(f"pushed {repo}:{tag}@{digest}\n".encode())
        return digest

    def _tidy(self, store: LayerStore, ctx: StepContext) -> None:
        """When no other build uses the store: remove what killed builds left (their
        containers), and prune it when over build_store_max_bytes. Housekeeping, never a
        failure of the build that just succeeded."""
        fd = os.open(store.path / "farm.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another build runs: it tidies when it ends
            stale = list((store.path / "builds").glob("*"))
            if stale:
                self._quiet(store, ["rm", "--all"], ctx)
                for path in stale:
                    path.unlink(missing_ok=True)
                for path in (store.path / "tmp").iterdir():
                    shutil.rmtree(path, ignore_errors=True)
            limit = self.sandbox.build_store_max_bytes
            if (used := store.size()) <= limit:
                return
            self._quiet(store, ["rmi", "--prune"], ctx)
            if store.size() > limit:
                self._quiet(store, ["rmi", "--all", "--force"], ctx)  # the next build is cold
            ctx.output(f"layer store of {ctx.tenant}/{ctx.tier} held {used} bytes, over sandbox.build_store_max_bytes "
                       f"({limit}): pruned to {store.size()}\n".encode())  # fmt: skip
        except (OSError, subprocess.SubprocessError, ValueError, RuntimeFailure) as e:
            log.warning("layer store %s not tidied: %s", store.path, e)
        finally:
            os.close(fd)

    def _quiet(self, store: LayerStore, args: list[str], ctx: StepContext) -> None:
        """Housekeeping: a failure is logged, not the build's."""
        code, out = store.query(args, ctx.stop, ctx.unit)
        if code != 0:
            log.warning("buildah %s in %s: %s", " ".join(args), store.path, _tail_error(out))
