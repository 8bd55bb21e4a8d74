"""How far the start estimate of GET /v1/jobs/{id}/wait is from the truth, on a replayed trace.

A real farm (`farm up`'s embedded parts: Valkey, `farm api`, --executors executor actors on
a local Ray, the local runtime) replays the busiest --hours of one pool of a recorded trace,
--speed times faster: each job arrives at its (compressed) time as one `sleep` step of its
(compressed) duration. Right after each submit the bench asks /wait and keeps the estimate;
once all have run it compares each estimate with the job's real start (`started_at`, the
server's clock, as `queued_at`). For the jobs that waited (over --waited-s), it reports the
median and p90 of |estimated - actual start|, in replay seconds and in trace seconds
(x speed), how many waiting jobs had no estimate, and the same for a naive estimate drawn
with hindsight (jobs ahead x the window's true mean duration / executors) for scale. The
--warm-jobs before the window are replayed first (quiet gaps cut to 10 minutes) and not
scored, so the farm has ended attempts to go on, as a farm that has been running has.

Usage: python bench/wait_estimate.py [--json] [--trace CSV] [--pool linux] [--hours 6] [--warm-jobs 40] [--speed 120] [--executors 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from harness import SHARED_TRACE, TOKEN, farm_api, progress, report

from farm.embedded import EmbeddedFarm
from farm.models import parse_rfc3339
from farm.settings import Settings
from farm.sim.trace import parse

WARM_GAP_S = 600.0  # trace seconds: the longest quiet gap replayed before the window


def busiest(submitted: list[float], durations: list[float], span_s: float) -> tuple[int, int]:
    """The [first, last) rows of the window of `span_s` that submits the most work."""
    best, best_at, j, work = 0.0, (0, 0), 0, 0.0
    for i in range(len(submitted)):
        while j < len(submitted) and submitted[j] < submitted[i] + span_s:
            work += durations[j]
            j += 1
        if work > best:
            best, best_at = work, (i, j)
        work -= durations[i]
    return best_at


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--trace", type=Path, default=SHARED_TRACE)
    ap.add_argument("--pool", default="linux")
    ap.add_argument("--hours", type=float, default=6.0)
    ap.add_argument("--speed", type=float, default=120.0, help="trace seconds per replay second")
    ap.add_argument("--warm-jobs", type=int, default=40, help="jobs before the window replayed first, not scored")
    ap.add_argument("--executors", type=int, default=4)
    ap.add_argument("--waited-s", type=float, default=1.0, help="a job 'waited' when its real wait (replay s) is over this")
    args = ap.parse_args()
    if not args.trace.exists():
        raise SystemExit(f"no trace at {args.trace} (pass --trace)")
    traces = {t.pool: t for t in parse(args.trace.read_text().splitlines(), split_pools=True)}
    trace = traces[args.pool]
    first, last = busiest(trace.submitted, trace.durations, args.hours * 3600)
    # The jobs before the window warm the farm up (ended attempts to go on), unscored; a quiet
    # gap before or among them is cut to WARM_GAP_S so the warm-up does not idle for days.
    scored_from, first = first, max(0, first - args.warm_jobs)
    warm = scored_from - first
    arrivals, at = [], 0.0
    for i in range(first, last):
        if i > first:
            gap = trace.submitted[i] - trace.submitted[i - 1]
            at += (min(gap, WARM_GAP_S) if i <= scored_from else gap) / args.speed
        arrivals.append((at, max(0.1, trace.durations[i] / args.speed)))
    mean_d = statistics.fmean(d for _, d in arrivals[warm:])
    progress(f"replaying {len(arrivals)} jobs of pool {args.pool} ({warm} of them warm-up, then {args.hours:g} trace hours from "
             f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(trace.submitted[scored_from]))} UTC) "
             f"{args.speed:g}x faster on {args.executors} executors")  # fmt: skip

    asked: list[tuple[str, float | None, int | None]] = []  # job, estimated start_in_s, position
    with tempfile.TemporaryDirectory(prefix="farm-bench-") as tmp:
        settings = Settings.load(data_dir=Path(tmp), admin_token=TOKEN, executors={"count": 0, "runtime": "local"})
        farm = EmbeddedFarm(settings)
        resolved = farm.start()
        try:
            farm.start_executors(resolved.model_copy(update={"executors": resolved.executors.model_copy(update={"count": args.executors})}))
            with farm_api(resolved.redis_url or "", Path(tmp), 1) as port:
                client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
                while client.get("/v1/queue").json()["pools"][0]["executors"]["idle"] < args.executors:
                    time.sleep(0.2)
                start = time.monotonic()
                for n, (at, took) in enumerate(arrivals):
                    time.sleep(max(0.0, start + at - time.monotonic()))
                    job = client.post("/v1/jobs", json={"steps": [{"name": "work", "run": f"sleep {took:.2f}"}]}).json()
                    got = client.get(f"/v1/jobs/{job['id']}/wait").json()
                    est = got["estimate"]["start_in_s"] if got.get("waiting") and got.get("estimate") else (0.0 if not got["waiting"] else None)
                    asked.append((job["id"], est, got.get("position")))
                    if n % 50 == 0:
                        progress(f"  {n}/{len(arrivals)} submitted")
                progress("waiting for the last jobs to run")
                jobs = {}
                deadline = time.monotonic() + 3600
                for job_id, _, _ in asked:
                    while (j := client.get(f"/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
                        if time.monotonic() > deadline:
                            raise SystemExit("jobs did not end within an hour")
                        time.sleep(0.5)
                    jobs[job_id] = j
                client.close()
        finally:
            farm.stop()

    errors, naive, missing = [], [], 0
    for job_id, est, position in asked[warm:]:
        j = jobs[job_id]
        if j["state"] != "succeeded":
            raise SystemExit(f"job {job_id} ended {j['state']}")
        actual = (parse_rfc3339(j["started_at"]) - parse_rfc3339(j["queued_at"])).total_seconds()
        if actual <= args.waited_s:
            continue
        if est is None:
            missing += 1
            continue
        errors.append(abs(est - actual))
        naive.append(abs((position or 0) * mean_d / args.executors - actual))
    if not errors:
        raise SystemExit("no job waited: replay more hours, or fewer executors")
    report({
        "jobs": len(asked) - warm, "warm_up_jobs": warm, "waited": len(errors) + missing, "no_estimate": missing,
        "error_p50_s": round(pct(errors, 50), 2), "error_p90_s": round(pct(errors, 90), 2),
        "error_p50_trace_s": round(pct(errors, 50) * args.speed), "error_p90_trace_s": round(pct(errors, 90) * args.speed),
        "hindsight_naive_error_p50_s": round(pct(naive, 50), 2), "hindsight_naive_error_p90_s": round(pct(naive, 90), 2),
        "pool": args.pool, "hours": args.hours, "speed": args.speed, "executors": args.executors,
    }, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
