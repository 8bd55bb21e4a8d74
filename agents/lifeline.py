"""The lifeline: what ends a node's work when `farm up` dies without stopping.

A `farm up` that is SIGKILLed (the OOM killer, `kill -9`) cannot drain or clear its node.
Its embedded server dies with it (a parent-death signal), but its steps live in cgroups or
containers of their own, and Ray's agents are reparented to PID 1 and go on. The lifeline
is a small process `farm up` starts beside itself, in a session of its own:

    every interval: is `farm up` alive?  yes ─▶ note its descendants (pid, start time)
                                          no ─▶ kill every attempt of this farm on the node
                                                (the warden's kill_all: cgroups, step
                                                containers, bounded workspaces), then
                                                SIGTERM, and after a grace SIGKILL, every
                                                process it noted that still lives; exit

A pid is judged by its start time too, so a recycled pid is never killed. `farm up`
stopping normally ends the lifeline itself (SIGTERM: it exits without killing anything),
and its supervisor starts it again if it dies. Everything is done within a few seconds of
the death, well inside the lease.

Run as `python -m agents.lifeline <pid> <settings.json>`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("farm.lifeline")

INTERVAL_S = 0.5
GRACE_S = 2.0


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], fields[19]


def descendants(root: int) -> dict[int, str]:
    """Every process below `root` (not root itself), with its start time."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[0], []).append((int(entry.name), st[2]))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def living(noted: dict[int, str]) -> list[int]:
    """The noted processes that still run as themselves (not zombies, not a recycled pid)."""
    out = []
    for pid, started in noted.items():
        st = _stat(pid)
        if st is not None and st[2] == started and st[1] != "Z":
            out.append(pid)
    return out


def kill_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Lifeline:
    def __init__(self, watched: int, clear_node: object) -> None:
        self.watched = watched
        st = _stat(watched)
        self.started = st[2] if st else ""
        self.clear_node = clear_node  # () -> int: kill this farm's attempts on the node
        self.noted: dict[int, str] = {}
        self._stopping = False

    def alive(self) -> bool:
        st = _stat(self.watched)
        return st is not None and st[2] == self.started and st[1] != "Z"

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is farm up's to handle
        while not self._stopping:
            if not self.alive():
                self.end_everything()
                return 0
            noted = descendants(self.watched)
            noted.pop(os.getpid(), None)
            self.noted.update(noted)  # a process reparented away stays noted
            self.noted = {pid: t for pid, t in self.noted.items() if pid in noted or _stat(pid) is not None}
            time.sleep(INTERVAL_S)
        return 0

    def _stop(self, *_: object) -> None:
        self._stopping = True

    def end_everything(self) -> None:
        log.warning("farm up (pid %d) died without stopping: ending its work on this node", self.watched)
        try:
            killed = self.clear_node()  # type: ignore[operator]
            log.warning("killed %d attempt(s) of the dead farm; they run again on its next start", killed)
        except Exception:  # noqa: BLE001 - the processes below must go whatever happened here
            log.exception("could not clear the node's attempts")
        pids = living(self.noted)
        kill_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while (pids := living(self.noted)) and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_all(pids, signal.SIGKILL)
        try:  # again, with the executors gone: a workspace one of them held could not be unmounted
            self.clear_node()  # type: ignore[operator]
        except Exception:  # noqa: BLE001
            log.exception("could not release the node's workspaces")


def start(settings_json: str, instance: str) -> subprocess.Popen[bytes]:
    """Start the lifeline of this process (`farm up`): it outlives it, in a session of its own."""
    path = Path(json.loads(settings_json)["data_dir"]) / "lifeline.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"settings": json.loads(settings_json), "instance": instance}))
    return subprocess.Popen([sys.executable, "-m", "agents.lifeline", str(os.getpid()), str(path)], start_new_session=True,
                            stdin=subprocess.DEVNULL)  # fmt: skip


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    watched, path = int(argv[0]), Path(argv[1])
    given = json.loads(path.read_text())

    def clear_node() -> int:
        from agents.containment import Containment
        from agents.warden import Warden, node_name
        from farm.settings import Settings
        from farm.store.client import connect
        from farm.store.jobs import JobStore

        settings = Settings.load(**given["settings"])
        jobs = JobStore(connect(settings.redis_url or "redis://127.0.0.1:1"))  # unused: kill_all reads only the node
        containment = Containment.for_node(given["instance"], Path(settings.data_dir))
        return Warden(node_name(settings), settings, jobs=jobs, containment=containment).kill_all()

    return Lifeline(watched, clear_node).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
