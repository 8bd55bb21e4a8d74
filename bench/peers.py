"""Peer mode of bench/dispatch.py: farm against Celery and RQ on the same Redis server, in
the same run, like for like.

    drain    N pre-queued no-op jobs drained by as many worker processes as cores:
             Celery (Redis broker, results ignored, prefork), RQ (SimpleWorker processes),
             farm (executor actors with the noop runtime: farm's scheduling cost, not
             process spawning). Rate = N / (last completion - first completion) for the
             peers; for farm, N / (last finish - first start) from the job records.
    enqueue  Celery `delay` and RQ `enqueue` from one thread; farm over HTTP
             (`farm api --workers <cores>`, --concurrency keep-alive connections from an
             asyncio client), a job per request.
    runs     the same N jobs in groups of RUN_SIZE: Celery `group(...).apply_async()` from
             one thread, farm's `POST /v1/runs` over the same HTTP client and connections.
    redis    `redis-benchmark` (Debian's redis-tools) SET/GET ops/s: the physical limit.
    claim    farm's claim latency with 100k jobs queued across 1,000 tenants.

Celery and RQ come from the `bench` extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import redis
from harness import NOOP, farm_api, progress, submit_load, submit_runs

from farm.models import JobSpec, parse_rfc3339
from farm.store.client import connect
from farm.store.jobs import JobStore

WORKER_MODULE = textwrap.dedent(
    """
    import os
    import redis
    from celery import Celery

    r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
    app.conf.task_ignore_result = True
    app.conf.worker_prefetch_multiplier = 4
    app.conf.broker_connection_retry_on_startup = True


    @app.task
    def noop():
        r.incr("bench:done")


    def rq_noop():
        r.incr("bench:done")
    """
)


RUN_SIZE = 20  # jobs per run (about a push's fan-out on the shared trace: 18)


def _wait_count(r: redis.Redis, n: int, timeout: float) -> float:
    """Seconds from the first to the n-th completion (counted by the tasks themselves)."""
    deadline = time.monotonic() + timeout
    while int(r.get("bench:done") or 0) == 0:
        if time.monotonic() > deadline:
            raise SystemExit("workers never started")
        time.sleep(0.001)
    t0, first = time.perf_counter(), int(r.get("bench:done") or 0)
    while (done := int(r.get("bench:done") or 0)) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {done}/{n} done")
        time.sleep(0.005)
    return (n - first) / (time.perf_counter() - t0)


def celery(url: str, n: int, procs: int, workdir: Path) -> tuple[float, float, float]:
    r = redis.Redis.from_url(url)
    r.flushall()
    sys.path.insert(0, str(workdir))
    os.environ["BENCH_REDIS_URL"] = url
    import benchtasks  # type: ignore[import-not-found]

    t0 = time.perf_counter()
    for _ in range(n):
        benchtasks.noop.delay()
    enqueue = n / (time.perf_counter() - t0)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "benchtasks", "worker", "--pool", "prefork",
         "--concurrency", str(procs), "--loglevel", "warning", "--without-heartbeat", "--without-gossip", "--without-mingle"],
        cwd=workdir, env={**os.environ, "BENCH_REDIS_URL": url}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        drain = _wait_count(r, n, timeout=600)
    finally:
        worker.terminate()
        worker.wait(30)
    r.flushall()
    from celery import group

    t0 = time.perf_counter()
    for _ in range(n // RUN_SIZE):
        group(benchtasks.noop.s() for _ in range(RUN_SIZE)).apply_async()
    grouped = n // RUN_SIZE * RUN_SIZE / (time.perf_counter() - t0)
    r.flushall()
    return enqueue, drain, grouped


def rq(url: str, n: int, procs: int, workdir: Path) -> tuple[float, float]:
    from rq import Queue

    r = redis.Redis.from_url(url)
    r.flushall()
    import benchtasks  # type: ignore[import-not-found]

    q = Queue("bench", connection=r)
    t0 = time.perf_counter()
    for _ in range(n):
        q.enqueue(benchtasks.rq_noop)
    enqueue = n / (time.perf_counter() - t0)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "rq.cli", "worker", "--burst", "--worker-class", "rq.worker.SimpleWorker",
             "--url", url, "--quiet", "bench"],
            cwd=workdir, env={**os.environ, "BENCH_REDIS_URL": url}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(procs)
    ]
    try:
        drain = _wait_count(r, n, timeout=600)
    finally:
        for w in workers:
            w.terminate()
            w.wait(30)
    return enqueue, drain


def farm_drain(farm: Any, settings: Any, store: JobStore, n: int, procs: int) -> float:
    store.client.flushall()
    spec = JobSpec.model_validate(NOOP)
    for _ in range(n):
        store.submit(spec, "bench")
    noop = settings.model_copy(update={"executors": settings.executors.model_copy(update={"count": procs, "runtime": "noop"})})
    farm.start_executors(noop)
    deadline = time.monotonic() + 600
    while store.client.zcard(store.keys.finished) < n:
        if time.monotonic() > deadline:
            raise SystemExit("farm did not drain")
        time.sleep(0.05)
    jobs = store.get_many([i for i in store.client.zrange(store.keys.jobs, 0, -1)])
    first = min(parse_rfc3339(j.started_at).timestamp() for j in jobs)
    last = max(parse_rfc3339(j.finished_at).timestamp() for j in jobs)
    farm.stop_executors()
    return n / (last - first)


def farm_submit(url: str, data_dir: Path, n: int, conns: int, workers: int) -> tuple[float, float]:
    """Jobs a second submitted over HTTP: a job per request, then in runs of RUN_SIZE."""
    with farm_api(url, data_dir, workers) as port:
        submit_load(port, min(n, 500), conns)  # warm up every worker
        single = n / submit_load(port, n, conns)[1]
        submit_runs(port, min(n, 500) // RUN_SIZE, RUN_SIZE, conns)
        ids, took = submit_runs(port, n // RUN_SIZE, RUN_SIZE, conns)
        return single, len(ids) / took


def redis_ops(port: int, password: str) -> float | None:
    tool = shutil.which("redis-benchmark")
    if tool is None:
        progress("  redis-benchmark not found (apt-get install redis-tools): redis_ops_per_s left out")
        return None
    out = subprocess.run([tool, "-h", "127.0.0.1", "-p", str(port), "-a", password, "-t", "set,get", "-n", "200000",
                          "-c", "16", "-q"], capture_output=True, text=True, check=True).stdout  # fmt: skip
    rates = [float(m) for m in re.findall(r"([0-9.]+) requests per second", out)]
    return statistics.mean(rates)


def claim_p99_ms(store: JobStore, jobs: int = 100_000, tenants: int = 1000, samples: int = 2000) -> float:
    store.client.flushall()
    spec = JobSpec.model_validate(NOOP)
    args = [store._enqueue_args(spec, f"tenant-{i % tenants}") for i in range(jobs)]
    pipe = store.client.pipeline(transaction=False)
    for i, a in enumerate(args, 1):
        store._scripts.call("enqueue", *a, client=pipe)
        if i % 5000 == 0:
            pipe.execute()
            progress(f"  claim: queued {i}/{jobs}")
    pipe.execute()
    lat = []
    for _ in range(samples):
        t0 = time.perf_counter()
        got = store.claim("default", "bench", lease_s=600, grace_s=5)
        lat.append((time.perf_counter() - t0) * 1000)
        assert got is not None
    return statistics.quantiles(lat, n=100, method="inclusive")[98]


def run(n: int, conns: int) -> dict[str, Any]:
    from farm.embedded import EmbeddedFarm
    from farm.settings import Settings

    procs = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="farm-peers-") as tmp:
        workdir = Path(tmp)
        (workdir / "benchtasks.py").write_text(WORKER_MODULE)
        settings = Settings.load(data_dir=workdir / "farm", executors={"count": 0})
        farm = EmbeddedFarm(settings)
        resolved = farm.start()
        url = resolved.redis_url or ""
        store = JobStore(connect(url))
        try:
            progress("redis: redis-benchmark SET/GET")
            ops = redis_ops(farm.redis.port, farm.redis.password) if farm.redis else None
            progress(f"celery: {n} tasks, prefork x{procs}")
            celery_enqueue, celery_drain, celery_group = celery(url, n, procs, workdir)
            progress(f"rq: {n} jobs, SimpleWorker x{procs}")
            rq_enqueue, rq_drain = rq(url, n, procs, workdir)
            progress(f"farm: {n} no-op jobs, {procs} noop executors")
            drain = farm_drain(farm, resolved, store, n, procs)
            progress(f"farm: {n} submits over HTTP, {conns} connections, {procs} API workers")
            store.client.flushall()
            submit, submit_runs_rate = farm_submit(url, workdir / "farm", n, conns, procs)
            progress("farm: claim latency at 100k queued / 1,000 tenants")
            claim = claim_p99_ms(store)
        finally:
            farm.stop()
    return {
        "farm_drain_jobs_per_s": round(drain, 1),
        "celery_drain_jobs_per_s": round(celery_drain, 1),
        "rq_drain_jobs_per_s": round(rq_drain, 1),
        "farm_submit_jobs_per_s": round(submit, 1),
        "farm_run_submit_jobs_per_s": round(submit_runs_rate, 1),
        "celery_enqueue_jobs_per_s": round(celery_enqueue, 1),
        "celery_group_jobs_per_s": round(celery_group, 1),
        "run_size": RUN_SIZE,
        "rq_enqueue_jobs_per_s": round(rq_enqueue, 1),
        "redis_ops_per_s": None if ops is None else round(ops, 1),
        "claim_p99_ms_at_100k": round(claim, 3),
        "jobs": n,
        "worker_processes": procs,
        "http_connections": conns,
    }
