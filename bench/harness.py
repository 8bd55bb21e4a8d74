"""Shared by the benchmarks: run `farm api` as its own process(es), and drive it with a
light asyncio HTTP/1.1 keep-alive client (so the load generator costs little of the two
cores it shares with the server)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from farm.store.server import free_port

TOKEN = "bench-admin-token"
NOOP: dict[str, Any] = {"steps": [{"name": "noop", "run": "true"}]}


def report(figures: dict[str, Any], as_json: bool) -> None:
    """Every benchmark's output: one JSON object with --json, else one figure a line."""
    if as_json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:28} {v}")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


SHARED_TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "bitcoin-core-ci-2025.csv"


def replay_args(description: str) -> argparse.ArgumentParser:
    """The options every capacity benchmark takes: --json, the trace, the lead time and the target."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--trace", type=Path, default=SHARED_TRACE)
    ap.add_argument("--lead", type=float, default=60.0)
    ap.add_argument("--target-p95", type=float, default=15.0)
    return ap


def wait_until_answers(url: str, timeout_s: float, what: str) -> None:
    """Until GET url answers 200, or exit saying `what` did not start."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.1)


@contextmanager
def farm_api(redis_url: str, data_dir: Path, workers: int, env_extra: dict[str, str] | None = None) -> Iterator[int]:
    """`farm api --workers N` on a free port; yields the port once /healthz answers."""
    port = free_port()
    env = {**os.environ, "FARM_REDIS_URL": redis_url, "FARM_ADMIN_TOKEN": TOKEN, "FARM_API__PORT": str(port),
           "FARM_DATA_DIR": str(data_dir), **(env_extra or {})}  # fmt: skip
    api = subprocess.Popen([sys.executable, "-m", "farm.cli", "api", "--workers", str(workers)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/healthz", 30, "farm api")
        yield port
    finally:
        api.terminate()
        api.wait(30)


async def _load(port: int, n: int, conns: int, path: str, body: dict[str, Any], per_request: int,
                token: str = TOKEN) -> tuple[list[str], float]:  # fmt: skip
    """POST `body` to `path` n times over `conns` keep-alive connections; each 201 answer's
    id (a run's: its jobs' ids, `per_request` of them)."""
    raw = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
    ).encode() + raw
    per = [n // conns + (1 if i < n % conns else 0) for i in range(conns)]

    async def client(count: int) -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ids: list[str] = []
        for _ in range(count):
            writer.write(request)
            status = await reader.readline()
            if b" 201 " not in status:
                raise SystemExit(f"submit failed: {status!r}")
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            got = json.loads(await reader.readexactly(length))
            ids.extend(got["jobs"] if per_request > 1 else [got["id"]])
        writer.close()
        return ids

    t0 = time.perf_counter()
    chunks = await asyncio.gather(*(client(c) for c in per))
    return [i for chunk in chunks for i in chunk], time.perf_counter() - t0


def submit_load(port: int, n: int, conns: int, spec: dict[str, Any] = NOOP, token: str = TOKEN) -> tuple[list[str], float]:
    """POST n jobs over `conns` keep-alive connections; (job ids, seconds taken)."""
    return asyncio.run(_load(port, n, conns, "/v1/jobs", spec, 1, token))


def submit_runs(port: int, runs: int, size: int, conns: int, spec: dict[str, Any] = NOOP, token: str = TOKEN) -> tuple[list[str], float]:
    """POST `runs` runs of `size` jobs each over `conns` keep-alive connections; (job ids,
    seconds taken)."""
    return asyncio.run(_load(port, runs, conns, "/v1/runs", {"name": "bench", "jobs": [spec] * size}, size, token))
