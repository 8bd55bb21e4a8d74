"""A job's disk quota: its workspace is a filesystem of its own, of `executors.disk_quota_bytes`.

The seam to the kernel's block and mount layer (mkfs, loop devices, mounts). For a
workspace at `<root>/<job>-<attempt>`:

    <root>/<job>-<attempt>.img        a sparse image file of the quota's size, ext4 inside
    <root>/<job>-<attempt>.disk       where the image is loop-mounted (nosuid, nodev)
        workspace/                    bind-mounted at <root>/<job>-<attempt>: what steps see
        layers/                       upper layers of warm cache overlays (agents/cache.py)
    <root>/<job>-<attempt>            the workspace

Invariants:
- Everything an attempt writes in its workspace, restored cache paths included (their
  overlays' upper layers live on the same filesystem), is bounded by the image's size: a
  write past it fails with ENOSPC inside the job, never on the node.
- `release` leaves nothing: it unmounts whatever is mounted at or under the workspace and its
  disk (overlays first, deepest first), deletes the image and the directories. The image is
  sparse, so the node's free space afterwards is what it was before the job.
- `make` first releases whatever a crashed attempt left at the same place.

Why a filesystem per workspace. Cost, measured here (2 shared cores, kernel 6.18, e2fsprogs
1.47; `test_make_and_release_cost` in tests/integration/test_disk_quota.py prints it): make
11-17 ms (mkfs 5-9, loop mount 5-6), release 5-8 ms, for 32 MiB and 4 GiB alike; back-to-back
trivial jobs on one executor took 20-30 ms more each, 2-3 times that on a machine loaded 4x.
- XFS project quotas on one shared filesystem would cost no mkfs per job, but need a kernel
  with XFS quota support (this one has none: "quota support not available in this kernel"),
  an XFS of at least 300 MB sized ahead for all slots, a project id per job, and a way to
  clear what a crashed job left in the shared filesystem.
- A filesystem of its own bounds bytes and inodes alike, and deleting its image frees
  everything the job left, however it was written.
- ext4 without a journal: the filesystem lives for one attempt and is thrown away after a
  crash, never checked. No resize inode (it never grows), no discard at mkfs, inode tables
  initialized lazily and never by the kernel's background thread (`noinit_itable`): nothing
  will need them zeroed before the filesystem is gone. `-m 0`: no blocks reserved for root
  (steps may run as root). One inode per 16 KiB (ext4's default ratio). Metadata takes about
  2% of the quota: a 4 GiB workspace holds 3.92 GiB of files.
- Sparse: the image takes on the node's disk what the job writes plus ~100-200 KiB of
  metadata; the quota is a ceiling, not a reservation (slots x quota may exceed the disk).

Detecting a job that hit its quota: after a step (checkout, build) fails, the workspace's
filesystem is full (`is_full`). ext4 refuses a large write with up to ~1.7 MiB still free
(measured: 0.8 MiB on 32 MiB, 1.7 MiB on 4 GiB, several writers at once included), so
"full" is less than FULL_MARGIN free (an eighth of a tiny filesystem), or no inode left.

Where farm cannot mount (not root, no loop devices, no mkfs.ext4), workspaces are plain
directories without a quota; `enforceable` says so once per process, with the reason.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import shutil
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("farm.quota")

MiB = 1024 * 1024
FULL_MARGIN = 4 * MiB
FULL_INODES = 16  # fewer free inodes than this: full (a step that creates files gets ENOSPC)
PROBE_BYTES = 16 * MiB

MKFS = ["mkfs.ext4", "-q", "-F", "-b", "4096", "-i", "16384", "-I", "256", "-m", "0",
        "-O", "^has_journal,^resize_inode", "-E", "nodiscard,lazy_itable_init=1"]  # fmt: skip
MOUNT_OPTIONS = "loop,nosuid,nodev,noinit_itable"
MS_BIND, MNT_DETACH, UMOUNT_NOFOLLOW = 4096, 2, 8  # <sys/mount.h>
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class BoundedDisk:
    """The places a bounded workspace occupies (module docstring)."""

    workspace: Path

    @property
    def image(self) -> Path:
        return self.workspace.with_name(self.workspace.name + ".img")

    @property
    def disk(self) -> Path:
        return self.workspace.with_name(self.workspace.name + ".disk")

    @property
    def layers(self) -> Path:
        return self.disk / "layers"


SUFFIXES = (".img", ".disk", ".layers")  # what lies beside a workspace: its image, its disk, cache upper layers


def workspace_of(name: str) -> str:
    """The workspace name a sibling belongs to (`j-1.img` -> `j-1`)."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def _run(argv: list[str], what: str) -> None:
    run = subprocess.run(argv, capture_output=True, text=True)
    if run.returncode != 0:
        raise OSError(f"{what}: {(run.stderr or run.stdout).strip() or f'{argv[0]} exited {run.returncode}'}")


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)  # /proc/self/mounts writes " " as \040


def trusted(path: Path) -> str:
    """`path` with what lies above it resolved and its last part as it is: a job may have put a
    link in the place of its own workspace (or below it), never above it. Resolving the whole
    path would follow that link to wherever the job chose (tests/security: unmount-link)."""
    return os.path.join(os.path.realpath(path.parent), path.name)


def _through_link(point: str, base: str) -> bool:
    """Whether reaching `point` from `base` (itself trusted) passes through a symbolic link."""
    rel = os.path.relpath(point, base)
    at = base
    for part in ([] if rel == "." else rel.split(os.sep)):
        at = os.path.join(at, part)
        try:
            if stat.S_ISLNK(os.lstat(at).st_mode):
                return True
        except OSError:
            return False  # gone: unmount by the table's path, as the kernel names it
    return False


def mounts_under(*paths: Path) -> list[str]:
    """Mount points at or under any of paths, deepest first (the order to unmount them in);
    never one reached through a link a job made."""
    prefixes = [trusted(p) for p in paths]
    try:
        with open("/proc/self/mounts") as f:
            points = [_unescape(line.split()[1]) for line in f]
    except OSError:
        return []
    found = [p for p in points for q in prefixes if (p == q or p.startswith(q + "/")) and not _through_link(p, os.path.dirname(q))]
    return sorted(set(found), reverse=True)


# Binds and unmounts are system calls, not util-linux processes: a process each cost 4-10 ms
# here (three of them per job), the system call microseconds. mkfs and the loop mount (a
# free loop device, set to clear itself when unmounted) stay util-linux's.


def _bind(source: Path, target: Path) -> None:
    if _libc.mount(os.fsencode(source), os.fsencode(target), None, MS_BIND, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"cannot mount the workspace: {os.strerror(e)}")


def unmount(points: list[str]) -> None:
    """Unmount each point; lazily when something still holds it (it goes when that does).
    A point that has become a link is not followed (UMOUNT_NOFOLLOW)."""
    for p in points:
        if _libc.umount2(os.fsencode(p), UMOUNT_NOFOLLOW) != 0 and ctypes.get_errno() == errno.EBUSY:
            _libc.umount2(os.fsencode(p), MNT_DETACH | UMOUNT_NOFOLLOW)


def make(workspace: Path, size: int) -> BoundedDisk:
    """A fresh, empty workspace of at most `size` bytes at `workspace`; raises OSError saying
    what failed (nothing is left behind then)."""
    b = BoundedDisk(workspace)
    release(workspace)
    workspace.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The image holds every byte of the job's files, whatever their modes: root's only.
        with open(os.open(b.image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.truncate(size)  # sparse: no block is taken until the job writes
        _run([*MKFS, str(b.image)], "cannot make the workspace's filesystem")
        b.disk.mkdir(mode=0o700)
        _run(["mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(b.image), str(b.disk)], "cannot mount the workspace's filesystem")
        os.chmod(b.disk, 0o700)  # the filesystem's root: steps reach the workspace through its bind only
        (b.disk / "workspace").mkdir(mode=0o755)
        b.layers.mkdir(mode=0o700)
        workspace.mkdir(mode=0o755)
        # A bind of a subdirectory, not the filesystem's root: the workspace starts empty (no
        # lost+found: `git clone .` wants an empty directory) and the layers stay out of sight.
        _bind(b.disk / "workspace", workspace)
    except OSError:
        release(workspace)
        raise
    return b


def release(workspace: Path) -> None:
    """Remove the workspace and everything beside it, bounded or not (module docstring)."""
    b = BoundedDisk(workspace)
    unmount(mounts_under(workspace, b.disk))
    for d in (workspace, b.disk, workspace.with_name(workspace.name + ".layers")):
        shutil.rmtree(d, ignore_errors=True)
    try:
        b.image.unlink()
    except FileNotFoundError:
        pass


def is_full(path: Path) -> bool:
    """Whether the filesystem at path has no room left for the job (module docstring)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return full(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, st.f_favail)


def full(free: int, total: int, inodes_free: int) -> bool:
    return free < min(FULL_MARGIN, total // 8) or inodes_free < FULL_INODES


def size_text(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 else f"{n / MiB:.0f} MiB"


_verdict: dict[str, str | None] = {}  # "why": None when bounded workspaces work in this process
_lock = threading.Lock()


def enforceable(quota_bytes: int | None, root: Path) -> int | None:
    """The quota workspaces get in this process: `quota_bytes`, or None where farm cannot
    mount one, which is logged once per process (not per job), with the reason. The first
    call probes by making and releasing a small bounded workspace under root."""
    if quota_bytes is None:
        return None
    with _lock:
        first = "why" not in _verdict
        if first:
            _verdict["why"] = _probe(root)
        why = _verdict["why"]
    if first and why is not None:
        log.warning("workspaces run without a disk quota here: %s; executors.disk_quota_bytes (%s) is not enforced",
                    why, size_text(quota_bytes))  # fmt: skip
    return None if why is not None else quota_bytes


def _probe(root: Path) -> str | None:
    if os.geteuid() != 0:
        return "farm is not root"
    if shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4 is missing (Debian's e2fsprogs)"
    if not os.path.exists("/dev/loop-control"):
        return "there are no loop devices here (/dev/loop-control is missing)"
    # Under the executor's own root, so no other executor's probe is there; the sweep leaves
    # it alone (no `-<attempt>` in its name), and a crash's leftover goes with the next probe.
    probe = root / ".quota-probe"
    try:
        make(probe, PROBE_BYTES)
    except OSError as e:
        return str(e)
    finally:
        release(probe)
    return None
