"""Dispatch benchmark: HTTP submit rate, drain rate, and submit→start latency.

Runs a real farm on this machine: the embedded Valkey, `farm api --workers <cores>` as its
own processes (so the load generator does not share their interpreters), and executor
actors on a local Ray with the local runtime (a real `/bin/sh -c true` per job; `--runtime
noop` to leave process start-up out).

    submit:  --jobs no-op jobs POSTed over HTTP on --concurrency keep-alive connections, with
             no executors running (so only the submit path is measured) -> farm_submit_jobs_per_s
    drain:   --executors actors started on that backlog; jobs / (last finish - first start),
             both from the server clock in the job records -> farm_drain_jobs_per_s
    latency: with idle executors, --samples jobs submitted one at a time; started_at -
             queued_at of each (server clock, ms) -> submit_to_start_p50_ms / _p99_ms

    submit-only (--submit-only): the submit figure, and the same jobs in runs of 20 (`POST
             /v1/runs`) -> farm_run_submit_jobs_per_s, as a tenant's token (resolved in
             Redis per request, audited) rather than the admin's; no executors, no drain

Usage: python bench/dispatch.py [--json] [--jobs N] [--concurrency C] [--executors E] [--samples S]
       python bench/dispatch.py --submit-only [--json] [--jobs N] [--concurrency C]
       python bench/dispatch.py --peers [--json] [--jobs N] [--concurrency C]   (see bench/peers.py)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import NOOP, TOKEN, farm_api, progress, report, submit_load, submit_runs  # noqa: E402

from farm.embedded import EmbeddedFarm  # noqa: E402
from farm.models import parse_rfc3339  # noqa: E402
from farm.settings import Settings, hash_token  # noqa: E402


def ms(ts: str) -> float:
    return parse_rfc3339(ts).timestamp() * 1000


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


TENANT_TOKEN = "bench-tenant-token"
RUN_SIZE = 20


def submit_only(jobs: int, conns: int, workers: int) -> dict[str, object]:
    """Jobs one per request, then the same number in runs of RUN_SIZE, as a tenant of farm.yaml."""
    tenants = json.dumps([{"name": "bench", "token_sha256": hash_token(TENANT_TOKEN), "max_queued": 10 * jobs}])
    with tempfile.TemporaryDirectory(prefix="farm-bench-") as tmp:
        farm = EmbeddedFarm(Settings.load(data_dir=Path(tmp), admin_token=TOKEN, executors={"count": 0}))
        resolved = farm.start()
        try:
            with farm_api(resolved.redis_url or "", Path(tmp), workers, {"FARM_TENANTS": tenants}) as port:
                submit_load(port, 200, conns, token=TENANT_TOKEN)  # warm-up: the workers' first requests
                progress(f"submit: {jobs} jobs over HTTP as a tenant, {conns} connections, {workers} API workers")
                _, took = submit_load(port, jobs, conns, token=TENANT_TOKEN)
                progress(f"runs: {jobs // RUN_SIZE} runs of {RUN_SIZE}")
                _, took_runs = submit_runs(port, jobs // RUN_SIZE, RUN_SIZE, conns, token=TENANT_TOKEN)
        finally:
            farm.stop()
    return {"farm_submit_jobs_per_s": round(jobs / took, 1), "farm_run_submit_jobs_per_s": round(jobs // RUN_SIZE * RUN_SIZE / took_runs, 1),
            "jobs": jobs, "concurrency": conns, "run_size": RUN_SIZE}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--executors", type=int, default=4)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--runtime", default="local", choices=["local", "noop"], help="executors' runtime (local: a real process per job)")
    ap.add_argument("--no-disk-quota", action="store_true", help="plain workspaces (executors.disk_quota_bytes: null), not a filesystem each")
    ap.add_argument("--submit-only", action="store_true", help="HTTP submit of jobs and of runs of 20, as a tenant; no executors")
    ap.add_argument("--peers", action="store_true", help="farm against Celery and RQ on the same Redis (bench/peers.py)")
    args = ap.parse_args()
    if args.peers:
        import peers

        report(peers.run(args.jobs, args.concurrency), args.json)
        return

    workers = os.cpu_count() or 1
    if args.submit_only:
        report(submit_only(args.jobs, args.concurrency, workers), args.json)
        return
    with tempfile.TemporaryDirectory(prefix="farm-bench-") as tmp:
        settings = Settings.load(data_dir=Path(tmp), admin_token=TOKEN, executors={"count": 0, "runtime": args.runtime,
                                 **({"disk_quota_bytes": None} if args.no_disk_quota else {})})  # fmt: skip
        farm = EmbeddedFarm(settings)
        resolved = farm.start()
        try:
            with farm_api(resolved.redis_url or "", Path(tmp), workers) as port:
                client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
                progress(f"submit: {args.jobs} jobs over HTTP, {args.concurrency} connections, {workers} API workers, no executors")
                ids, took = submit_load(port, args.jobs, args.concurrency)
                submit_rate = args.jobs / took

                progress(f"drain: starting {args.executors} {args.runtime} executors on the backlog")
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
                client.close()
        finally:
            farm.stop()

    report({
        "submit_to_start_p50_ms": round(percentile(lat, 50), 2),
        "submit_to_start_p99_ms": round(percentile(lat, 99), 2),
        "farm_submit_jobs_per_s": round(submit_rate, 1),
        "farm_drain_jobs_per_s": round(drain_rate, 1),
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "executors": args.executors,
        "runtime": args.runtime,
        "disk_quota": not args.no_disk_quota,
        "samples": args.samples,
    }, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
