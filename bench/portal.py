"""Portal benchmark: how soon each main page of /ui paints in a real browser, in a full farm.

Runs `farm api` as its own process on the embedded Valkey, fills it through the API with
--runs runs of --run-size jobs (10,000 by default), claims and ends a share of them from the
store (as executors would: some failed, most succeeded), and gives one running job a log of
--log-mib MiB (written past the 10 MiB cap, so the page shows the head-and-tail cut). Then
Debian's chromium (Playwright, headless) logs in as the admin, who sees every job, and loads
each page --loads times, reading from the browser's own Performance API:

    first-contentful-paint   when the page first painted text (the figure the issue bounds at 1 s)
    responseEnd              when the last byte of the page's HTML arrived

Usage: python bench/portal.py [--json] [--runs N] [--run-size M] [--log-mib L] [--loads K]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import TOKEN, farm_api, progress, report, submit_runs  # noqa: E402

from farm.models import JobState, StepResult  # noqa: E402
from farm.store.client import connect  # noqa: E402
from farm.store.jobs import JobStore  # noqa: E402
from farm.store.server import EmbeddedRedis  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CAP = 10 * 1024 * 1024  # retention.log_max_bytes's default
_TIMING = """(() => {
    const paint = performance.getEntriesByName('first-contentful-paint')[0];
    const nav = performance.getEntriesByType('navigation')[0];
    return {fcp: paint ? paint.startTime : null, response_end: nav.responseEnd, bytes: nav.transferSize};
})()"""


def fill(store: JobStore, port: int, runs: int, size: int, log_mib: int) -> dict[str, str]:
    """The farm's jobs: submitted through the API, a share ended, one with a long log. Returns
    the ids the pages are about."""
    progress(f"submit: {runs} runs of {size} jobs through the API")
    ids, took = submit_runs(port, runs, size, 4)
    progress(f"  {len(ids)} jobs in {took:.1f} s")
    long = store.claim("default", "bench-portal-long", lease_s=24 * 3600, grace_s=5)
    assert long is not None
    progress(f"log: {log_mib} MiB into job {long.job_id[:12]} (cap {CAP >> 20} MiB)")
    line = "".join(f"{i:08d} building target {i % 977:03d}: cc -O2 -c src/module_{i % 131}.c -o build/module_{i % 131}.o\n"
                   for i in range(800))  # fmt: skip
    written = 0
    while written < log_mib << 20:
        store.append_log(long.job_id, long.attempt, line, cap=CAP)
        written += len(line)
    ended = len(ids) // 5
    progress(f"end: {ended} jobs claimed and ended, 1 in 50 failed")
    for i in range(ended):
        claim = store.claim("default", f"bench-portal-{i % 4}", lease_s=600, grace_s=5)
        assert claim is not None
        state = JobState.FAILED if i % 50 == 0 else JobState.SUCCEEDED
        store.finish(claim.job_id, claim.attempt, state, exit_code=0 if state is JobState.SUCCEEDED else 2, error=None,
                     steps=[StepResult(name="noop", exit_code=0, duration_s=0.4)])  # fmt: skip
    page, _ = store.list(tenant=None, state=JobState.QUEUED, limit=1)
    run_id = page[0].run_id
    return {"long": long.job_id, "queued": page[0].id, "run": run_id or ""}


def measure(base: str, pages: list[tuple[str, str]], loads: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    args = ["--disable-background-networking", "--disable-dev-shm-usage"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
    figures: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
        page.goto(base + "/ui/login")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/ui")
        for name, path in pages:
            fcp, end = [], []
            for _ in range(loads):
                page.goto(base + path, wait_until="load")
                deadline = time.monotonic() + 5
                while (got := page.evaluate(_TIMING))["fcp"] is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                fcp.append(got["fcp"])
                end.append(got["response_end"])
            progress(f"  {name:12} first paint median {statistics.median(fcp):6.0f} ms, max {max(fcp):6.0f} ms")
            figures[f"{name}_fcp_median_ms"] = round(statistics.median(fcp))
            figures[f"{name}_fcp_max_ms"] = round(max(fcp))
            figures[f"{name}_response_end_median_ms"] = round(statistics.median(end))
        browser.close()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--run-size", type=int, default=100)
    ap.add_argument("--log-mib", type=int, default=12, help="MiB written into one job's log (kept: its 10 MiB cap)")
    ap.add_argument("--loads", type=int, default=5, help="loads of each page")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="farm-bench-portal-") as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis")
        redis.start()
        try:
            store = JobStore(connect(redis.url))
            with farm_api(redis.url, Path(tmp), 1) as port:
                ids = fill(store, port, args.runs, args.run_size, args.log_mib)
                total, cut = store.client.hmget(store.keys.job(ids["long"]), "log_bytes", "log_cut")
                kept = int(total or 0) - int(cut or 0)
                progress(f"measure: each page {args.loads} times in chromium")
                pages = [("queue", "/ui"), ("jobs", "/ui/jobs"), ("jobs_failed", "/ui/jobs?state=failed"),
                         ("job_log", f"/ui/jobs/{ids['long']}"), ("job_queued", f"/ui/jobs/{ids['queued']}"),
                         ("runs", "/ui/runs"), ("run", f"/ui/runs/{ids['run']}"), ("pools", "/ui/pools"),
                         ("pool", "/ui/pools/default")]  # fmt: skip
                figures = measure(f"http://127.0.0.1:{port}", pages, args.loads)
        finally:
            redis.stop()
    report({"jobs": args.runs * args.run_size, "runs": args.runs, "log_bytes_written": args.log_mib << 20,
            "log_bytes_kept_in_attempt": kept, "loads": args.loads, **figures}, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
