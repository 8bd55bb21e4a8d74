"""Chaos: 2,000 jobs on `farm up` with 4 executors while an executor is SIGKILLed every 5 s,
the embedded server is SIGKILLed once and `farm up` itself is restarted once.

Nothing may be lost or stuck, no two attempts of a job may be alive at once, and a job
whose executor was killed must be requeued within the lease + 5 s. Each step checks, as it
starts, that every process an earlier attempt of its job recorded is dead (by pid and start
time, so a reused pid does not count; a zombie is dead), then records its own.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import httpx

from farm.store.client import connect
from farm.store.executors import ExecutorRegistry
from farm.store.jobs import JobStore
from farm.store.server import EmbeddedRedis
from tests.e2e.conftest import cmdline, process_tree

JOBS = 2000
LEASE_S = 3.0
KILL_EVERY_S = 5.0

STEP = r"""
rec={dir}/$FARM_JOB_ID
for f in $rec.*; do
  [ -e "$f" ] || break
  read pid start < "$f"
  s=$(cat /proc/$pid/stat 2>/dev/null) || continue
  set -- $s
  if [ "${{22}}" = "$start" ] && [ "$3" != Z ]; then echo "$FARM_JOB_ID attempt $FARM_ATTEMPT began while $f lived" >> {dir}/overlaps; fi
done
set -- $(cat /proc/$$/stat)
echo "$$ ${{22}}" > $rec.$FARM_ATTEMPT
sleep 0.$(( $$ % 3 + 1 ))
"""


def _url(data_dir: Path) -> str:
    path = data_dir / "redis"
    return EmbeddedRedis(path, port=int((path / "port").read_text())).url


def _get(client: httpx.Client, path: str, **kw: object) -> httpx.Response | None:
    try:
        r = client.get(path, timeout=5, **kw)  # type: ignore[arg-type]
        return r if r.status_code == 200 else None
    except httpx.HTTPError:
        return None  # the server is restarting


def test_chaos(start_farm, farm_env, tmp_path: Path):
    records = tmp_path / "records"
    records.mkdir()
    env = {"FARM_LEASE__LEASE_S": str(LEASE_S), "FARM_LEASE__REAPER_INTERVAL_S": "0.5", "FARM_LEASE__NODE_TIMEOUT_S": "5"}
    farm, client = start_farm("up", "--executors", "4", env=env)
    data_dir = Path(farm_env["FARM_DATA_DIR"])
    step = STEP.format(dir=records)
    ids = []
    for _ in range(JOBS):
        r = client.post("/v1/jobs", json={"steps": [{"name": "s", "run": step}], "retries": 10})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])

    rng = random.Random(13)
    kills: list[tuple[float, str]] = []  # (wall time, the job its executor was running)
    events: list[str] = []
    deadline = time.monotonic() + 900
    round_no = 0
    while True:
        time.sleep(KILL_EVERY_S)
        round_no += 1
        queue = _get(client, "/v1/queue")
        pools = queue.json()["pools"][0] if queue else None
        if pools and pools["queued"] == 0 and pools["running"] == 0:
            break
        assert time.monotonic() < deadline, f"jobs still not done: {pools}"
        if round_no == 4:  # the embedded server, once
            server = next(p for p in process_tree(farm.proc.pid) if "valkey" in cmdline(p))
            subprocess.run(["kill", "-KILL", str(server)], check=True)
            events.append(f"redis killed at {time.time():.1f}")
            continue
        if round_no == 8:  # farm up itself, once
            assert farm.stop(signal.SIGTERM) == 0, "".join(farm.lines)
            farm, client = start_farm("up", "--executors", "4", env=env)
            events.append(f"farm up restarted at {time.time():.1f}")
            continue
        registry = ExecutorRegistry(connect(_url(data_dir)))
        busy = [e for e in registry.list("default") if e.state.value == "busy" and e.job]
        if busy:
            victim = rng.choice(busy)
            pid = int(registry.client.hget(registry.keys.executor(victim.id), "pid") or 0)
            if pid and pid in process_tree(farm.proc.pid):
                subprocess.run(["kill", "-KILL", str(pid)], check=False)
                kills.append((time.time(), victim.job))

    store = JobStore(connect(_url(data_dir)))
    jobs = store.get_many(ids)
    states: dict[str, int] = {}
    for j in jobs:
        states[j.state.value] = states.get(j.state.value, 0) + 1
    assert len(jobs) == JOBS  # none lost
    assert states == {"succeeded": JOBS}, states  # none stuck, none failed
    overlaps = records / "overlaps"
    assert not overlaps.exists(), overlaps.read_text()

    # Requeue delay after each executor kill: from the kill to the note that requeued its job.
    delays = []
    for killed_at, job_id in kills:
        notes = [(int(c.entry_id.split("-")[0]) / 1000, c.data or "") for c in store.read_log(job_id, count=10_000)]
        requeues = [t for t, text in notes if "requeued as attempt" in text and t >= killed_at]
        if requeues:
            delays.append(round(requeues[0] - killed_at, 2))
    assert len(kills) >= 10 and len(delays) >= len(kills) // 2, (kills, delays)
    assert max(delays) <= LEASE_S + 5, (delays, events)
    attempts = sum(j.attempt for j in jobs) - JOBS
    print(f"chaos: {len(kills)} executor kills, requeue delays {sorted(delays)}, {attempts} extra attempts; {events}")
    restarts = client.get("/v1/queue").json()["restarts"]
    assert restarts.get("redis") == 1 and restarts.get("executor", 0) >= 1, restarts
