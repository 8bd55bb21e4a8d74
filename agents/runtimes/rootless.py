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
- FROM images come from the host daemon or from images.registry (loopback, plain HTTP:
  --tls-verify=false for it alone); `bud --pull=never` never reaches any registry, and a
  base that is neither fails clearly. A registry's base is pulled into the tenant's store.
  The host's (farm's bases, trusted: never a layer a tenant built) go once per node and
  image id into the bases store, `<rootless_dir>/_bases/store` (the build user's; `_bases`
  is root's, 0700), copied in with `docker save` as into any store (there buildah's primary
  store), one copy at a time (`copy.lock`). Every tenant store of the same driver lists it
  as an additional image store, bind-mounted read-only: its layers are the lower layers of
  tenant builds, which never write there; their own layers, names and tags stay in their own
  store. Before each build, the store's name for a base must resolve to the host daemon's
  image id under that name: a name of the tenant's own (a build tagged an image so) is moved
  to the host's image, and if it will not move the build fails saying so. A store of another
  driver than the bases store's (containers/storage reads an additional store through its
  own driver only) copies the host's base into itself. A store made before the bases store
  existed lists it from its next build on, and keeps using its own copies of bases until the
  host's image under a name changes.
- The bases store only grows: tenant stores' layers sit on its layers, so farm never removes
  an image from it (a base replaced on the host leaves its old image there, unnamed, for the
  tenants' caches built on it). Remove it only together with every layer store of the node.
- RUN has no network (`--network none`) unless the job asks for the host's, which rootless
  buildah gives by sharing the host's network namespace. (The network is not part of a RUN
  layer's cache key, in buildah as in docker: within one store a RUN cached under one
  network is a hit under the other.)
- Every process of a build belongs to the attempt: spawned by `run_process` (the attempt's
  cgroup, killed on stop) in a PID namespace of its own, which dies with its first process.
- Builds of one store may run at once: containers/storage locks its own files (those of the
  bases store too, read through the read-only mount: its locks are fcntl locks on the same
  inodes); farm's `farm.lock` is shared by builds and taken exclusively only to tidy the
  store (remove containers a killed build left, prune when over
  `sandbox.build_store_max_bytes`, the bases store's images never counted nor removed), which
  is skipped while another build runs. Two tenants' first builds needing one base at once:
  one copies it into the bases store, the other waits on its `copy.lock`, then reads it.

How a build reaches its files. Each buildah process runs in a private mount namespace made
by root (so farm needs CAP_SYS_ADMIN; the build user never holds it): the store is
bind-mounted at `<build user's home>/farm-mnt/store` with a fresh tmpfs as its runroot
(containers/storage's mount counts and runc's state then live and die with that namespace:
nothing stale after a kill), the job's context read-only at `.../farm-mnt/context`, and the
bases store read-only at `.../farm-mnt/bases` (for a store that lists it). The build user
owns the bases' files, so only the mount keeps a build from writing there; buildah's own
user namespace inherits that mount locked read-only. So the store and the workspace may lie
under directories the build user cannot traverse (farm's data dir), and the paths buildah
records are the same on every build. The context is given to the build user for the build
(`agents.workspace.give`: metadata only, no copy of the tree; files steps made private would
be unreadable otherwise) and given back after. The Dockerfile is read by farm from inside
the workspace and handed to buildah as a copy, so a symlinked Dockerfile cannot make buildah
read a host file. What is left shared: every store is the build user's, so a RUN that
escaped its container (as that uid) could reach other tenants' stores, and the bases store
through a process of a copy into it; a user per tenant would close that.

Storage driver, measured (FROM a 120 MB base of 3,000 files + 3 RUN + COPY, 2 busy cores):
native rootless overlay 1.5 s cold, 0.46 s rebuild, 132 MB; vfs, which copies the whole root
for every layer, 19.3 s, 3.9 s, 663 MB. A new store takes overlay where the kernel mounts it
in a user namespace (Linux >= 5.13, not on an overlay filesystem), else vfs; fuse-overlayfs
would need /dev/fuse open to the build user, which container nodes rarely grant.

The bases store, measured (bench/sandbox.py's Dockerfile FROM farm/debian:bookworm, 176 MB,
a new tenant's first build, 2 shared busy cores, alternated with docker's DooD --no-cache
build of the same Dockerfile, 1.7-2.3 s): with the base already in the bases store (another
tenant built from it) 2.3-4.0 s, 1.1-2.0x docker's (median 1.4x), and nothing of the base
in the tenant's store (41 MB: its own layers); the node's first copy (docker save | buildah
pull into the bases store) 4.2-6.7 s, so 7.0-11.1 s for that one build. Before, every new
tenant's store took its own copy: 8.8-9.0 s for each (the copy 5.4 s), 14 s under more load.
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
BASES = "_bases"  # under rootless_dir: the node's bases store (see the module docstring)
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
# $2 the context or "", $3 the bases store or "", $4 $5 $6 their mount points, $7 $8
# the build user's uid and gid; then buildah's argv, run as that user (no supplementary groups).
# The context and the bases are mounted read-only by root, before buildah makes its own user
# namespace: a mount it inherits from a more privileged namespace stays read-only in there.
_ENTER = r"""set -e
mount --bind "$1" "$4"
mount -t tmpfs -o "mode=0700,uid=$7,gid=$8,size=64m" farm-run "$4/run"
if [ -n "$2" ]; then mount --rbind "$2" "$5"; mount -o remount,bind,ro "$5"; fi
if [ -n "$3" ]; then mount --bind "$3" "$6"; mount -o remount,bind,ro "$6"; fi
uid=$7; gid=$8; cd "$4"; shift 8
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
    """One tenant's and tier's store on this node (or the node's bases store), and how
    buildah runs against it. `bases`: the node's bases store, which a tenant store of the
    same driver lists as an additional image store (None for the bases store itself)."""

    def __init__(self, path: Path, user: BuildUser, bases: LayerStore | None = None) -> None:
        self.path, self.user, self.bases = path, user, bases
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
        # No --storage-driver: buildah would drop storage.conf's driver options with it, and
        # the additional image store is one. storage.conf names the driver (see driver()).
        # The bases store itself, not its root: its parent is root's, so no build user's link
        # can stand in for it (mount follows one).
        bases = str(self.bases.path) if self.bases is not None and self.shares_bases() else ""
        argv = [*_NAMESPACE, str(self.path), str(context or ""), bases, str(self.mounted), str(self.user.mnt / "context"),
                str(self.user.mnt / "bases"), str(self.user.uid), str(self.user.gid),
                "buildah", "--root", str(self.mounted / "root"), "--runroot", str(self.mounted / "run" / "storage"),
                *args]  # fmt: skip
        return run_process(argv, cwd=self.path, env=env, output=output, stop=ctx_stop, unit=unit)

    def query(self, args: list[str], stop: threading.Event, unit: Unit | None = None) -> tuple[int, str]:
        out = bytearray()
        code = self.buildah(args, stop, out.extend, unit=unit)
        return code, out.decode(errors="replace")

    # -- layout ---------------------------------------------------------------------------

    @property
    def _driver_file(self) -> Path:
        return self.path / "driver"

    def known_driver(self) -> str | None:
        """The store's driver, once it has one (for life)."""
        try:
            return self._driver_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def shares_bases(self) -> bool:
        """Whether this store reads the node's bases store: one exists with this store's driver
        (containers/storage reads an additional image store through its own driver only)."""
        driver = self.known_driver()
        return self.bases is not None and driver is not None and self.bases.known_driver() == driver

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

    def _storage_conf(self, driver: str, bases: bool) -> str:
        text = (f'[storage]\ndriver = "{driver}"\ngraphroot = "{self.mounted / "root"}"\n'
                f'runroot = "{self.mounted / "run" / "storage"}"\n')  # fmt: skip
        if bases:  # mounted there read-only by buildah() (_ENTER)
            text += f'\n[storage.options]\nadditionalimagestores = ["{self.user.mnt / "bases" / "root"}"]\n'
        return text

    def driver(self, stop: threading.Event, unit: Unit | None = None, *, drivers: tuple[str, ...] = DRIVERS) -> str:
        """Lay the store out (idempotent; under setup.lock); a new one gets the first of
        `drivers` buildah can use here, a store keeps its driver for life. Its driver.
        A tenant store lists the bases store (lay that out first) when their drivers match:
        a store made before the bases store existed starts listing it too."""
        for d in (self.user.mnt, *(self.user.mnt / sub for sub in ("store", "context", "bases"))):
            self._mkdir(d, self.user)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in (self.path, *(self.path / sub for sub in ("run", "tmp", "root", "home"))):
            self._mkdir(d, self.user)
        self._write("containers.conf", '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n')
        self._write("registries.conf", 'unqualified-search-registries = []\nshort-name-mode = "enforcing"\n')
        driver = self.known_driver() or self._probe(drivers, stop, unit)
        self._write("storage.conf", self._storage_conf(driver, self.shares_bases()))
        return driver

    def _probe(self, drivers: tuple[str, ...], stop: threading.Event, unit: Unit | None) -> str:
        """The first of `drivers` buildah can use in this (new) store, kept in its driver file."""
        out = bytearray()
        for driver in drivers:
            self._write("storage.conf", self._storage_conf(driver, False))
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
        user = build_user(self.sandbox.build_user)
        # "_bases" is no tenant's name (_TENANT), and its parent stays root's (0700, driver()).
        bases = LayerStore(self.settings.rootless_dir / BASES / "store", user)
        return LayerStore(self.settings.rootless_dir / ctx.tenant / ctx.tier, user, bases)

    def _lay_out_bases(self, bases: LayerStore, ctx: StepContext) -> None:
        """The bases store laid out (its driver chosen as a tenant store's is), before any
        tenant store decides whether to list it."""
        bases.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        bases.path.mkdir(mode=0o700, exist_ok=True)
        with bases.lock("setup.lock", fcntl.LOCK_EX, ctx.stop):
            bases.driver(ctx.stop, ctx.unit, drivers=self.drivers)

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
        if store.bases is not None:
            self._lay_out_bases(store.bases, ctx)
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
                    self._ensure_base(store, base, registry, ctx)
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

    def _ensure_base(self, store: LayerStore, base: str, registry: str | None, ctx: StepContext) -> None:
        """Make `base` resolve in the store to the FROM image: the registry's, or the host daemon's."""
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
            return  # the store's own name, or (none there) the bases store's
        shared = store.bases is not None and store.shares_bases()
        if shared:
            self._hold(store.bases, base, host_id, ctx, "the node's bases store")  # once per node
        # Not shared (another driver), or the store's own name for `base` (a build tagged it so)
        # shadows the bases store's: moved to the host's image, in the store, as ever.
        self._hold(store, base, host_id, ctx, f"the layer store of {ctx.tenant}/{ctx.tier}", shared=shared)

    def _hold(self, target: LayerStore, base: str, host_id: str, ctx: StepContext, where: str, *,
              shared: bool = False) -> None:  # fmt: skip
        """Make `base` resolve in `target` to the host's image `host_id`, copying it in if
        `target` does not see that image at all; RuntimeFailure if the name will not move."""
        if self._store_id(target, base, ctx) == host_id:
            return
        with target.lock("copy.lock", fcntl.LOCK_EX, ctx.stop):  # one copy at a time per store
            if self._store_id(target, base, ctx) == host_id:
                return  # another build copied it meanwhile
            for stale in (target.path / "tmp").glob("copy-*"):  # a killed copy's: copies run under this lock only
                shutil.rmtree(stale, ignore_errors=True)
            if target.query(["inspect", "--type", "image", host_id], ctx.stop, ctx.unit)[0] != 0:
                self._copy_from_host(target, base, host_id, ctx, where)
            if "@" not in base:
                self._name(target, base, host_id, ctx, where, shared)
            if self._store_id(target, base, ctx) != host_id:
                raise RuntimeFailure(f"base image {base!r} in {where} is not the host's {host_id[:12]}: "
                                     f"an image of this store holds a name that {base!r} resolves to first")  # fmt: skip

    def _name(self, target: LayerStore, base: str, host_id: str, ctx: StepContext, where: str, shared: bool) -> None:
        """`buildah tag host_id base`, which moves the name from the image of `target` that held it."""
        what = f"cannot name {base!r} in {where}"
        if not shared:
            self._run(target, ["tag", host_id, base], ctx, what, stream=False)
            return
        # An image the store sees only in the bases store gets a record of its own when tagged
        # (its layers stay there), but only under a name no image of the store holds: a
        # throwaway name first, then the name moves within the store, then the throwaway goes.
        hold = f"localhost/farm-hold-{uuid.uuid4().hex[:12]}:{host_id[:12]}"
        self._run(target, ["tag", host_id, hold], ctx, what, stream=False)
        self._run(target, ["tag", host_id, base], ctx, what, stream=False)
        self._run(target, ["rmi", hold], ctx, what, stream=False)  # only untags: the image keeps `base`

    def _copy_from_host(self, target: LayerStore, base: str, host_id: str, ctx: StepContext, where: str) -> None:
        """docker save | buildah pull docker-archive:, through a file in the target's tmp."""
        t0 = time.monotonic()
        tmp = target.path / "tmp" / f"copy-{uuid.uuid4().hex[:8]}"  # its own: target may be the bases store
        target._mkdir(tmp, target.user)
        try:
            archive = tmp / f"{host_id}.tar"
            with docker_errors(f"cannot copy {base!r} from the host's daemon"), open(archive, "wb") as f:
                for chunk in self.host.api.get_image(base, chunk_size=1 << 20):
                    if ctx.stop.is_set():
                        raise RuntimeFailure("build stopped")
                    f.write(chunk)
            os.chown(archive, target.user.uid, target.user.gid)
            inside = f"docker-archive:{target.mounted / 'tmp' / tmp.name / archive.name}"
            self._run(target, ["pull", "--quiet", inside], ctx, f"cannot copy {base!r} into {where}", stream=False)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        ctx.output(f"copied {base} ({host_id[:12]}) from the host's daemon into {where} "
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
