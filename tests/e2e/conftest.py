"""Runs farm as a user does: `farm up` / `farm api` as processes, spoken to over HTTP."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from farm.store.server import free_port


class FarmProcess:
    def __init__(self, args: list[str], env: dict[str, str], ready_timeout: float = 90) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "farm.cli", *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        ready: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if "ready at http" in line:
                    ready.put(line)

        threading.Thread(target=read, daemon=True).start()
        try:
            self.ready_line = ready.get(timeout=ready_timeout)
        except queue.Empty:
            self.stop()
            raise AssertionError("farm did not become ready:\n" + "".join(self.lines)) from None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def farm_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env.update({"FARM_DATA_DIR": str(tmp_path / "farm"), "FARM_ADMIN_TOKEN": "e2e-admin-token", "RAY_USAGE_STATS_ENABLED": "0",
                "FARM_CONFIG_DIR": str(tmp_path / "config")})  # contexts: the test's own, never the user's
    return env


@pytest.fixture
def user_env(farm_env: dict[str, str]) -> dict[str, str]:
    """A user's shell after `farm up`: no FARM_URL, no FARM_TOKEN, no FARM_DATA_DIR."""
    return {k: v for k, v in farm_env.items() if k not in ("FARM_ADMIN_TOKEN", "FARM_DATA_DIR")}


@pytest.fixture
def start_farm(farm_env: dict[str, str]) -> Iterator:
    procs: list[FarmProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> tuple[FarmProcess, httpx.Client]:
        port = free_port()
        merged = {k: v for k, v in {**farm_env, **(env or {})}.items() if v is not None}  # None: unset it
        p = FarmProcess([*args, "--port", str(port)] if args[0] == "up" else list(args), {**merged, "FARM_API__PORT": str(port)})
        procs.append(p)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer e2e-admin-token"}, timeout=30)
        return p, client

    yield start
    for p in procs:
        p.stop()


def wait_all(client: httpx.Client, ids: list[str], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} jobs still not done"
        for job_id in list(pending):
            if client.get(f"/v1/jobs/{job_id}").json()["state"] not in ("queued", "running"):
                pending.discard(job_id)
        time.sleep(0.2)
    return [client.get(f"/v1/jobs/{i}").json() for i in ids]


def process_tree(root: int) -> set[int]:
    """`root` and every process descended from it, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    return tree


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
