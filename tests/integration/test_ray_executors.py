"""Executors as Ray actors on a local Ray (loopback only): run, drain, survive a SIGKILL."""

import os
import signal
import time

import pytest
import ray

from agents.executor import executor_actor
from farm.models import JobSpec, JobState
from farm.ray_seam import actor_settings
from farm.reaper import Reaper
from tests.conftest import end_actors, wait_for
from tests.integration.test_executor_local import full_log, wait_done

pytestmark = pytest.mark.ray


@pytest.fixture
def actors(ray_session, make_settings):
    started = []

    def start(n, **overrides):
        settings = make_settings(**overrides)
        handles = [executor_actor().remote(f"ray-{i}", actor_settings(settings)) for i in range(n)]
        ray.get([h.start.remote() for h in handles])
        started.extend(handles)
        return handles, settings

    yield start
    end_actors(started)


def test_actors_run_jobs_and_drain_after_the_current_one(store, actors, tmp_path):
    handles, _ = actors(2)
    jobs = [store.enqueue(JobSpec(steps=[{"name": "s", "run": f"echo job-{i}"}]), "t") for i in range(10)]
    for i, job in enumerate(jobs):
        assert wait_done(store, job.id).state is JobState.SUCCEEDED
        assert f"job-{i}" in full_log(store, job.id)
    assert {store.get(j.id).executor for j in jobs} <= {"ray-0", "ray-1"}
    flag = tmp_path / "go"
    long = store.enqueue(JobSpec(steps=[{"name": "w", "run": f"while [ ! -e {flag} ]; do sleep 0.05; done"}]), "t")
    wait_for(lambda: store.get(long.id).state is JobState.RUNNING, 5, what="the long job to start")
    # the claim marks the job running in Redis a moment before its executor records it as its own
    busy = wait_for(lambda: next((h for h in handles if ray.get(h.status.remote())["job"] == long.id), None), 5,
                    what="an executor to say it runs the long job")  # fmt: skip
    assert ray.get(busy.drain.remote(0.3)) is False  # still running its job
    flag.touch()
    assert ray.get(busy.drain.remote(10)) is True
    assert store.get(long.id).state is JobState.SUCCEEDED


def test_sigkill_of_an_executor_mid_job_requeues_it_to_another(store, registry, actors, tmp_path):
    lease = 2.0
    handles, settings = actors(2, lease={"lease_s": lease, "heartbeat_s": 0.2})
    reaper = Reaper(store, registry, settings)
    marker = tmp_path / "attempt-1-started"
    # Attempt 1 hangs (and tells us it started); attempt 2 finishes at once.
    job = store.enqueue(JobSpec(steps=[{"name": "s", "run":
        f'if [ "$FARM_ATTEMPT" = 1 ]; then touch {marker}; sleep 60; fi; echo finished-attempt-$FARM_ATTEMPT'}]), "t")
    wait_for(marker.exists, 10, what="attempt 1 to start")
    victim = next(h for h in handles if ray.get(h.status.remote())["job"] == job.id)
    os.kill(ray.get(victim.pid.remote()), signal.SIGKILL)
    killed_at = time.monotonic()
    while not store.get(job.id).state.terminal:
        reaper.run_once()
        assert time.monotonic() - killed_at < lease + 5, "not requeued and finished within lease + 5 s"
        time.sleep(0.1)
    done = store.get(job.id)
    assert (done.state, done.attempt) == (JobState.SUCCEEDED, 2)
    survivor = next(h for h in handles if h is not victim)
    assert done.executor == ray.get(survivor.status.remote())["id"]
    log = full_log(store, job.id)
    assert log.count("finished-attempt-") == 1 and "finished-attempt-2" in log
    assert store.client.hget(store.keys.stats("default"), "finished_total:succeeded") == "1"
