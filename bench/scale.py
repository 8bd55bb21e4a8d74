"""Scale benchmark (issue 15): the autoscaler's decisions for a large farm, claim latency with
thousands of executors on one Redis, and the simulator at a million jobs a day.

    decide  --pools pools, --executors executors in all, every pool under the predictive
            policy with a memory that learned --history-days of the shared trace (tiled to
            the pool's size) at the live cadence: one decision every 2 s (the autoscaler's
            interval_s). The snapshots are the simulator's, recorded over --turns turns
            after the history; one turn = decide() for every pool, as Autoscaler.run_once
            does between its I/O -> decide_p99_ms (wall time of a whole turn)
    claim   --claimers simulated executors (asyncio tasks with farm's asyncio client, in
            --claim-procs processes) against one embedded Valkey, each looping claim ->
            finish (no work between) on a queue pre-filled across --claim-pools pools and
            --claim-tenants tenants, each job running --claim-job-ms on average (1 s: 2,000 claims
            a second offered, far above a CI farm's rate) -> claim_p99_ms (one claim script
            round trip), claims/s
    sim     the shared trace tiled to --jobs-per-day for --days (each copy of each week of
            it shifted by up to +-30 min, tenants renamed per copy), written under
            --workdir, then parsed and replayed through the predictive policy as
            `farm simulate --trace FILE --policy predictive` does -> sim_wall_s (parse +
            replay)
    all     a small project's long history: --all-years of --all-jobs jobs (each week one of
            the shared trace's weeks in turn, each of its pushes, the jobs submitted in one
            second, kept whole with the probability that gives --all-jobs), written under
            --workdir, then `farm simulate --trace FILE --policy all` (farm's predictive
            and every peer re-tuned weekly from the weeks before) -> all_wall_s
    long    a sparse pool of long builds (issue 28): --long-years of --long-per-week builds
            of hours on a weekly rhythm (long_builds), written under --workdir, then parsed
            and replayed as `farm simulate --policy predictive` -> predictive_long_wall_s,
            and as `farm simulate --policy all --tune past` -> all_long_wall_s (each parse +
            replays)

Usage: python bench/scale.py [--json] [--parts decide,claim,sim,all,long] [--pools 100] [--executors 10000]
           [--claimers 2000] [--jobs-per-day 1000000] [--days 7] [--all-years 3] [--all-jobs 15000]
           [--long-years 3] [--long-per-week 90] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import cProfile
import csv
import io
import json
import math
import multiprocessing as mp
import os
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SHARED_TRACE, progress, report  # noqa: E402

from farm.autoscale.policy import PredictivePolicy, decide  # noqa: E402
from farm.sim.trace import Trace, parse  # noqa: E402

WEEK = 7 * 86400
INTERVAL_S = 2.0  # the live autoscaler's default turn (settings.autoscaler.interval_s)
BUSY_SHARE = 0.6  # of the decide part's executors busy on average over the turns measured (the buffer is the rest)
TARGETS = {"decide_p99_ms": 100.0, "claim_p99_ms": 20.0, "sim_wall_s": 60.0, "all_wall_s": 300.0, "all_long_wall_s": 300.0,
           "predictive_long_wall_s": 30.0}  # fmt: skip


@contextmanager
def valkey(workdir: Path) -> Iterator[tuple[str, str]]:
    """An embedded Valkey of its own under workdir, stopped on the way out: (its URL, its dir)."""
    from farm.store.server import EmbeddedRedis

    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="redis-", dir=workdir) as tmp:
        server = EmbeddedRedis(Path(tmp))
        url = server.start()
        try:
            yield url, tmp
        finally:
            server.stop()


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1] if s else 0.0


def profiled(enabled: bool, label: str, fn: Any, *args: Any, **kw: Any) -> Any:
    """fn(*args, **kw), under cProfile when enabled (its top 25 by own time go to stderr)."""
    if not enabled:
        return fn(*args, **kw)
    prof = cProfile.Profile()
    try:
        return prof.runcall(fn, *args, **kw)
    finally:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        progress(f"--- profile: {label} ---\n{out.getvalue()}")


# -- the tiled trace ---------------------------------------------------------------------------


def read_source(path: Path) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    t, d, pool, tenant = [], [], [], []
    with path.open() as f:
        for row in csv.DictReader(f):
            t.append(int(float(row["submitted_ts"])))
            d.append(row["duration_s"])
            pool.append(row["pool"])
            tenant.append(row["tenant"])
    return np.array(t, dtype=np.int64), d, pool, tenant


def copies_for(source: np.ndarray, per_day: float) -> int:
    """How many copies of the source, folded onto one week, make ~per_day jobs a day."""
    return max(1, round(per_day * 7 / len(source)))


def tile(source: np.ndarray, copies: int, days: float, *, jitter_s: int = 1800, seed: int = 15) -> tuple[np.ndarray, ...]:
    """The source's jobs folded onto one week (keeping each one's hour of the week), `copies`
    times, each copy of each source week shifted by its own offset in +-jitter_s (so bursts
    keep their shape but copies do not coincide), over `days` days from the source's start.
    Returns (times, source row, copy), sorted by time."""
    t0 = int(source.min())
    src_week = (source - t0) // WEEK
    folded = (source - t0) % WEEK
    weeks = max(1, math.ceil(days / 7))
    span = int(days * 86400)
    rng = np.random.default_rng(seed)
    times, rows, which = [], [], []
    for c in range(copies):
        for w in range(weeks):
            shift = rng.integers(-jitter_s, jitter_s + 1, size=int(src_week.max()) + 1)
            at = (w * WEEK + folded + shift[src_week]) % (weeks * WEEK)
            keep = np.flatnonzero(at < span)
            times.append(at[keep])
            rows.append(keep)
            which.append(np.full(len(keep), c))
    at, row, cp = np.concatenate(times), np.concatenate(rows), np.concatenate(which)
    order = np.argsort(at, kind="stable")
    return at[order] + t0, row[order], cp[order]


def tiled_trace(src: np.ndarray, durations: np.ndarray, copies: int, days: float, seed: int) -> Trace:
    """A tiled trace in memory (one pool), for the decide part."""
    at, row, _ = tile(src, copies, days, seed=seed)
    return Trace("all", at.astype(float).tolist(), durations[row].tolist())


def busy_during(trace: Trace, lo: float, hi: float) -> float:
    """Mean jobs running over [lo, hi) if each started on arrival."""
    t, d = np.array(trace.submitted), np.array(trace.durations)
    return float(np.clip(np.minimum(t + d, hi) - np.maximum(t, lo), 0, None).sum() / (hi - lo))


def write_tiled(source_path: Path, dest: Path, per_day: float, days: float, seed: int = 15) -> int:
    src, durations, pools, tenants = read_source(source_path)
    at, row, cp = tile(src, copies_for(src, per_day), days, seed=seed)
    tmp = dest.with_suffix(".part")
    with tmp.open("w") as f:
        f.write("submitted_ts,duration_s,pool,tenant\n")
        for lo in range(0, len(at), 200_000):
            chunk = zip(at[lo : lo + 200_000].tolist(), row[lo : lo + 200_000].tolist(), cp[lo : lo + 200_000].tolist(), strict=True)
            f.write("".join(f"{a},{durations[i]},{pools[i]},{tenants[i]}.{c}\n" for a, i, c in chunk))
    tmp.rename(dest)
    return len(at)


def write_thinned(source_path: Path, dest: Path, years: float, jobs: int, seed: int = 16) -> int:
    """A long, sparse trace: week w is the source's week w mod (its weeks), each push (the
    jobs of one submit second) kept whole with one probability, chosen for ~`jobs` in all."""
    src, durations, pools, tenants = read_source(source_path)
    t0 = int(src.min())
    src_weeks = int((src - t0).max() // WEEK) + 1
    weeks = math.ceil(years * 52.18)
    keep_p = min(1.0, jobs / (len(src) * weeks / src_weeks))
    rng = np.random.default_rng(seed)
    rows_out: list[tuple[int, int]] = []
    by_week = [np.flatnonzero((src - t0) // WEEK == w) for w in range(src_weeks)]
    for w in range(weeks):
        rows = by_week[w % src_weeks]
        pushes = np.unique(src[rows])
        kept = set(pushes[rng.random(len(pushes)) < keep_p].tolist())
        shift = (w - w % src_weeks) * WEEK
        rows_out += [(int(src[i]) + shift, int(i)) for i in rows if int(src[i]) in kept]
    rows_out.sort()
    with dest.with_suffix(".part").open("w") as f:
        f.write("submitted_ts,duration_s,pool,tenant\n")
        f.write("".join(f"{a},{durations[i]},{pools[i]},{tenants[i]}\n" for a, i in rows_out))
    dest.with_suffix(".part").rename(dest)
    return len(rows_out)


def long_builds(years: float, per_week: float, seed: int = 28, start: int = 1_699_833_600) -> Trace:
    """A sparse pool of long builds, like a Jenkins controller's history: ~per_week builds a
    week, one at a time, on a weekly rhythm (weekdays' working hours carry most, nights some,
    weekends little; UTC), each lasting hours (log-normal, median 2.5 h, mean ~3.4 h, at most
    a day). Whole seconds, in time order; `start` is a Monday 00:00 UTC."""
    rng = np.random.default_rng(seed)
    hours = np.arange(168)
    weekday, hour = hours // 24, hours % 24
    weight = np.where(weekday >= 5, 0.15, np.where((hour >= 8) & (hour < 19), 1.0, 0.25))
    rate = per_week * weight / weight.sum()  # builds in each hour of the week
    weeks = math.ceil(years * 52.18)
    counts = rng.poisson(np.tile(rate, weeks))
    hour_at = np.repeat(np.arange(weeks * 168), counts)
    at = np.sort(start + hour_at * 3600 + rng.integers(0, 3600, size=len(hour_at)))
    durations = np.minimum(np.round(rng.lognormal(math.log(2.5 * 3600), 0.8, size=len(at))), 86400.0)
    return Trace("all", at.astype(float).tolist(), durations.tolist())


def write_long(dest: Path, years: float, per_week: float) -> int:
    trace = long_builds(years, per_week)
    with dest.with_suffix(".part").open("w") as f:
        f.write("submitted_ts,duration_s,pool,tenant\n")
        f.write("".join(f"{int(a)},{int(d)},all,ci\n" for a, d in zip(trace.submitted, trace.durations, strict=True)))
    dest.with_suffix(".part").rename(dest)
    return len(trace)


# -- (a) decide() for every pool, per autoscaler turn --------------------------------------------


class _Enough(Exception):
    pass


def record_pool(trace: Trace, policy: PredictivePolicy, lead_s: float, start: float, turns: int) -> tuple[Any, list]:
    """Replay a pool's trace through the policy at the live cadence; return its memory as the
    recording starts and the (now, snapshot) of each of the `turns` decisions from `start`."""
    import farm.sim.simulator as simulator

    real = simulator.decide
    out: list = []
    memory: list = []

    def spy(snap: Any, pol: Any, *, now: float) -> Any:
        if now >= start:
            if not out:
                memory.append(copy.deepcopy(snap.memory))
            if len(out) == turns:
                raise _Enough
            out.append((now, replace(snap, memory=None)))
        return real(snap, pol, now=now)

    simulator.decide = spy  # type: ignore[assignment]
    try:
        simulator.simulate(trace, policy, lead_s=lead_s)
    except _Enough:
        pass
    finally:
        simulator.decide = real  # type: ignore[assignment]
    if len(out) < turns:
        raise SystemExit(f"the trace ended after {len(out)} of {turns} turns")
    return memory[0], out


def decide_part(args: argparse.Namespace) -> dict[str, Any]:
    src, raw_durations, _, _ = read_source(args.trace)
    durations = np.array([float(x) for x in raw_durations])
    per_pool = args.executors / args.pools
    # The turns measured start after the history, at the hour of the week whose four hours
    # are the trace's busiest, and each pool gets as many copies of the trace as keep BUSY_SHARE
    # of its executors busy then (the policy's buffer and the boots make up the rest; what
    # the snapshots describe is what is reported).
    by_hour = np.bincount((src // 3600 + 72) % 168, minlength=168)
    busiest = int(np.argmax(sum(np.roll(by_hour, -i) for i in range(4))))
    t_first = int(src.min())
    start = (t_first + int(args.history_days * 86400)) // 3600 * 3600
    while (start // 3600 + 72) % 168 != busiest:
        start += 3600
    window = (start, start + args.turns * INTERVAL_S)
    days = (window[1] - t_first + 3600) / 86400
    trial = tiled_trace(src, durations, 10, days, seed=99)
    copies = max(1, round(10 * BUSY_SHARE * per_pool / max(busy_during(trial, *window), 1e-9)))
    policy = PredictivePolicy(target_p95_s=args.target_p95, tick_s=INTERVAL_S, on_arrival=False, max=100_000)
    sources = min(args.sources, args.pools)
    learned = []
    for s in range(sources):
        t0 = time.perf_counter()
        trace = tiled_trace(src, durations, copies, days, seed=100 + s)
        learned.append(record_pool(trace, policy, args.lead, float(start), args.turns))
        progress(f"decide: pool history {s + 1}/{sources}: {len(trace):,} jobs over {(start - t_first) / 86400:.1f} days "
                 f"learned at one decision per {INTERVAL_S:g} s ({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    memories = [copy.deepcopy(learned[p % sources][0]) for p in range(args.pools)]
    executors = [sum(learned[p % sources][1][k][1].current for p in range(args.pools)) for k in range(args.turns)]
    arrivals = [sum(len(learned[p % sources][1][k][1].arrivals) for p in range(args.pools)) for k in range(args.turns)]
    progress(f"decide: {args.turns} turns of {args.pools} pools, {np.mean(executors):,.0f} executors on average")

    def turns() -> list[float]:
        times = []
        for k in range(args.turns):
            t0 = time.perf_counter()
            for p in range(args.pools):
                now, snap = learned[p % sources][1][k]
                d = decide(replace(snap, memory=memories[p]), policy, now=now)
                memories[p] = d.memory
            times.append((time.perf_counter() - t0) * 1000)
        return times

    ms = profiled(args.profile, "decide", turns)
    live = live_turns(args, policy, learned, per_pool) if args.live_turns else {}
    return {
        "decide_p99_ms": round(pct(ms, 99), 2),
        "decide_p50_ms": round(pct(ms, 50), 2),
        "decide_max_ms": round(max(ms), 2),
        "decide_pools": args.pools,
        "decide_executors_mean": round(float(np.mean(executors))),
        "decide_executors_min": int(min(executors)),
        "decide_executors_max": int(max(executors)),
        "decide_arrivals_per_turn": round(float(np.mean(arrivals)), 1),
        "decide_turns": args.turns,
        "decide_history_days": args.history_days,
        **live,
    }


class _Fleet:
    """RayFleet's surface, starting and draining nothing (the turn's I/O to Ray is left out)."""

    def reap(self) -> None: ...
    def request(self, *a: Any) -> None: ...
    def start(self, pool: str, n: int) -> list[str]:
        return []
    def drain(self, ids: list[str]) -> None: ...
    def kill(self, ids: list[str]) -> None: ...


def live_turns(args: argparse.Namespace, policy: PredictivePolicy, learned: list, per_pool: float) -> dict[str, Any]:
    """Whole `Autoscaler.run_once()` turns on a real Valkey: every pool's policy stored, its
    executors in the registry (busy and idle as its snapshots say), the turn's arrivals on its
    demand stream, its memory the learned one; Ray left out (a fleet that starts nothing)."""
    import farm.autoscale.live as live
    from farm.settings import Settings
    from farm.store.client import connect
    from farm.store.executors import ExecutorRegistry
    from farm.store.jobs import JobStore
    from farm.store.policies import PolicyStore

    sources = len(learned)
    names = [f"pool-{i}" for i in range(args.pools)]
    with valkey(args.workdir) as (url, tmp):
        client = connect(url)
        store, registry = JobStore(client), ExecutorRegistry(client)
        keys = store.keys
        for name in names:
            PolicyStore(client).put(name, policy.model_dump(mode="json"), by="bench")
        s_, us = client.time()
        seen = s_ * 1000 + us // 1000 + 3_600_000  # listed (not stale) for the next hour
        pipe = client.pipeline(transaction=False)
        for i, name in enumerate(names):
            snap = learned[i % sources][1][0][1]
            for e in range(int(per_pool)):
                ex = f"{name}-{e:04d}"
                pipe.hset(keys.executor(ex), mapping={"pool": name, "state": "busy" if e < snap.running else "idle",
                                                      "job": "", "seen": seen})  # fmt: skip
                pipe.zadd(keys.executors(name), {ex: seen})
        pipe.execute()
        clock = {"now": learned[0][1][0][0] - INTERVAL_S}
        settings = Settings.load(data_dir=Path(tmp), pools=names, executors={"count": 0, "pool": names[0]})
        a = live.Autoscaler(settings, store=store, registry=registry, policies=PolicyStore(client), fleet=_Fleet(),  # type: ignore[arg-type]
                            clock=lambda: clock["now"])  # fmt: skip
        a.run_once()  # loads the policies, starts reading the demand streams
        for i, name in enumerate(names):
            a.pools[name].memory = copy.deepcopy(learned[i % sources][0])
        spent = [0.0]
        real = live.decide

        def timed(*x: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return real(*x, **kw)
            finally:
                spent[0] += time.perf_counter() - t0

        live.decide = timed  # type: ignore[assignment]
        turns, decided = [], []
        try:
            for k in range(min(args.live_turns, args.turns)):
                pipe = client.pipeline(transaction=False)
                for i, name in enumerate(names):
                    for t in learned[i % sources][1][k][1].arrivals:
                        pipe.xadd(keys.demand(name), {"a": int(t * 1000)})
                pipe.execute()
                clock["now"] = learned[0][1][k][0]
                spent[0] = 0.0
                t0 = time.perf_counter()
                a.run_once()
                turns.append((time.perf_counter() - t0) * 1000)
                decided.append(spent[0] * 1000)
        finally:
            live.decide = real  # type: ignore[assignment]
    progress(f"decide: {len(turns)} whole autoscaler turns on Valkey: p50 {pct(turns, 50):.0f} ms, of which decide "
             f"{pct(decided, 50):.1f} ms")  # fmt: skip
    return {
        "live_turn_p50_ms": round(pct(turns, 50), 1),
        "live_turn_p99_ms": round(pct(turns, 99), 1),
        "live_turn_decide_p50_ms": round(pct(decided, 50), 2),
        "live_turns": len(turns),
    }


# -- (b) claim latency with many concurrent claimers ---------------------------------------------


def _claimer_proc(url: str, pools: list[str], first: int, count: int, start_at: float, measure_at: float, stop_at: float,
                  job_s: float, q: Any) -> None:  # fmt: skip
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from farm.store.client import connect, connect_async
    from farm.store.keys import Keys
    from farm.store.lua import Scripts

    async def main() -> dict[str, Any]:
        aclient = connect_async(url, socket_timeout=60)
        aclient.connection_pool.max_connections = count + 8
        scripts = Scripts(connect(url), Keys(), aclient)
        lat: list[float] = []
        counts = {"claims": 0, "empty": 0, "more": 0}

        async def executor(i: int) -> None:
            pool, me = pools[i % len(pools)], f"bench-{i}"
            rng = random.Random(i)
            await aclient.ping()  # its connection, made before the start
            await asyncio.sleep(max(0.0, start_at - time.time()))
            while (now := time.time()) < stop_at:
                t0 = time.perf_counter()
                got = await scripts.acall("claim", pool, me, 600_000, 5_000, "bench")
                took = time.perf_counter() - t0
                if got == "more":
                    counts["more"] += 1
                    continue
                if not got:
                    counts["empty"] += 1
                    await asyncio.sleep(0.01)
                    continue
                if now >= measure_at:
                    lat.append(took)
                    counts["claims"] += 1
                if job_s:  # the job runs (exponential, mean job_s)
                    await asyncio.sleep(rng.expovariate(1 / job_s))
                await scripts.acall("finish", json.dumps({"id": got[0], "attempt": str(got[1]), "state": "succeeded", "exit_code": "0",
                                                          "error": "", "steps": "[]", "artifacts": "[]", "caches": "[]", "image": "",
                                                          "warnings": "", "log": "", "log_cap": 0, "log_head": 0}))  # fmt: skip

        cpu0 = time.process_time()
        await asyncio.gather(*(executor(i) for i in range(first, first + count)))
        await aclient.aclose()
        return {"lat": lat, **counts, "cpu_s": time.process_time() - cpu0}

    q.put(asyncio.run(main()))


def _server_stats(client: Any) -> dict[str, float]:
    cmd = client.info("commandstats")
    cpu = client.info("cpu")
    ev = cmd.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return {"calls": ev["calls"], "usec": ev["usec"], "cpu": cpu["used_cpu_user"] + cpu["used_cpu_sys"]}


def claim_part(args: argparse.Namespace) -> dict[str, Any]:
    from farm.models import JobSpec, JobState
    from farm.store.client import connect
    from farm.store.jobs import JobStore

    with valkey(args.workdir) as (url, tmp):
        client = connect(url)
        store = JobStore(client)
        pools = [f"pool-{i}" for i in range(args.claim_pools)]
        specs = {p: JobSpec.model_validate({"pool": p, "steps": [{"name": "noop", "run": "true"}]}) for p in pools}
        # Each script's server time alone (one client, one call at a time, scripts loaded).
        probes = 200
        for _ in range(probes + 1):
            store.enqueue(specs[pools[0]], "probe")
        first = store.claim(pools[0], "probe", lease_s=600, grace_s=5)
        assert first is not None
        store.finish(first.job_id, first.attempt, JobState.SUCCEEDED, exit_code=0, error=None, steps=[])
        s0 = _server_stats(client)
        held = [store.claim(pools[0], "probe", lease_s=600, grace_s=5) for _ in range(probes)]
        s1 = _server_stats(client)
        for c in held:
            assert c is not None
            store.finish(c.job_id, c.attempt, JobState.SUCCEEDED, exit_code=0, error=None, steps=[])
        s2 = _server_stats(client)
        probe_claim_us, probe_finish_us = (s1["usec"] - s0["usec"]) / probes, (s2["usec"] - s1["usec"]) / probes

        jobs = args.claim_jobs
        progress(f"claim: enqueueing {jobs:,} jobs over {len(pools)} pools x {args.claim_tenants} tenants")
        pipe = client.pipeline(transaction=False)
        for i in range(jobs):
            pool = pools[i % len(pools)]
            store._scripts.call("enqueue", *store._enqueue_args(specs[pool], f"tenant-{(i // len(pools)) % args.claim_tenants}"),
                                client=pipe)  # fmt: skip
            if (i + 1) % 5000 == 0:
                pipe.execute()
        pipe.execute()

        procs = max(1, min(args.claim_procs, args.claimers))
        per = [args.claimers // procs + (1 if i < args.claimers % procs else 0) for i in range(procs)]
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        start_at = time.time() + 3.0 + 0.002 * args.claimers  # every connection made by then
        measure_at, stop_at = start_at + args.claim_warmup_s, start_at + args.claim_warmup_s + args.claim_seconds
        workers = [ctx.Process(target=_claimer_proc, args=(url, pools, sum(per[:i]), n, start_at, measure_at, stop_at,
                                                              args.claim_job_ms / 1000, q))
                   for i, n in enumerate(per)]  # fmt: skip
        for w in workers:
            w.start()
        progress(f"claim: {args.claimers} claimers in {procs} processes, jobs of {args.claim_job_ms:g} ms, "
                 f"{args.claim_warmup_s:g} s warm-up, {args.claim_seconds:g} s measured")  # fmt: skip
        time.sleep(max(0.0, measure_at - time.time()))
        a = _server_stats(client)
        time.sleep(max(0.0, stop_at - time.time()))
        b = _server_stats(client)
        results = [q.get(timeout=120) for _ in workers]
        for w in workers:
            w.join(30)
        left = client.zcard(store.keys.waiting(pools[0])) * len(pools)
    lat = [x * 1000 for r in results for x in r["lat"]]
    claims = sum(r["claims"] for r in results)
    empty = sum(r["empty"] for r in results)
    if empty:
        progress(f"claim: WARNING {empty} claims found the queue empty (raise --claim-jobs)")
    calls = b["calls"] - a["calls"]
    return {
        "claim_p99_ms": round(pct(lat, 99), 2),
        "claim_p50_ms": round(pct(lat, 50), 2),
        "claimers": args.claimers,
        "claims_per_s": round(claims / args.claim_seconds, 1),
        "claim_empty": empty,
        "claim_queued_left_approx": int(left),
        "redis_cpu_share": round((b["cpu"] - a["cpu"]) / args.claim_seconds, 3),
        "redis_script_us_per_call": round((b["usec"] - a["usec"]) / max(1, calls), 1),
        "redis_claim_us_alone": round(probe_claim_us, 1),
        "redis_finish_us_alone": round(probe_finish_us, 1),
        "client_cpu_share": round(sum(r["cpu_s"] for r in results) / (args.claim_seconds + args.claim_warmup_s), 3),
        "claim_procs": procs,
        "claim_job_ms": args.claim_job_ms,
    }


# -- (c) the simulator at a million jobs a day --------------------------------------------------


def sim_part(args: argparse.Namespace) -> dict[str, Any]:
    from farm.sim import tune

    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / f"tiled-{int(args.jobs_per_day)}-per-day-{args.days:g}d.csv"
    if not path.exists():
        t0 = time.perf_counter()
        n = write_tiled(args.trace, path, args.jobs_per_day, args.days)
        progress(f"sim: wrote {n:,} jobs to {path} ({time.perf_counter() - t0:.1f} s, not timed)")
    params = {"target_p95_s": args.target_p95, "max": args.sim_max}

    def replay() -> tuple[float, float, Any]:
        t0 = time.perf_counter()
        with path.open() as f:
            (trace,) = parse(f)
        t1 = time.perf_counter()
        progress(f"sim: parsed {len(trace):,} jobs in {t1 - t0:.1f} s; replaying through predictive {params}")
        r = tune.run(trace, "predictive", params, args.lead)
        return t1 - t0, time.perf_counter() - t1, r

    parse_s, replay_s, r = profiled(args.profile, "sim", replay)
    return {
        "sim_wall_s": round(parse_s + replay_s, 1),
        "sim_parse_s": round(parse_s, 1),
        "sim_replay_s": round(replay_s, 1),
        "sim_jobs": r.jobs,
        "sim_days": args.days,
        "sim_jobs_per_day": round(r.jobs / args.days),
        "sim_wait_p95_s": r.wait_p95_s,
        "sim_executor_hours": round(r.executor_hours),
        "sim_efficiency": round(r.efficiency, 3),
    }


def all_part(args: argparse.Namespace) -> dict[str, Any]:
    from farm.sim import tune

    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / f"thinned-{args.all_jobs}-jobs-{args.all_years:g}y.csv"
    if not path.exists():
        n = write_thinned(args.trace, path, args.all_years, args.all_jobs)
        progress(f"all: wrote {n:,} jobs over {args.all_years:g} years to {path} (not timed)")

    def replay() -> tuple[float, list[Any]]:
        t0 = time.perf_counter()
        with path.open() as f:
            (trace,) = parse(f)
        results = tune.everything(trace, args.target_p95, args.lead, progress=lambda m: progress(f"all: {m}"))
        return time.perf_counter() - t0, results

    wall, results = profiled(args.profile, "all", replay)
    return {
        "all_wall_s": round(wall, 1), "all_jobs": results[0].jobs, "all_years": args.all_years,
        "all_rows": {r.policy: {"executor_hours": round(r.executor_hours), "wait_p95_s": r.wait_p95_s} for r in results},
    }  # fmt: skip


def long_part(args: argparse.Namespace) -> dict[str, Any]:
    from farm.sim import tune

    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / f"long-builds-{args.long_per_week:g}-a-week-{args.long_years:g}y.csv"
    if not path.exists():
        n = write_long(path, args.long_years, args.long_per_week)
        progress(f"long: wrote {n:,} builds over {args.long_years:g} years to {path} (not timed)")

    def parsed() -> Trace:
        with path.open() as f:
            (trace,) = parse(f)
        return trace

    def one() -> tuple[float, Any]:
        t0 = time.perf_counter()
        r = tune.run(parsed(), "predictive", {"target_p95_s": args.target_p95}, args.lead)
        return time.perf_counter() - t0, r

    def every() -> tuple[float, list[Any]]:
        t0 = time.perf_counter()
        results = tune.everything(parsed(), args.target_p95, args.lead, progress=lambda m: progress(f"long: {m}"), tuning="past")
        return time.perf_counter() - t0, results

    one_s, r = profiled(args.profile, "long predictive", one)
    progress(f"long: predictive in {one_s:.1f} s: p95 {r.wait_p95_s:.0f}s, {r.executor_hours:,.0f} h")
    all_s, results = profiled(args.profile, "long all", every)
    return {
        "predictive_long_wall_s": round(one_s, 1), "all_long_wall_s": round(all_s, 1), "long_jobs": r.jobs,
        "long_years": args.long_years, "long_mean_duration_h": round(r.busy_hours / r.jobs, 2),
        "long_rows": {x.policy: {"executor_hours": round(x.executor_hours), "wait_p95_s": x.wait_p95_s} for x in results},
    }  # fmt: skip


PARTS = {"decide": decide_part, "claim": claim_part, "sim": sim_part, "all": all_part, "long": long_part}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--parts", default="decide,claim,sim", help="which parts to run, comma-separated: decide, claim, sim, all, long")
    ap.add_argument("--trace", type=Path, default=SHARED_TRACE, help="the trace to tile (read only)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "farm-scale", help="where the tiled trace and Valkey's files go")
    ap.add_argument("--lead", type=float, default=60.0)
    ap.add_argument("--target-p95", type=float, default=15.0)
    ap.add_argument("--profile", action="store_true", help="run each part under cProfile; its top goes to stderr")
    g = ap.add_argument_group("decide")
    g.add_argument("--pools", type=int, default=100)
    g.add_argument("--executors", type=int, default=10_000, help="in all pools together")
    g.add_argument("--turns", type=int, default=1800, help="autoscaler turns measured (1800 = an hour at 2 s)")
    g.add_argument("--history-days", type=float, default=14.0, help="what each pool's memory learned before")
    g.add_argument("--sources", type=int, default=4, help="distinct pool histories (pool i replays history i %% sources)")
    g.add_argument("--live-turns", type=int, default=30, help="whole Autoscaler.run_once() turns on Valkey, Ray left "
                   "out (0: none)")  # fmt: skip
    g = ap.add_argument_group("claim")
    g.add_argument("--claimers", type=int, default=2000)
    g.add_argument("--claim-procs", type=int, default=os.cpu_count() or 1, help="client processes the claimers run in")
    g.add_argument("--claim-pools", type=int, default=4)
    g.add_argument("--claim-tenants", type=int, default=50, help="per pool")
    g.add_argument("--claim-jobs", type=int, default=150_000, help="queued before the claimers start")
    g.add_argument("--claim-warmup-s", type=float, default=2.0)
    g.add_argument("--claim-seconds", type=float, default=10.0, help="measured")
    g.add_argument("--claim-job-ms", type=float, default=1000.0, help="mean time a claimed job runs before its finish "
                   "(exponential; 0: finished at once, which measures a saturated server: see docs/BENCHMARKS.md)")  # fmt: skip
    g = ap.add_argument_group("sim")
    g.add_argument("--jobs-per-day", type=float, default=1_000_000)
    g.add_argument("--days", type=float, default=7.0)
    g.add_argument("--sim-max", type=int, default=100_000, help="the policy's max executors (its default, 10,000, "
                   "cannot hold a million of this trace's jobs a day)")  # fmt: skip
    g = ap.add_argument_group("all")
    g.add_argument("--all-years", type=float, default=3.0)
    g.add_argument("--all-jobs", type=int, default=15_000)
    g = ap.add_argument_group("long")
    g.add_argument("--long-years", type=float, default=3.0)
    g.add_argument("--long-per-week", type=float, default=90.0, help="builds a week (each of hours: see long_builds)")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        ap.error(f"unknown parts: {', '.join(unknown)} (choose from {', '.join(PARTS)})")
    figures: dict[str, Any] = {}
    for part in parts:
        t0 = time.perf_counter()
        figures.update(PARTS[part](args))
        progress(f"{part}: done in {time.perf_counter() - t0:.1f} s")
    for key, target in TARGETS.items():
        if key in figures:
            figures[f"{key.rsplit('_', 1)[0]}_target_met"] = figures[key] <= target
    report(figures, args.json)


if __name__ == "__main__":
    main()
