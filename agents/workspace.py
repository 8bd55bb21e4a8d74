"""A job attempt's workspace: a fresh directory, the source checked out into it, and the
environment its steps see.

Invariants: one directory per (job, attempt), under the executor's workspace root and
nowhere else; the step environment is built from the job spec alone (plus farm's own
`CI`/`FARM_*` variables), never from farm's process environment, so steps cannot see
farm's credentials. With a disk quota (`executors.disk_quota_bytes`, where farm can mount:
agents/quota.py) the workspace is a filesystem of that size of its own, gone with the
workspace: the next attempt starts empty and the node gets back all the space.
"""

from __future__ import annotations

import os
import shlex
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from agents import quota
from agents.containment import Unit
from agents.runtimes.local import DEFAULT_PATH, run_process
from farm.addresses import Resolver, check_host
from farm.errors import SourceRefused
from farm.models import GitSource, JobSpec
from farm.permissions import git_host, git_port, git_protocol
from farm.settings import Settings

# ssh never offers farm's own keys or agent (they would be every tenant's).
SSH = "ssh -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityFile=none -o IdentityAgent=none"
# A redirect (or an http-alternates file, which git treats as one) would lead to a host
# nobody checked.
NO_REDIRECTS = ["-c", "http.followRedirects=false"]
_PORTS = {"https": 443, "http": 80}  # the transports git reaches through curl, whose resolving farm pins
_NETWORK = ("https", "http", "ssh", "git")  # the transports that connect to the URL's host
_EXEMPTION = ("a checkout runs on the executor's host and reaches public addresses only "
              "(a URL under one of the tenant's git_url_prefixes is exempt)")  # fmt: skip


def workspace_root(settings: Settings) -> Path:
    """Where executors keep their jobs' workspaces: <root>/<executor id>/<job>-<attempt>."""
    return Path(settings.data_dir) / "workspaces"


def resolve_host(host: str) -> list[str] | None:
    """Every address the system resolver gives `host` (None: it does not resolve)."""
    try:
        return [info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]
    except (OSError, UnicodeError):
        return None


def pin(url: str, resolve: Resolver = resolve_host) -> tuple[list[str], str]:
    """git's options and ssh command for a checkout of `url` that connects only to the
    addresses of its host checked here (farm.addresses), so a DNS answer that changes
    between the check and the connect cannot lead elsewhere: curl's resolving is pinned
    (http.curloptResolve, for the host and for any name at its port) and ssh is given the
    address (Hostname, with HostKeyAlias keeping known_hosts on the name). git:// cannot be
    pinned (only the exemption admits it: the API refuses it otherwise). A URL without a
    host (a local path, file://) has nothing to pin. SourceRefused when the host is refused,
    does not resolve, or the port cannot be read."""
    protocol = git_protocol(url)
    if protocol not in _NETWORK:
        return list(NO_REDIRECTS), SSH
    reach = check_host(git_host(url), resolve)
    if reach.refused:
        raise SourceRefused(f"git host {reach.host or url[:100]} {reach.refused}: refused; {_EXEMPTION}")
    if not reach.addresses:
        raise SourceRefused(f"git host {reach.host} does not resolve: refused (farm connects only to addresses it checked)")
    try:
        port = git_port(url) or _PORTS.get(protocol)
    except ValueError:
        raise SourceRefused(f"git URL {url[:100]!r}: its port is not a port number") from None
    options = list(NO_REDIRECTS)
    if protocol in _PORTS:
        addresses = ",".join(f"[{a}]" if ":" in a else a for a in reach.addresses)
        names = ([] if ":" in reach.host else [reach.host]) + ["*"]  # "*": whatever spelling curl looks up
        for name in names:
            options += ["-c", f"http.curloptResolve={name}:{port}:{addresses}"]
    ssh = SSH
    if protocol == "ssh":
        ssh += f" -o Hostname={reach.addresses[0]} -o HostKeyAlias={shlex.quote(reach.host)}"
    return options, ssh


def step_env(spec: JobSpec, job_id: str, attempt: int) -> dict[str, str]:
    return {
        "CI": "true",
        "FARM_JOB_ID": job_id,
        "FARM_ATTEMPT": str(attempt),
        "FARM_POOL": spec.pool,
        **spec.env,
    }


class Workspace:
    def __init__(self, root: Path, job_id: str, attempt: int, *, quota_bytes: int | None = None) -> None:
        """`quota_bytes`: the most the workspace may hold (None: no limit), as
        `quota.enforceable` allows it in this process."""
        self.path = root / f"{job_id}-{attempt}"
        self.quota_bytes = quota_bytes
        self.bounded = False  # a filesystem of its own is mounted at path

    @property
    def layers(self) -> Path:
        """Where warm cache overlays keep their upper layers: on the workspace's own
        filesystem when it has a quota (what a job writes to a restored path counts against
        it), else beside the workspace."""
        if self.quota_bytes is not None:
            return quota.BoundedDisk(self.path).layers
        return self.path.with_name(self.path.name + ".layers")

    def create(self) -> Path:
        """A fresh, empty workspace (whatever a crashed attempt left at its place goes first)."""
        if self.quota_bytes is not None:
            quota.make(self.path, self.quota_bytes)
            self.bounded = True
        else:
            quota.release(self.path)
            self.path.mkdir(parents=True, mode=0o755)
        return self.path

    def remove(self) -> None:
        self.bounded = False
        quota.release(self.path)

    def full(self) -> bool:
        """Whether the workspace has reached its quota (never, without one)."""
        return self.bounded and quota.is_full(self.path)

    def collect(self, patterns: list[str], *, max_files: int) -> tuple[list[tuple[str, Path]], list[str]]:
        """Files matching the glob patterns, as (name relative to the workspace, path), and
        notes on what was refused. Only regular files inside the workspace count: a symlink
        is followed only when it resolves inside the workspace; devices, fifos and
        directories are skipped. What lies outside is never named in a note (farm globs as
        root: a step's link to /root must not list /root in the log)."""
        found: dict[str, Path] = {}
        notes: list[str] = []
        # The workspace directory itself must still be the one farm made, not a link a job put
        # in its place (a DinD job's container can reach the workspaces root): farm resolves
        # only what lies above it, which no job controls.
        if self.path.is_symlink() or not self.path.is_dir():
            return [], ["the workspace is no longer a directory (a link was put in its place?); nothing collected"]
        root = self.path.parent.resolve() / self.path.name
        outside = 0
        for pattern in patterns:
            matches = sorted(root.glob(pattern))
            if not matches:
                notes.append(f"artifact pattern {pattern!r} matched nothing")
            for path in matches:
                real = path.resolve()
                if not real.is_relative_to(root):
                    outside += 1
                elif real.is_file():
                    found.setdefault(path.relative_to(root).as_posix(), real)
        if outside:
            notes.append(f"{outside} artifact match(es) lead outside the workspace through a link; skipped")
        if len(found) > max_files:
            notes.append(f"{len(found)} artifacts matched; only the first {max_files} are kept")
        return sorted(found.items())[:max_files], notes

    def checkout(
        self,
        git: GitSource,
        output: Callable[[bytes], None],
        stop: threading.Event,
        unit: Unit | None = None,
        *,
        exempt: bool = False,
        resolve: Resolver = resolve_host,
    ) -> int:
        """Clone `git.url` into the workspace and check out `git.ref`; the exit code of the
        first git command that failed, else 0. Unless the source was admitted under the
        exemption (`exempt`: farm.permissions.source_exempt), git connects only to the
        addresses of the URL's host checked here (`pin`): SourceRefused, before git runs,
        when they may not be reached."""
        options, ssh = (list(NO_REDIRECTS), SSH) if exempt else pin(git.url, resolve)
        # git may use only the transport the job's URL was admitted with (farm.permissions):
        # no redirect, alternate or submodule into file:// or ext::.
        env = {"PATH": DEFAULT_PATH, "HOME": str(self.path), "GIT_TERMINAL_PROMPT": "0", "LANG": "C.UTF-8",
               "GIT_ALLOW_PROTOCOL": git_protocol(git.url), "GIT_CONFIG_NOSYSTEM": "1", "GIT_SSH_COMMAND": ssh}  # fmt: skip
        commands = [
            ["git", *options, "clone", "--quiet", "--no-checkout", "--", git.url, "."],
            ["git", *options, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", git.ref, "--"],
        ]
        for argv in commands:
            output(("$ " + " ".join(argv) + "\n").encode())
            code = run_process(argv, cwd=self.path, env=env, output=output, stop=stop, unit=unit)
            if code != 0:
                return code
        return 0


def give(root: Path, owner: tuple[int, int]) -> int:
    """Make `owner` own everything under root (links themselves, never what they point at),
    except what is mounted there (warm cache overlays carry their owner already). Returns
    how many entries it changed."""
    uid, gid = owner
    os.lchown(root, uid, gid)
    n = 1
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d))]
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)
            n += 1
    return n


def sweep(root: Path, is_current: Callable[[str, int], bool], *, keep_for_s: float, now: float) -> list[Path]:
    """Remove workspaces under `root` (`<root>/<executor>/<job>-<attempt>`) that no running
    attempt owns: at once, or once older than keep_for_s when workspaces are kept. This
    also clears what a crashed executor left behind beside them: cache upper layers
    (`.layers`), a bounded workspace's mounts, disk and image (agents/quota.py). Returns
    the workspaces it removed."""
    found: dict[Path, float] = {}  # workspace -> newest mtime of it and what lies beside it
    for path in root.glob("*/*-*"):
        try:
            mtime = path.lstat().st_mtime
        except FileNotFoundError:
            continue
        workspace = path.with_name(quota.workspace_of(path.name))
        found[workspace] = max(mtime, found.get(workspace, mtime))
    removed = []
    for workspace, mtime in sorted(found.items()):
        job_id, _, attempt = workspace.name.rpartition("-")
        if not attempt.isdigit() or is_current(job_id, int(attempt)) or now - mtime < keep_for_s:
            continue
        quota.release(workspace)
        removed.append(workspace)
    return removed
