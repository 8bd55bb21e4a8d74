"""A frozen store (Valkey SIGSTOPped, as a stalled disk or a paused VM freezes it) past the
lease: the executor cannot prove its lease, so its step must be stopped before that lease
can expire. The reaper's requeue then never meets a live attempt, and the job finishes on a
later one once the store thaws."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest

from agents.containment import Containment
from agents.warden import Warden
from farm import loops
from farm.models import JobSpec, JobState
from farm.reaper import Reaper
from farm.settings import Settings
from farm.store.client import connect
from farm.store.executors import ExecutorRegistry
from farm.store.jobs import JobStore
from farm.store.server import EmbeddedRedis
from tests.conftest import wait_for

LEASE_S = 4.0
log = logging.getLogger("test_frozen_store")

# Attempt 1 stamps a line every 0.1 s until it is killed; a later attempt stamps one and ends.
STAMPS = r"""
out={dir}/$FARM_JOB_ID.$FARM_ATTEMPT
while :; do date +%s.%N >> $out; [ "$FARM_ATTEMPT" = 1 ] || exit 0; sleep 0.1; done
"""


@pytest.fixture
def own_store(tmp_path: Path):
    """A store of the test's own: freezing the session's would freeze every other fixture."""
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    try:
        yield server, url
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


def stamps(path: Path) -> list[float]:
    return [float(x) for x in path.read_text().split()] if path.exists() else []


def test_a_frozen_store_stops_the_step_before_its_lease_expires(own_store, tmp_path: Path, run_executor):
    server, url = own_store
    settings = Settings.load(redis_url=url, data_dir=tmp_path / "data", executors={"runtime": "local", "node": "node-f"},
                             lease={"lease_s": LEASE_S, "heartbeat_s": 0.5, "reaper_interval_s": 0.2, "node_timeout_s": 30})  # fmt: skip
    store = JobStore(connect(url, socket_timeout=2))
    warden = Warden("node-f", settings, jobs=store, containment=Containment.for_node(store.instance(), settings.data_dir))
    reaper = Reaper(store, ExecutorRegistry(store.client, store.keys), settings)
    farm_side = [loops.start("warden", warden.run_once, 0.2, log), loops.start("reaper", reaper.run_once, 0.2, log)]
    try:
        records = tmp_path / "records"
        records.mkdir()
        job = store.enqueue(JobSpec(steps=[{"name": "s", "run": STAMPS.format(dir=records)}], retries=2), "t")
        run_executor(settings, "ex-frozen")
        first = records / f"{job.id}.1"
        wait_for(lambda: len(stamps(first)) >= 5, 60, what="attempt 1 to stamp")

        frozen_at = time.time()
        os.kill(server.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
        time.sleep(LEASE_S + 3)  # past the lease the last heartbeat renewed
        stopped = stamps(first)[-1]
        time.sleep(1.0)
        assert stamps(first)[-1] == stopped, "attempt 1's step still ran after its lease had expired"
        os.kill(server.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]

        # The last heartbeat that got through went out before the freeze: its lease ended by
        # frozen_at + LEASE_S at the latest, and the step had stopped before then.
        assert stopped < frozen_at + LEASE_S, (stopped - frozen_at, LEASE_S)
        wait_for(lambda: store.get(job.id).state.terminal, 60, what="the job to end")
        done = store.get(job.id)
        assert done.state is JobState.SUCCEEDED and done.attempt >= 2, done
        later = stamps(records / f"{job.id}.{done.attempt}")
        assert later and later[0] > stopped  # no overlap: the later attempt began after attempt 1 ended
        text = "".join(c.data or "" for c in store.read_log(job.id, count=10_000))
        assert "lease of attempt 1 on ex-frozen expired" in text, text
    finally:
        for thread, stop in farm_side:
            stop.set()
            thread.join(5)
