"""The executor registry against a real server: an executor that works is seen for as long as
it holds its job, however long the job runs, on every surface that counts executors
(the registry, GET /v1/queue, the farm_executors metric). The registries here forget an
executor after WINDOW_S (15 s in a farm) so that a job a few windows long stays short."""

import time

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from farm.api import create_app
from farm.metrics import make_registry
from farm.models import JobSpec, JobState
from farm.store.executors import ExecutorRegistry, ExecutorState
from farm.store.jobs import JobStore
from tests.conftest import wait_for
from tests.integration.test_executor_local import wait_done

WINDOW_S = 2.0
ADMIN = "registry-admin"


def _seen(registry: ExecutorRegistry) -> list[tuple[str, ExecutorState, str | None, dict[str, str]]]:
    return [(e.id, e.state, e.job, e.where) for e in registry.list("default")]


def test_the_heartbeat_renews_its_executors_entry_and_keeps_a_drain(store: JobStore):
    registry = ExecutorRegistry(store.client, store.keys, stale_s=0.3)
    registry.report("ex1", "default", ExecutorState.IDLE, where={"pid": 42})
    job = store.enqueue(JobSpec(steps=[{"name": "s", "run": "true"}]), "t")
    store.claim("default", "ex1", lease_s=10, grace_s=1)
    for _ in range(4):  # twice the window, in beats shorter than it
        time.sleep(0.15)
        assert store.heartbeat(job.id, 1, lease_s=10) == "ok"
    # On today's code the claim was the entry's last write: gone from the registry by now.
    assert _seen(registry) == [("ex1", ExecutorState.BUSY, job.id, {"pid": "42"})]
    registry.report("ex1", "default", ExecutorState.DRAINING, job.id)  # a drain asked while it works
    for _ in range(3):
        time.sleep(0.15)
        assert store.heartbeat(job.id, 1, lease_s=10) == "ok"
    assert _seen(registry) == [("ex1", ExecutorState.DRAINING, job.id, {"pid": "42"})]
    # A beat the job refuses (cancelled) renews nothing: the executor is forgotten as before.
    store.cancel(job.id)
    assert store.heartbeat(job.id, 1, lease_s=10) == "cancelled"
    time.sleep(0.4)
    assert _seen(registry) == []


def _metric_busy(text: str) -> float | None:
    for family in text_string_to_metric_families(text):
        if family.name == "farm_executors":
            for s in family.samples:
                if s.labels == {"pool": "default", "state": "busy"}:
                    return s.value
    return None


def test_a_job_longer_than_the_window_keeps_its_executor_busy_everywhere(make_settings, run_executor, tmp_path):
    settings = make_settings(admin_token=ADMIN)
    app = create_app(settings)
    # The app's own registry and metrics, with a window of WINDOW_S.
    store = app.state.store
    registry = app.state.registry = ExecutorRegistry(store.client, store.keys, stale_s=WINDOW_S)
    app.state.metrics = make_registry(store, registry, settings.pools, {settings.executors.pool: settings.executors.count})
    flag = tmp_path / "go"
    with TestClient(app) as api:
        run_executor(settings, "ex-long")
        job = store.enqueue(JobSpec(steps=[{"name": "w", "run": f"while [ ! -e {flag} ]; do sleep 0.05; done"}]), "t")
        wait_for(lambda: store.get(job.id).state is JobState.RUNNING, 10, what="the job to start")
        seen = []
        try:
            for _ in range(int(4 * WINDOW_S)):  # every second of a job four windows long
                time.sleep(1.0)
                pool = api.get("/v1/queue", headers={"Authorization": f"Bearer {ADMIN}"}).json()["pools"][0]
                seen.append((registry.counts("default")["busy"], pool["running"], pool["executors"]["busy"],
                             _metric_busy(api.get("/metrics").text)))  # fmt: skip
        finally:
            flag.touch()  # the job ends whatever was seen, so the executor drains
        # On today's code every count fell to 0 a window after the claim, with the job still running.
        assert seen == [(1, 1, 1, 1.0)] * len(seen)
        assert wait_done(store, job.id).state is JobState.SUCCEEDED
        wait_for(lambda: registry.counts("default")["idle"] == 1, 5, what="the executor to be idle")
        assert registry.counts("default")["busy"] == 0 and _metric_busy(api.get("/metrics").text) == 0.0
