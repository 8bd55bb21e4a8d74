"""Containment: every process an attempt starts lives in a cgroup of its own, named after the
attempt, so the executor kills it as a whole when the attempt ends, however its processes
detached (`setsid`, double forks, daemons), and anyone on the node (the warden,
agents/warden.py) can find it again and kill it when the executor is gone.

    <cgroup fs>/<controller>/farm-<instance>/<job id>.<attempt>     (v1: freezer, and pids)
    <cgroup fs>/farm-<instance>/<job id>.<attempt>                  (v2)

`instance` is the farm's id (one per Redis), so two farms on one machine never touch each
other's attempts.

Fencing. The warden kills an attempt whose executor is gone *before* the job may run again
(attempt N+1 never starts while a process of attempt N lives). So that attempt N cannot
start anything after that kill, spawns and kills go by the attempt's lock file
(`<run dir>/<job>.<attempt>`, an `flock`, which says "fenced" once fenced):
    spawn: lock ─▶ file says "fenced"? refuse ─▶ fork the prelude ─▶ unlock
           prelude: join the cgroup ─▶ file says "fenced"? exit 125 ─▶ exec the step
    fence: lock ─▶ write "fenced" ─▶ freeze, SIGKILL everything, thaw, until the cgroup is empty ─▶ unlock
A prelude that joins after the kill reads "fenced" and exits without running anything of
the step; one that joined before is killed. (The executor does not wait for the join: a
cgroup v1 migration can cost a full RCU grace period, 10 ms and more, which made a
one-step job 2.5 times slower.) A process is moved into its cgroup by its own first
instruction, never by Python code between fork and exec, which is unsafe in a threaded
process.

Without cgroups (farm not root, or no freezer/cgroup v2), each step runs as the first
process of a PID namespace of its own (`unshare --user --pid --fork --kill-child`, which
needs only unprivileged user namespaces): when that process ends, the kernel kills every
other process of the namespace, however it detached, and the namespace dies with the
executor (`setpriv --pdeathsig KILL`). What it lacks is a handle the machine can find again:
a warden has nothing to kill, so it confirms a fence at once. Failing both, steps are killed
by process group only. `Containment.kind` says which; the executor logs the weaker two.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.errors import FarmError

log = logging.getLogger("farm.containment")

CGROUP_FS = Path("/sys/fs/cgroup")
FENCED = b"fenced"
# The prelude: join every cgroup given after the step, then become the step.
# The step is eval'd by the prelude's own shell rather than exec'd in a second one: a shell
# start is the largest part of what containment costs a short step.
# Arguments: the lock file, one or two cgroups ("" for none), the step.
_PRELUDE = ('for g in "$2" "$3"; do [ -z "$g" ] || echo $$ > "$g/cgroup.procs" || exit 125; done; '
            'read -r g < "$1"; [ "$g" = fenced ] && exit 125; unset g; s=$4; set --; eval "unset s; $s"')


class Fenced(FarmError):
    """The attempt was fenced on this node: it may not start anything more."""


class Cgroups:
    """The kernel side: one cgroup per attempt under `farm-<instance>`, on v1 (freezer, plus
    pids when mounted) or v2. Names are `<job>.<attempt>`."""

    def __init__(self, dirs: list[Path], *, version: int) -> None:
        self.dirs = dirs  # the farm-<instance> directory in each hierarchy; dirs[0] tracks membership
        self.version = version

    @classmethod
    def detect(cls, instance: str, fs: Path = CGROUP_FS, *, pids: bool = False) -> Cgroups | None:
        """The cgroups this machine lets us make, or None. On v1 the freezer hierarchy (what
        kills), and the pids one only when asked (a pids limit): each hierarchy is one more
        migration per process spawned."""
        if (fs / "cgroup.controllers").exists():
            candidates, version = [fs / f"farm-{instance}"], 2
        elif (fs / "freezer").is_dir():
            candidates = [fs / "freezer" / f"farm-{instance}"]
            candidates += [fs / "pids" / f"farm-{instance}"] if pids and (fs / "pids").is_dir() else []
            version = 1
        else:
            return None
        try:
            for d in candidates:
                d.mkdir(exist_ok=True)
        except OSError as e:
            log.warning("no cgroups for attempts here (%s)", e)  # the executor says what contains them instead
            return None
        return cls(candidates, version=version)

    def paths(self, name: str) -> list[Path]:
        return [d / name for d in self.dirs]

    def create(self, name: str, *, pids_max: int | None = None) -> list[Path]:
        paths = self.paths(name)
        for p in paths:
            for _ in range(5):  # the farm's directory may be going away as its last attempt ends
                try:
                    p.mkdir(parents=True, exist_ok=True)
                    break
                except FileNotFoundError:
                    continue
        if pids_max:
            limit = next((p / "pids.max" for p in paths if (p / "pids.max").exists()), None)
            if limit is not None:
                limit.write_text(str(pids_max))
        return paths

    def pids(self, name: str) -> list[int]:
        try:
            return [int(p) for p in (self.dirs[0] / name / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def names(self) -> list[str]:
        try:
            return [p.name for p in self.dirs[0].iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []

    def _freeze(self, path: Path, frozen: bool) -> bool:
        if self.version == 2:
            f = path / "cgroup.freeze"
            if not f.exists():
                return False
            f.write_text("1" if frozen else "0")
            return True
        f = path / "freezer.state"
        f.write_text("FROZEN" if frozen else "THAWED")
        if frozen:
            for _ in range(1000):  # thousands of tasks take a while to reach the freezer
                if f.read_text().strip() == "FROZEN":
                    break
                time.sleep(0.005)
        return True

    def kill(self, name: str, timeout_s: float = 10.0) -> bool:
        """Kill every process of the cgroup; True once it is empty. Frozen first, so nothing
        forks while it is being killed; thawed after, so the SIGKILLs are delivered."""
        path = self.dirs[0] / name
        if not path.exists():
            return True
        kill_file = path / "cgroup.kill"
        deadline = time.monotonic() + timeout_s
        while True:
            pids = self.pids(name)
            if not pids:
                return True
            if time.monotonic() > deadline:
                log.error("attempt cgroup %s still has %d processes after %.0fs", name, len(pids), timeout_s)
                return False
            if kill_file.exists():
                kill_file.write_text("1")
            else:
                frozen = self._freeze(path, True)
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                if frozen:
                    self._freeze(path, False)
            time.sleep(0.005)

    def remove(self, name: str) -> None:
        """Drop the attempt's cgroup (the farm's directory stays: made once, used by every attempt)."""
        for p in self.paths(name):
            try:
                p.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise


# A step as the init of a PID namespace of its own, which dies with the executor.
PIDNS = ["setpriv", "--pdeathsig", "KILL", "--", "unshare", "--user", "--map-current-user", "--pid", "--fork", "--kill-child", "--"]


@functools.cache
def pid_namespaces() -> bool:
    """Whether this process may give each step a PID namespace (unprivileged user namespaces
    and util-linux's unshare and setpriv)."""
    try:
        return subprocess.run([*PIDNS, "/bin/true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Containment:
    """One node's view of the attempts of one farm: spawn into them, fence them, end them,
    and list those the machine holds."""

    def __init__(self, instance: str, run_dir: Path, cgroups: Cgroups | None, *, pids_max: int | None = None,
                 pidns: bool = False) -> None:  # fmt: skip
        self.instance = instance
        self.run_dir = run_dir
        self.cgroups = cgroups
        self.pidns = pidns and cgroups is None
        self.pids_max = pids_max
        run_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_node(cls, instance: str, data_dir: Path, *, pids_max: int | None = None) -> Containment:
        cgroups = Cgroups.detect(instance, pids=pids_max is not None)
        return cls(instance, Path(data_dir) / "attempts" / instance, cgroups, pids_max=pids_max,
                   pidns=cgroups is None and pid_namespaces())  # fmt: skip

    @property
    def kind(self) -> str:
        if self.cgroups:
            return f"cgroup v{self.cgroups.version}"
        return "PID namespace per step" if self.pidns else "process group"

    @staticmethod
    def name(job_id: str, attempt: int) -> str:
        return f"{job_id}.{attempt}"

    @staticmethod
    def parse(name: str) -> tuple[str, int] | None:
        job_id, _, attempt = name.rpartition(".")
        return (job_id, int(attempt)) if job_id and attempt.isdigit() else None

    @contextmanager
    def guard(self, job_id: str, attempt: int) -> Iterator[None]:
        """Hold the attempt's lock; raise Fenced if it was fenced. Start things inside."""
        fd = os.open(self.run_dir / self.name(job_id, attempt), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.pread(fd, len(FENCED), 0) == FENCED:
                raise Fenced(f"attempt {attempt} of job {job_id} was fenced on this node")
            yield
        finally:
            os.close(fd)  # releases the lock

    def spawn(self, job_id: str, attempt: int, script: str, **popen: Any) -> subprocess.Popen[bytes]:
        """`/bin/sh -c script` inside the attempt's cgroup (in its own session, too)."""
        name = self.name(job_id, attempt)
        with self.guard(job_id, attempt):
            if self.cgroups is None:
                return subprocess.Popen([*(PIDNS if self.pidns else []), "/bin/sh", "-c", script], start_new_session=True, **popen)
            paths = self.cgroups.create(name, pids_max=self.pids_max)
            mark = str(self.run_dir / name)
            groups = [*map(str, paths), "", ""][:2]
            return subprocess.Popen(["/bin/sh", "-c", _PRELUDE, "/bin/sh", mark, *groups, script], start_new_session=True, **popen)

    def kill(self, job_id: str, attempt: int) -> bool:
        """Kill whatever the attempt still runs on this node; True when nothing is left."""
        if self.cgroups is None:
            return True
        return self.cgroups.kill(self.name(job_id, attempt))

    def fence(self, job_id: str, attempt: int) -> bool:
        """From now on the attempt may start nothing here, and nothing of it runs: True when
        that holds (its cgroup is empty)."""
        with self._locked(job_id, attempt) as fd:
            os.pwrite(fd, FENCED, 0)
            return self.kill(job_id, attempt)

    def end(self, job_id: str, attempt: int) -> None:
        """The attempt is over: kill what it left, drop its cgroup and its lock file."""
        name = self.name(job_id, attempt)
        if self.cgroups is not None:
            self.cgroups.kill(name)
            self.cgroups.remove(name)
        for path in (self.run_dir / name, self.run_dir / f"{name}.containers"):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def adopted(self, job_id: str, attempt: int) -> list[str]:
        """Containers the attempt noted it made (`Unit.adopt`)."""
        try:
            return (self.run_dir / f"{self.name(job_id, attempt)}.containers").read_text().split()
        except FileNotFoundError:
            return []

    def attempts(self) -> list[tuple[str, int]]:
        """The attempts this node holds processes (cgroups) or locks of."""
        names = set(self.cgroups.names()) if self.cgroups else set()
        try:
            names.update(p.name for p in self.run_dir.iterdir())
        except FileNotFoundError:
            pass
        return sorted(filter(None, map(self.parse, names)))  # type: ignore[arg-type]

    def forget(self, job_id: str, attempt: int) -> None:
        """Drop a fenced attempt's cgroup and lock file once its job has moved on."""
        self.end(job_id, attempt)

    @contextmanager
    def _locked(self, job_id: str, attempt: int) -> Iterator[int]:
        fd = os.open(self.run_dir / self.name(job_id, attempt), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)


@dataclass(frozen=True)
class Unit:
    """One attempt on this node: what its runtime spawns into, guards with and kills."""

    containment: Containment
    job_id: str
    attempt: int

    def spawn(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        return self.containment.spawn(self.job_id, self.attempt, shlex.join(argv), **popen)

    @contextmanager
    def guard(self) -> Iterator[None]:
        with self.containment.guard(self.job_id, self.attempt):
            yield

    def kill(self) -> bool:
        return self.containment.kill(self.job_id, self.attempt)

    def adopt(self, container: str) -> None:
        """Note a container the attempt made that carries no farm label (an image build's
        RUN container), so the node's warden can remove it if the executor dies."""
        with open(self.containment.run_dir / f"{self.containment.name(self.job_id, self.attempt)}.containers", "a") as f:
            f.write(container + "\n")

    def end(self) -> None:
        self.containment.end(self.job_id, self.attempt)
