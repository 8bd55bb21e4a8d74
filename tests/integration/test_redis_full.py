"""A Redis at maxmemory (a tenant filled it, or it is undersized) refuses new work but never
strands the work already taken: claims, heartbeats, finishes, cancels, the reaper and
retention still run (their scripts are flagged allow-oom), so the farm drains and an
operator can cancel its way out."""

from __future__ import annotations

import pytest

from farm.errors import StoreUnavailable
from farm.models import JobSpec, JobState, RunSpec
from farm.store.client import connect
from farm.store.jobs import JobStore
from farm.store.runs import RunStore
from farm.store.server import EmbeddedRedis

SPEC = JobSpec.model_validate({"steps": [{"name": "s", "run": "true"}]})


@pytest.fixture
def full(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    try:
        store = JobStore(connect(url))
        yield store
    finally:
        server.stop()


def fill(store: JobStore) -> None:
    """Redis over its maxmemory (as if a tenant had filled it): the limit set under what it holds."""
    used = int(store.client.info("memory")["used_memory"])
    store.client.config_set("maxmemory", str(used // 2))
    with pytest.raises(Exception, match="maxmemory"):
        store.client.set("junk", "x")


def test_a_full_redis_refuses_submits_and_keeps_running_work_going(full):
    store = full
    held = [store.submit(SPEC, "t").job.id for _ in range(3)]
    claim = store.claim("default", "ex", lease_s=60, grace_s=5)
    fill(store)
    with pytest.raises(StoreUnavailable, match="full"):
        store.submit(SPEC, "t")
    with pytest.raises(StoreUnavailable, match="full"):
        RunStore(store).submit(RunSpec.model_validate({"name": "r", "jobs": [SPEC.model_dump()]}), "t", [JobStore._enqueue_fields(SPEC, "t")])
    assert store.heartbeat(claim.job_id, claim.attempt, lease_s=60) == "ok"
    assert store.finish(claim.job_id, claim.attempt, JobState.SUCCEEDED, exit_code=0, error=None, steps=[], log_tail="done\n",
                        log_cap=1_000_000) == "ok"  # fmt: skip
    second = store.claim("default", "ex", lease_s=60, grace_s=5)
    assert second is not None and second.job_id == held[1]
    assert store.cancel(held[2]).state is JobState.CANCELLED
    store.reap()
    assert store.get(claim.job_id).state is JobState.SUCCEEDED
    assert sorted(store.purge(0)) == sorted([claim.job_id, held[2]])  # retention frees what ended
