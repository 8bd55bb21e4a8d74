"""The runtime contract: what every runtime (local, docker, dind, sandbox) does alike, checked the
same way for each, driven as farm drives it: a real executor loop claiming jobs from a real
Redis, steps on the real Docker daemon (or the executor's private one). No mocks.

One executor per runtime serves the whole module (a DinD daemon is slow to start), each on
a pool of its own. For every runtime:
- the job's env and secrets reach the step (secrets masked in the log);
- the step runs in the job's workspace, which the attempt removes afterwards;
- exit codes propagate: 0 succeeds, non-zero fails with that code recorded;
- a step that ignores SIGTERM is killed at its timeout_s and the job ends timed_out;
- a cancel kills a running step within 2 s;
- nothing of an attempt is left: no process (local, and a container's processes seen from
  here), no container (by the labels the runtimes put on theirs);
- the log streams while the step runs.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agents.runtimes.base import ImageBuilder
from farm.models import ErrorCode, Job, JobSpec, JobState, parse_rfc3339
from farm.settings import Settings
from farm.store.client import connect
from farm.store.executors import ExecutorState
from farm.store.jobs import JobStore
from farm.store.server import EmbeddedRedis
from tests.conftest import RunningExecutor, processes, wait_for

RUNTIMES = [
    pytest.param("local", id="local"),
    pytest.param("docker", id="docker", marks=pytest.mark.docker),
    pytest.param("dind", id="dind", marks=pytest.mark.docker),
    pytest.param("sandbox", id="sandbox", marks=pytest.mark.docker),
]

TIMEOUT_S = 3  # time enough for a container to start and print on a busy machine before the kill
KILL_MARGIN_S = 2.5  # past timeout_s: the kill (local: TERM, 0.5 s grace, KILL), the container's removal, finish
CANCEL_S = 2.0  # the promise: a cancelled step is dead within 2 s
CANCEL_MARGIN_S = 0.5  # for a machine busy with another CI run
JOB_S = 60  # the longest a plain job may take to end (a container's start on a loaded daemon)
PS_S = 1.0  # the longest a look inside a sandboxed step's container may take (one exec: ~0.2 s idle)


def unique_sleep() -> str:
    """A sleep duration no other process on this machine uses: the marker of one step."""
    return f"{600 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6:06d}"


@dataclass
class Contract:
    """One runtime's executor, and how to look at what it runs."""

    runtime: str
    executor: RunningExecutor
    store: JobStore
    pool: str
    daemons: list[Any]  # docker clients of the daemons its step containers run on: the host's (dind's own: `clients`)

    def submit(self, secrets: dict[str, str] | None = None, **spec: object) -> Job:
        return self.store.submit(JobSpec(pool=self.pool, **spec), "t", secrets=secrets).job  # type: ignore[arg-type]

    def wait(self, job: Job, timeout: float = JOB_S) -> Job:
        ended = wait_for(lambda: (j := self.store.get(job.id)).state.terminal and j, timeout, what=f"job {job.id} to end")
        return ended  # type: ignore[return-value]

    def log(self, job: Job) -> str:
        return "".join(c.data for c in self.store.read_log(job.id) if c.data)

    def workspace(self, job: Job) -> Path:
        return self.executor.executor.workspaces / f"{job.id}-{job.attempt}"

    def cwd(self, job: Job) -> str:
        """Where the step should find itself: the workspace, mounted at /workspace in a container."""
        return str(self.workspace(job)) if self.runtime == "local" else "/workspace"

    def containers(self, job: Job, *, running: bool = False) -> list[str]:
        """The job's step containers still there, found by the runtimes' `farm.job` label:
        on the host's daemon, and for dind on the executor's private daemon too."""
        filters = {"label": f"farm.job={job.id}", **({"status": "running"} if running else {})}
        # sparse: the list as the daemon answered it, without inspecting each container after
        # (one removed in between, as a cancelled step's is, would be a 404 here)
        return [name for client in self.clients() for c in client.containers.list(all=not running, filters=filters, sparse=True)
                for name in c.attrs.get("Names", [c.id])]  # fmt: skip

    def clients(self) -> list[Any]:
        """`daemons`, and for dind the executor's private daemon as it is now: it is restarted
        on another layer store when a job of another tenant or tier comes."""
        private = getattr(self.executor.executor.runtime, "_client", None) if self.runtime == "dind" else None
        return self.daemons + ([private] if private is not None else [])

    def alive(self, job: Job, marker: str) -> list[str]:
        """The step's processes holding `marker`: seen in this kernel's /proc, and for a
        gVisor sandbox, whose processes live in gVisor's own kernel and not in this one's,
        as `ps` inside the job's running containers lists them."""
        found = [str(pid) for pid in processes(marker)]
        if self.runtime == "sandbox":
            for name in self.containers(job, running=True):
                out = self._ps(name.lstrip("/"))
                if out is None:  # no answer yet: the container is being killed, as the cancel test wants
                    found.append(f"{name}: ps did not answer within {PS_S}s")
                    continue
                found += [f"{name}: {line}" for line in out.decode(errors="replace").splitlines()
                          if marker in line and not line.startswith("ps")]  # fmt: skip
        return found

    def _ps(self, container: str) -> bytes | None:
        """`ps` inside a running container; None when it does not answer within PS_S. An exec
        into a gVisor sandbox that is being killed can stay unanswered for good (seen in CI),
        and docker-py reads its output with no timeout: the exec is left on a thread."""
        import docker.errors

        got: dict[str, bytes] = {}

        def run() -> None:
            try:
                got["out"] = self.daemons[0].containers.get(container).exec_run(["ps", "-o", "args"]).output
            except docker.errors.APIError:
                got["out"] = b""  # it ended between the list and the exec

        thread = threading.Thread(target=run, name="contract-ps", daemon=True)
        thread.start()
        thread.join(PS_S)
        return got.get("out")

    def gone(self, job: Job, marker: str) -> bool:
        return not self.alive(job, marker) and not self.containers(job)


@pytest.fixture(scope="module")
def contract_store(redis_server: EmbeddedRedis) -> Iterator[JobStore]:
    client = connect(redis_server.url)
    client.flushall()  # once: the module's executors share it, each on its own pool
    yield JobStore(client)
    client.close()


@pytest.fixture(scope="module", params=RUNTIMES)
def rt(request: pytest.FixtureRequest, redis_server: EmbeddedRedis, contract_store: JobStore,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Contract]:  # fmt: skip
    """A running executor of one runtime, shared by the module's tests of that runtime."""
    runtime: str = request.param
    pool = f"contract-{runtime}"
    overrides: dict[str, object] = {"executors": {"runtime": runtime, "pool": pool}, "pools": [pool]}
    if runtime in ("docker", "dind", "sandbox"):
        overrides["docker"] = {"default_image": request.getfixturevalue("docker_image")}  # fails in CI without Docker
    if runtime == "dind":
        overrides["dind"] = {"image": request.getfixturevalue("dind_image")}
    data_dir = tmp_path_factory.mktemp(f"contract-{runtime}") / "data"
    settings = Settings.load(redis_url=redis_server.url, data_dir=data_dir, **overrides)
    ex = RunningExecutor(f"ex-contract-{runtime}", settings)
    daemons: list[Any] = []
    host = None
    try:
        wait_for(lambda: ex.executor.state is not ExecutorState.STARTING or ex.executor.error, 120,
                 interval=0.05, what=f"the {runtime} executor to start")  # fmt: skip
        assert ex.executor.error is None, f"the {runtime} runtime could not start: {ex.executor.error}"
        if runtime != "local":
            import docker

            host = docker.from_env(timeout=30)
            daemons.append(host)
        yield Contract(runtime, ex, contract_store, pool, daemons)
    finally:
        if host is not None:
            host.close()
        ex.stop()


def test_image_builders_are_the_runtimes_that_build(rt):
    assert isinstance(rt.executor.executor.runtime, ImageBuilder) is (rt.runtime in ("docker", "dind", "sandbox"))


def test_env_and_secrets_reach_the_step(rt):
    script = 'echo "greeting=$GREETING"; [ "$API_TOKEN" = tok-c0ntract-42 ] && echo secret-ok; echo "token=$API_TOKEN"; echo "job=$FARM_JOB_ID"'
    job = rt.submit(env={"GREETING": "hello-contract"}, secrets={"API_TOKEN": "tok-c0ntract-42"},
                    steps=[{"name": "env", "run": script}])  # fmt: skip
    done, log = rt.wait(job), rt.log(job)
    assert done.state is JobState.SUCCEEDED, log
    assert "greeting=hello-contract\n" in log and "secret-ok\n" in log and f"job={job.id}\n" in log, log
    assert "token=" in log and "tok-c0ntract-42" not in log  # the step had it; the log masks it


def test_the_workspace_is_the_steps_cwd_and_is_removed_after(rt):
    job = rt.submit(steps=[
        {"name": "write", "run": "pwd; echo from-write > made-here"},
        {"name": "read", "run": "cat made-here; while [ ! -e go ]; do sleep 0.05; done"},
    ])  # fmt: skip
    ws = rt.workspace(job)
    # What the step wrote in its cwd is in the job's workspace on this machine, while it runs...
    wait_for(lambda: (ws / "made-here").is_file() and "from-write" in rt.log(job), JOB_S, what="the first step's file")
    assert (ws / "made-here").read_text() == "from-write\n"
    (ws / "go").touch()  # ...and what is put there reaches the step
    done, log = rt.wait(job), rt.log(job)
    assert done.state is JobState.SUCCEEDED, log
    assert f"\n{rt.cwd(job)}\n" in log, log
    wait_for(lambda: not ws.exists(), 10, what="the workspace to be removed")


def test_exit_codes_propagate(rt):
    ok = rt.submit(steps=[{"name": "ok", "run": "true"}])
    bad = rt.submit(steps=[{"name": "bad", "run": "echo failing; exit 3"}, {"name": "never", "run": "echo never-ran"}])
    done = rt.wait(ok)
    assert (done.state, done.error, done.exit_code) == (JobState.SUCCEEDED, None, 0), rt.log(ok)
    assert [(s.name, s.exit_code) for s in done.steps] == [("ok", 0)]
    failed = rt.wait(bad)
    assert (failed.state, failed.error, failed.exit_code) == (JobState.FAILED, ErrorCode.STEP_FAILED, 3), rt.log(bad)
    assert [(s.name, s.exit_code) for s in failed.steps] == [("bad", 3)]
    assert "failing\n" in rt.log(bad) and "never-ran" not in rt.log(bad)


def test_a_step_that_ignores_sigterm_is_killed_at_its_timeout(rt):
    marker = unique_sleep()
    script = f"trap '' TERM; echo started; sleep {marker}; echo not-killed"
    job = rt.submit(timeout_s=TIMEOUT_S, steps=[{"name": "stubborn", "run": script}])
    wait_for(lambda: "started" in rt.log(job) and rt.alive(job, marker), JOB_S, what="the step's sleep to start")
    done = rt.wait(job, TIMEOUT_S + JOB_S)
    log = rt.log(job)
    assert (done.state, done.error) == (JobState.TIMED_OUT, ErrorCode.TIMEOUT), log
    ran = (parse_rfc3339(done.finished_at) - parse_rfc3339(done.started_at)).total_seconds()  # type: ignore[arg-type]
    assert TIMEOUT_S <= ran <= TIMEOUT_S + KILL_MARGIN_S, f"ended {ran:.2f}s after its start, timeout_s={TIMEOUT_S}"
    assert "not-killed" not in log and f"timed out after {TIMEOUT_S}s" in log
    wait_for(lambda: rt.gone(job, marker), 2, what=f"the step to be gone: {rt.alive(job, marker)} {rt.containers(job)}")


def test_cancel_kills_the_running_step_within_two_seconds(rt):
    marker = unique_sleep()
    job = rt.submit(steps=[{"name": "hang", "run": f"trap '' TERM; echo started; sleep {marker}"}])
    wait_for(lambda: "started" in rt.log(job) and rt.alive(job, marker), JOB_S, what="the step to start")
    t0 = time.monotonic()
    assert rt.store.cancel(job.id).state is JobState.CANCELLED
    wait_for(lambda: not rt.alive(job, marker) and not rt.containers(job, running=True), CANCEL_S + CANCEL_MARGIN_S,
             interval=0.02, what="the cancelled step to be killed")  # fmt: skip
    killed_in = time.monotonic() - t0
    assert killed_in < CANCEL_S + CANCEL_MARGIN_S, killed_in
    done = rt.store.get(job.id)
    assert (done.state, done.error) == (JobState.CANCELLED, ErrorCode.CANCELLED)
    wait_for(lambda: rt.gone(job, marker), 10, what=f"the step's container to be removed: {rt.containers(job)}")
    wait_for(lambda: not rt.workspace(job).exists(), 10, what="the cancelled job's workspace to be removed")


def test_nothing_of_an_attempt_is_left_after_it(rt):
    """A step that leaves a TERM-ignoring process behind and exits 0: the job succeeds, and
    the process goes with its step (local: the attempt's cgroup or session; a container:
    its pid namespace), its container with it."""
    marker = unique_sleep()
    job = rt.submit(steps=[{"name": "leave", "run": f"(trap '' TERM; sleep {marker}) >/dev/null 2>&1 & echo left-behind"}])
    done = rt.wait(job)
    assert done.state is JobState.SUCCEEDED and "left-behind" in rt.log(job), rt.log(job)
    wait_for(lambda: rt.gone(job, marker), 5, what=f"the leftovers to go: {rt.alive(job, marker)} {rt.containers(job)}")
    wait_for(lambda: not rt.workspace(job).exists(), 10, what="the workspace to be removed")


def test_the_log_streams_while_the_step_runs(rt):
    job = rt.submit(steps=[{"name": "talk", "run": "echo first-line; while [ ! -e go ]; do sleep 0.05; done; echo last-line"}])
    wait_for(lambda: "first-line" in rt.log(job), JOB_S, what="the first line while the step runs")
    assert rt.store.get(job.id).state is JobState.RUNNING  # the step is still held at its gate
    assert "last-line" not in rt.log(job)
    (rt.workspace(job) / "go").touch()
    done, log = rt.wait(job), rt.log(job)
    assert done.state is JobState.SUCCEEDED, log
    assert log.index("first-line") < log.index("last-line")
