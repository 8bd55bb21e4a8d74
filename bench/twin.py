"""The simulator against the live farm (issue 16, item 3): does `farm simulate` say what a real
`farm up` does with the same demand and the same policy?

For each slice of a pool of the trace (by default its busiest day and its quietest full
weekend), time is compressed by --factor: arrivals, durations, the lead time, the wait
target and the policy's clocks all shrink alike. A fresh `farm up` (local runtime, no
executors of its own) runs the predictive policy on that pool, its executors really taking
the scaled lead to become ready (`executors.startup_delay_s`, on top of a Ray actor's own
start), and each job is a `sleep` of its scaled duration, submitted over HTTP at its scaled
time. From farm's own records:

    live_executor_hours   each executor from the decision that asked for it to the one that
                          drained it (or, if it was never drained, the last job's end), as
                          `GET /v1/pools/{name}/decisions` records them
    live_wait_p95_s       each job's started_at - queued_at (GET /v1/jobs/{id})
    killed_jobs           jobs that did not succeed at their first attempt

Then `farm simulate`'s replay (farm.sim.simulator.simulate) runs on the very jobs the farm
saw (their queued_at, and how long each ran), with the same policy deciding on the live
autoscaler's cadence (tick_s = autoscaler.interval_s, not on arrivals) and the lead time the
farm measured (the median of the decisions' measured lead) -> sim_executor_hours,
sim_wait_p95_s. Hours are in the slice's own (uncompressed) time: live seconds x factor.

Target: executor-hours within 10 %, p95 wait within max(2 s, 20 %) (compressed seconds, as
measured), no job killed, on every slice.

Each slice's live records are kept (--keep DIR, a JSON file a slice), and `--replay FILE...`
runs only the simulator's side again on records kept before (the live side takes the
slice's compressed time, 30 minutes for the two defaults).

Usage: python bench/twin.py [--json] [--trace FILE] [--pool windows] [--factor 144] [--lead 180]
           [--target-p95 60] [--interval 0.5] [--slices peak,weekend] [--keep DIR] [--replay FILE...]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SHARED_TRACE, TOKEN, progress  # noqa: E402

from farm.autoscale.policy import PredictivePolicy  # noqa: E402
from farm.sim.simulator import percentile, simulate  # noqa: E402
from farm.sim.trace import Trace, parse  # noqa: E402
from farm.store.server import free_port  # noqa: E402

DAY = 86400
POOL = "default"  # the live farm's one pool, whatever the trace calls it


def slices(trace: Trace, names: list[str]) -> list[tuple[str, float, float]]:
    """(name, start, end) in trace time: "peak" the UTC day with the most jobs, "weekend" the
    full Saturday-Sunday with the fewest (at least one job each day), "START:HOURS" explicit."""
    days: dict[int, int] = {}
    for t in trace.submitted:
        days[int(t // DAY)] = days.get(int(t // DAY), 0) + 1
    out = []
    for name in names:
        if name == "peak":
            day = max(days, key=lambda d: (days[d], -d))
            out.append((f"peak day {time.strftime('%a %Y-%m-%d', time.gmtime(day * DAY))}", day * DAY, (day + 1) * DAY))
        elif name == "weekend":
            sats = [d for d in days if time.gmtime(d * DAY).tm_wday == 5 and days.get(d + 1)]
            if not sats:
                raise SystemExit("the trace has no full weekend")
            sat = min(sats, key=lambda d: (days[d] + days[d + 1], d))
            out.append((f"quiet weekend {time.strftime('%a %Y-%m-%d', time.gmtime(sat * DAY))}", sat * DAY, (sat + 2) * DAY))
        else:
            start, _, hours = name.partition(":")
            out.append((f"from {start} for {hours} h", float(start), float(start) + float(hours) * 3600))
    return out


def policy_for(args: argparse.Namespace) -> dict[str, Any]:
    """The predictive policy, its clocks compressed by the factor, deciding on the live
    autoscaler's cadence."""
    f = args.factor
    return {"kind": "predictive", "target_p95_s": args.target_p95 / f, "scale_down_delay_s": 60.0 / f, "replan_s": 3600.0 / f,
            "active_s": 900.0 / f, "max": args.max, "tick_s": args.interval, "on_arrival": False}  # fmt: skip


class Farm:
    """`farm up` on a free port with its own data dir (its own Redis and Ray); stopped on exit."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.port = free_port()
        (workdir / "farm.yaml").write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
        env.update({"FARM_ADMIN_TOKEN": TOKEN, "RAY_USAGE_STATS_ENABLED": "0", "FARM_CONFIG_DIR": str(workdir / "cli")})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "farm.cli", "up", "--config", str(workdir / "farm.yaml"), "--port", str(self.port),
             "--data-dir", str(workdir / "data")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        self.log = (workdir / "farm.log").open("w")
        ready: queue.Queue[bool] = queue.Queue()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log.write(line)
                if "ready at http" in line:
                    ready.put(True)
            ready.put(False)

        threading.Thread(target=read, daemon=True).start()
        try:
            started = ready.get(timeout=180)
        except queue.Empty:
            started = False
        if not started:
            self.stop()  # it may still be starting: it is ours to end
            raise SystemExit(f"farm up did not start; see {workdir / 'farm.log'}")
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)

    client: httpx.Client | None = None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.client is not None:
            self.client.close()


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def executors_now(client: httpx.Client) -> int:
    e = client.get("/v1/pools").json()["pools"][0]["executors"]
    return e["starting"] + e["idle"] + e["busy"] + e["draining"]


def run_live(args: argparse.Namespace, jobs: list[tuple[float, float]], workdir: Path) -> dict[str, Any]:
    """Replay the compressed jobs (offset s, duration s) against a fresh farm up; what its
    records say."""
    f = args.factor
    lead = args.lead / f
    config = {
        "pools": [POOL],
        "executors": {"count": 0, "runtime": "local", "startup_delay_s": lead},
        "autoscaler": {"interval_s": args.interval, "lead_s": lead},
        "policies": {POOL: policy_for(args)},
    }
    farm = Farm(workdir, config)
    decisions: dict[str, dict[str, Any]] = {}

    def collect() -> None:  # the farm keeps the newest 1,000: read them as the run goes
        for d in farm.client.get(f"/v1/pools/{POOL}/decisions", params={"limit": 1000}).json()["decisions"]:
            decisions[d["at"] + json.dumps(d.get("started")) + json.dumps(d.get("drained"))] = d

    try:
        ids: list[str] = []
        t0 = time.time() + 2.0
        last_collect = time.monotonic()
        for i, (offset, duration) in enumerate(jobs):
            delay = t0 + offset - time.time()
            if delay > 0:
                time.sleep(delay)
            r = farm.client.post("/v1/jobs", json={"pool": POOL, "steps": [{"name": "work", "run": f"sleep {duration:.3f}"}]})
            r.raise_for_status()
            ids.append(r.json()["id"])
            if time.monotonic() - last_collect > 20:
                collect()
                last_collect = time.monotonic()
            if i % max(1, len(jobs) // 10) == 0:
                progress(f"  submitted {i + 1}/{len(jobs)} at +{time.time() - t0:.0f} s, {executors_now(farm.client)} executors")
        done: dict[str, dict[str, Any]] = {}
        while len(done) < len(ids):
            for job_id in ids:
                if job_id not in done:
                    j = farm.client.get(f"/v1/jobs/{job_id}").json()
                    if j["state"] not in ("queued", "running"):
                        done[job_id] = j
            if time.monotonic() - last_collect > 20:
                collect()
                last_collect = time.monotonic()
            time.sleep(1.0)
        collect()
    finally:
        farm.stop()
    records = [done[i] for i in ids]
    queued = [ts(j["queued_at"]) for j in records]
    started = [ts(j["started_at"]) if j.get("started_at") else None for j in records]
    finished = [ts(j["finished_at"]) for j in records]
    killed = sum(1 for j in records if j["state"] != "succeeded" or j["attempt"] != 1)
    waits = sorted(s - q for s, q in zip(started, queued, strict=True) if s is not None)
    end = max(finished)
    asked: dict[str, float] = {}
    stopped: dict[str, float] = {}
    leads = []
    for d in sorted(decisions.values(), key=lambda d: ts(d["at"])):
        for e in d.get("started") or []:
            asked[e] = ts(d["at"])
        for e in d.get("drained") or []:
            stopped.setdefault(e, ts(d["at"]))
        leads.append(d["inputs"]["lead_s"])
    executor_s = sum(min(stopped.get(e, end), end) - t for e, t in asked.items() if t < end)
    measured = [x for x in leads if abs(x - lead) > 1e-9] or [lead]  # once the farm has measured one
    return {
        "queued": queued, "ran": [fi - (s or fi) for fi, s in zip(finished, started, strict=True)],
        "executor_s": executor_s, "wait_p95_s": percentile(waits, 95), "killed": killed, "lead_s": statistics.median(measured),
        "executors": len(asked), "decisions": len(decisions),
    }  # fmt: skip


def run_sim(args: argparse.Namespace, live: dict[str, Any]) -> tuple[float, float]:
    """farm simulate's replay on the jobs the farm saw, at the lead it measured: (executor-s, p95 wait s)."""
    order = sorted(range(len(live["queued"])), key=lambda i: live["queued"][i])
    trace = Trace(POOL, [live["queued"][i] for i in order], [live["ran"][i] for i in order])
    r = simulate(trace, PredictivePolicy.model_validate(policy_for(args)), lead_s=live["lead_s"])
    return r.executor_hours * 3600, r.wait_p95_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--trace", type=Path, default=SHARED_TRACE)
    ap.add_argument("--pool", default="windows", help="the trace's pool to replay")
    ap.add_argument("--factor", type=float, default=144.0, help="time compression (144: a day in 10 minutes)")
    ap.add_argument("--lead", type=float, default=180.0, help="the provisioning lead time, uncompressed (s)")
    ap.add_argument("--target-p95", type=float, default=60.0, help="the p95 wait target, uncompressed (s)")
    ap.add_argument("--interval", type=float, default=0.5, help="the live autoscaler's turn, compressed (s)")
    ap.add_argument("--max", type=int, default=60, help="the policy's max executors")
    ap.add_argument("--slices", default="peak,weekend")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep each slice's live records here")
    ap.add_argument("--replay", type=Path, nargs="+", default=None, help="the simulator's side only, on kept records")
    args = ap.parse_args()
    if args.replay:
        rows = []
        for path in args.replay:
            kept = json.loads(path.read_text())
            for k in ("factor", "lead", "target_p95", "interval", "max"):
                setattr(args, k, kept["args"][k])
            rows.append(compare(args, kept["slice"], kept["jobs"], kept["live"]))
        show(rows, args.json)
        return
    with args.trace.open() as fh:
        traces = {t.pool: t for t in parse(fh, split_pools=True)}
    if args.pool not in traces:
        raise SystemExit(f"no pool {args.pool!r} in the trace: {', '.join(sorted(traces))}")
    trace = traces[args.pool]
    rows = []
    for name, start, end in slices(trace, args.slices.split(",")):
        lo, hi = bisect.bisect_left(trace.submitted, start), bisect.bisect_left(trace.submitted, end)
        jobs = [((trace.submitted[i] - start) / args.factor, trace.durations[i] / args.factor) for i in range(lo, hi)]
        progress(f"{name}: {len(jobs)} jobs, {(end - start) / args.factor / 60:.0f} min compressed (x{args.factor:g})")
        with tempfile.TemporaryDirectory(prefix="twin-", dir=args.workdir) as tmp:
            live = run_live(args, jobs, Path(tmp))
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            kept = {"slice": name, "jobs": len(jobs), "live": live,
                    "args": {k: getattr(args, k) for k in ("factor", "lead", "target_p95", "interval", "max")}}  # fmt: skip
            (args.keep / f"live-{name.split()[0]}-{int(start)}.json").write_text(json.dumps(kept))
        rows.append(compare(args, name, len(jobs), live))
        progress(f"  {json.dumps(rows[-1])}")
    show(rows, args.json)


def compare(args: argparse.Namespace, name: str, jobs: int, live: dict[str, Any]) -> dict[str, Any]:
    """The slice's row: the live farm's figures beside the simulator's on the same jobs."""
    sim_s, sim_p95 = run_sim(args, live)
    f = args.factor
    row = {
        "slice": name, "jobs": jobs, "factor": f,
        "live_executor_hours": round(live["executor_s"] * f / 3600, 2), "sim_executor_hours": round(sim_s * f / 3600, 2),
        "live_wait_p95_s": round(live["wait_p95_s"], 2), "sim_wait_p95_s": round(sim_p95, 2), "killed_jobs": live["killed"],
        "measured_lead_s": round(live["lead_s"], 2), "executors_started": live["executors"],
    }  # fmt: skip
    hours_ok = abs(row["sim_executor_hours"] - row["live_executor_hours"]) <= 0.10 * row["live_executor_hours"]
    wait_ok = abs(sim_p95 - live["wait_p95_s"]) <= max(2.0, 0.2 * live["wait_p95_s"])
    row["meets_target"] = hours_ok and wait_ok and live["killed"] == 0
    return row


def show(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(" ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
