"""An executor SIGKILLed mid-step: attempt 2 of its job must not start while anything of
attempt 1 lives, and must start within the lease + 5 s. The executor runs in a process of
its own (as a Ray worker hosts it); the node's warden and the reaper run as farm runs them.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import pytest

from agents.containment import Containment
from agents.warden import Warden
from farm import loops
from farm.models import JobSpec, JobState
from farm.reaper import Reaper
from farm.store.executors import ExecutorRegistry
from tests.conftest import executor_process, wait_for

LEASE_S = 2.0
log = logging.getLogger("test_fencing")

# Each attempt records its shell's pid and a detached sleep's pid (with their start times,
# against pid reuse), after checking that no earlier attempt's recorded process still lives
# (a zombie waiting for init to reap it is dead).
RECORD = r"""
rec={dir}/$FARM_JOB_ID
for f in $rec.*.pid; do
  [ -e "$f" ] || continue
  while read pid start; do
    stat=$(cat /proc/$pid/stat 2>/dev/null) || continue
    if [ "$(echo "$stat" | cut -d' ' -f22)" = "$start" ] && [ "$(echo "$stat" | cut -d' ' -f3)" != Z ]; then
      echo "attempt $FARM_ATTEMPT started while $pid of $f lived" >> $rec.overlap
    fi
  done < "$f"
done
echo "$$ $(cut -d' ' -f22 /proc/$$/stat)" >> $rec.$FARM_ATTEMPT.pid
setsid sh -c 'echo "$$ $(cut -d" " -f22 /proc/$$/stat)" >> '$rec.$FARM_ATTEMPT.pid'; exec sleep 60' &
if [ "$FARM_ATTEMPT" = 1 ]; then sleep 25; fi
"""


@pytest.fixture
def farm_side(store, make_settings):
    """The warden and the reaper of node 'node-t', as loops."""
    started = []

    def start(settings):
        warden = Warden("node-t", settings, jobs=store, containment=Containment.for_node(store.instance(), settings.data_dir))
        reaper = Reaper(store, ExecutorRegistry(store.client, store.keys), settings)
        started.extend([loops.start("warden", warden.run_once, 0.2, log), loops.start("reaper", reaper.run_once, 0.2, log)])
        return warden

    yield start
    for thread, stop in started:
        stop.set()
        thread.join(5)


def _settings(make_settings, runtime: str, **extra):
    return make_settings(
        lease={"lease_s": LEASE_S, "heartbeat_s": 0.5, "reaper_interval_s": 0.2, "node_timeout_s": 5},
        executors={"runtime": runtime, "node": "node-t"}, **extra,
    )


def kill_mid_step(store, settings, job_id, run_executor, *, remains=lambda: 0) -> tuple[float, int, int]:
    """Run attempt 1 on an executor process, SIGKILL that process mid-step, start another
    executor and wait until attempt 2 is given out. Returns (seconds from the kill to that,
    what `remains` counted just after the kill, what it counted when attempt 2 was given out)."""
    proc = executor_process(settings, "doomed")
    try:
        wait_for(lambda: store.get(job_id).state is JobState.RUNNING, 90, what="attempt 1 to start")
        time.sleep(1.0)  # well into its step
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        after_kill = remains()
        run_executor(settings, "heir")
        while not (store.get(job_id).attempt == 2 and store.get(job_id).state is not JobState.QUEUED):
            assert time.monotonic() - killed_at < LEASE_S + 15, "attempt 2 did not start"
            time.sleep(0.05)
        return time.monotonic() - killed_at, after_kill, remains()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_local_attempt_2_starts_only_after_attempt_1_is_dead(store, make_settings, farm_side, run_executor, tmp_path: Path):
    settings = _settings(make_settings, "local")
    farm_side(settings)
    records = tmp_path / "records"
    records.mkdir()
    job = store.enqueue(JobSpec(steps=[{"name": "s", "run": RECORD.format(dir=records)}], retries=2), "t")
    took, _, _ = kill_mid_step(store, settings, job.id, run_executor)
    wait_for(lambda: store.get(job.id).state.terminal, 30, what="the job to end")
    done = store.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.attempt == 2
    log = "".join(c.data or "" for c in store.read_log(job.id, count=10_000))
    assert not (records / f"{job.id}.overlap").exists(), (records / f"{job.id}.overlap").read_text()
    assert len((records / f"{job.id}.1.pid").read_text().split("\n")) >= 2  # both processes were recorded
    assert took <= LEASE_S + 5, took
    assert "fenced on node node-t" in log


STEP_25S_ONCE = 'if [ "$FARM_ATTEMPT" = 1 ]; then sleep 25; fi'


def test_docker_attempt_2_starts_only_after_attempt_1s_containers_are_gone(store, make_settings, farm_side, run_executor, docker_image):
    import docker

    client = docker.from_env()
    settings = _settings(make_settings, "docker")
    farm_side(settings)
    job = store.enqueue(JobSpec(steps=[{"name": "s", "run": STEP_25S_ONCE}], retries=2), "t")

    def attempt_1_containers() -> int:
        return len(client.containers.list(all=True, filters={"label": [f"farm.job={job.id}", "farm.attempt=1"]}, sparse=True))

    took, after_kill, at_attempt_2 = kill_mid_step(store, settings, job.id, run_executor, remains=attempt_1_containers)
    assert after_kill == 1  # on today's code it ran on, unfenced, beside attempt 2
    assert at_attempt_2 == 0  # gone before attempt 2 was given out
    wait_for(lambda: store.get(job.id).state.terminal, 60, what="the job to end")
    assert store.get(job.id).state is JobState.SUCCEEDED
    assert took <= LEASE_S + 5, took


def test_dind_attempt_2_starts_only_after_the_dead_executors_daemon_is_gone(
    store, make_settings, farm_side, run_executor, docker_image, dind_image
):
    """The dead executor's private daemon holds its step and whatever the step started
    there: the warden removes the whole daemon before the job runs again. (No layer stores,
    so the next executor does not reuse, and remove, the dead one's by name.)"""
    import docker

    client = docker.from_env()
    settings = _settings(make_settings, "dind", docker={"default_image": docker_image},
                         dind={"image": dind_image, "layer_stores": 0})  # fmt: skip
    farm_side(settings)
    job = store.enqueue(JobSpec(steps=[{"name": "s", "run": STEP_25S_ONCE}], retries=2), "t")

    def daemons() -> int:
        return len(client.containers.list(all=True, filters={"label": ["farm.executor=doomed", "farm.dind=1"]}, sparse=True))

    took, after_kill, at_attempt_2 = kill_mid_step(store, settings, job.id, run_executor, remains=daemons)
    # Two when the kill came as the executor moved from the daemon it started with to one on
    # the job's tenant's layer store (the first stops on a thread): the warden removes both.
    assert after_kill >= 1 and at_attempt_2 == 0
    wait_for(lambda: store.get(job.id).state.terminal, 90, what="the job to end")
    assert store.get(job.id).state is JobState.SUCCEEDED
    assert took <= LEASE_S + 5, took
