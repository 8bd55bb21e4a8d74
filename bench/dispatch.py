"""Dispatch benchmark: HTTP submit rate, drain rate, and submit→start latency.

Runs a real farm on this machine: the embedded Valkey, `farm api` as its own process (so
the load generator does not share its interpreter), and executor actors on a local Ray with
the local runtime.

    submit:  --jobs no-op jobs POSTed over HTTP by --concurrency client threads, with no
             executors running (so only the submit path is measured) -> farm_submit_jobs_per_s
    drain:   --executors actors started on that backlog; jobs / (last finish - first start),
             both from the server clock in the job records -> farm_drain_jobs_per_s
    latency: with idle executors, --samples jobs submitted one at a time; started_at -
             queued_at of each (server clock, ms) -> submit_to_start_p50_ms / _p99_ms

Usage: python bench/dispatch.py [--json] [--jobs N] [--concurrency C] [--executors E] [--samples S]
       python bench/dispatch.py --peers [--json] [--jobs N] [--concurrency C]   (see bench/peers.py)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from farm.embedded import EmbeddedFarm
from farm.models import parse_rfc3339
from farm.settings import Settings
from farm.store.server import free_port

NOOP = {"steps": [{"name": "noop", "run": "true"}]}


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ms(ts: str) -> float:
    return parse_rfc3339(ts).timestamp() * 1000


def start_api(redis_url: str, data_dir: Path, token: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "FARM_REDIS_URL": redis_url, "FARM_ADMIN_TOKEN": token, "FARM_API__PORT": str(port), "FARM_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "farm.cli", "api"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("farm api did not start")


def submit_many(url: str, token: str, n: int, concurrency: int) -> tuple[list[str], float]:
    per_thread = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]

    def worker(count: int) -> list[str]:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            return [c.post("/v1/jobs", json=NOOP).raise_for_status().json()["id"] for _ in range(count)]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        ids = [i for chunk in pool.map(worker, per_thread) for i in chunk]
    return ids, time.perf_counter() - t0


def wait_all(client: httpx.Client, ids: list[str], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        # The admin listing returns newest first; page through until every job has ended.
        done, cursor = {}, None
        while True:
            page = client.get("/v1/jobs", params={"limit": 500, **({"cursor": cursor} if cursor else {})}).json()
            done.update({j["id"]: j for j in page["jobs"] if j["state"] not in ("queued", "running")})
            if not (cursor := page["next_cursor"]):
                break
        left = sum(1 for i in ids if i not in done)
        if not left:
            return [done[i] for i in ids]
        if time.monotonic() > deadline:
            raise SystemExit(f"{left} jobs did not finish in {timeout}s")
        progress(f"  drain: {len(ids) - left}/{len(ids)} finished")
        time.sleep(1.0)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--executors", type=int, default=4)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--peers", action="store_true", help="farm against Celery and RQ on the same Redis (bench/peers.py)")
    args = ap.parse_args()
    if args.peers:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import peers

        report(peers.run(args.jobs, args.concurrency), args.json)
        return

    token = "bench-admin-token"
    with tempfile.TemporaryDirectory(prefix="farm-bench-") as tmp:
        settings = Settings.load(data_dir=Path(tmp), admin_token=token, executors={"count": 0})
        farm = EmbeddedFarm(settings)
        resolved = farm.start()
        api, url = start_api(resolved.redis_url or "", Path(tmp), token)
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        try:
            progress(f"submit: {args.jobs} jobs over HTTP, {args.concurrency} clients, no executors")
            ids, took = submit_many(url, token, args.jobs, args.concurrency)
            submit_rate = args.jobs / took

            progress(f"drain: starting {args.executors} executors on the backlog")
            farm.start_executors(resolved.model_copy(update={"executors": resolved.executors.model_copy(update={"count": args.executors})}))
            jobs = wait_all(client, ids, timeout=600)
            bad = [j for j in jobs if j["state"] != "succeeded"]
            if bad:
                raise SystemExit(f"{len(bad)} jobs did not succeed, e.g. {bad[0]}")
            span_ms = max(ms(j["finished_at"]) for j in jobs) - min(ms(j["started_at"]) for j in jobs)
            drain_rate = len(jobs) / (span_ms / 1000)

            progress(f"latency: {args.samples} jobs one at a time onto idle executors")
            time.sleep(1.0)  # let every executor go back to blocking on the wake list
            lat = []
            for _ in range(args.samples):
                job = client.post("/v1/jobs", json=NOOP).json()
                while (job := client.get(f"/v1/jobs/{job['id']}").json())["state"] != "succeeded":
                    time.sleep(0.002)
                lat.append(ms(job["started_at"]) - ms(job["queued_at"]))
        finally:
            client.close()
            api.terminate()
            api.wait()
            farm.stop()

    report({
        "submit_to_start_p50_ms": round(percentile(lat, 50), 2),
        "submit_to_start_p99_ms": round(percentile(lat, 99), 2),
        "farm_submit_jobs_per_s": round(submit_rate, 1),
        "farm_drain_jobs_per_s": round(drain_rate, 1),
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "executors": args.executors,
        "samples": args.samples,
    }, args.json)  # fmt: skip


def report(figures: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
