"""The executor loop with the local runtime against a real Redis (no Ray: the loop itself)."""

import os
import subprocess
import time
from pathlib import Path

from farm.models import ErrorCode, JobSpec, JobState
from farm.reaper import Reaper
from farm.store.executors import ExecutorState
from tests.conftest import wait_for


def full_log(store, job_id) -> str:
    return "".join(c.data for c in store.read_log(job_id) if c.data)


def wait_done(store, job_id, timeout=15):
    return wait_for(lambda: (j := store.get(job_id)).state.terminal and j, timeout, what=f"job {job_id} to end")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_steps_run_in_order_with_output_and_results(store, make_settings, run_executor):
    run_executor(make_settings())
    job = store.enqueue(JobSpec(steps=[
        {"name": "one", "run": "echo first; echo to-stderr >&2"},
        {"name": "two", "run": "printf 'héllo\\n'; exit 0"},
    ]), "t")
    done = wait_done(store, job.id)
    assert done.state is JobState.SUCCEEDED and done.exit_code == 0
    assert [(s.name, s.exit_code) for s in done.steps] == [("one", 0), ("two", 0)]
    assert all(s.duration_s >= 0 for s in done.steps)
    log = full_log(store, job.id)
    assert log.index("first") < log.index("to-stderr") < log.index("héllo")


def test_failing_step_stops_the_job(store, make_settings, run_executor):
    run_executor(make_settings())
    job = store.enqueue(JobSpec(steps=[{"name": "a", "run": "exit 7"}, {"name": "b", "run": "echo never"}]), "t")
    done = wait_done(store, job.id)
    assert (done.state, done.error, done.exit_code) == (JobState.FAILED, ErrorCode.STEP_FAILED, 7)
    assert [s.name for s in done.steps] == ["a"] and "never" not in full_log(store, job.id)


def test_step_env_comes_from_the_spec_only(store, make_settings, run_executor, monkeypatch):
    monkeypatch.setenv("FARM_SECRET_OF_THE_FARM", "hunter2")
    run_executor(make_settings())
    job = store.enqueue(JobSpec(steps=[{"name": "env", "run": "env"}], env={"GREETING": "hi"}), "t")
    wait_done(store, job.id)
    log = full_log(store, job.id)
    assert "GREETING=hi" in log and f"FARM_JOB_ID={job.id}" in log and "FARM_ATTEMPT=1" in log
    assert "hunter2" not in log and "redis://" not in log


def test_timeout_kills_the_process_group(store, make_settings, run_executor, tmp_path):
    run_executor(make_settings())
    pidfile = tmp_path / "pids"
    job = store.enqueue(JobSpec(timeout_s=1, steps=[
        {"name": "hang", "run": f"sleep 60 & echo $! > {pidfile}; echo $$ >> {pidfile}; wait"},
    ]), "t")
    done = wait_done(store, job.id, timeout=10)
    assert (done.state, done.error) == (JobState.TIMED_OUT, ErrorCode.TIMEOUT)
    pids = [int(p) for p in pidfile.read_text().split()]
    wait_for(lambda: not any(pid_alive(p) for p in pids), 2, what="the step's processes to die")


def test_cancel_kills_a_running_step_within_two_seconds(store, make_settings, run_executor, tmp_path):
    run_executor(make_settings())
    pidfile = tmp_path / "pid"
    job = store.enqueue(JobSpec(steps=[{"name": "hang", "run": f"echo $$ > {pidfile}; exec sleep 60"}]), "t")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, what="the step to start")
    pid = int(pidfile.read_text())
    t0 = time.monotonic()
    assert store.cancel(job.id).state is JobState.CANCELLED
    wait_for(lambda: not pid_alive(pid), 2.0, what="the cancelled step to be killed")
    assert time.monotonic() - t0 < 2.0
    assert store.get(job.id).error is ErrorCode.CANCELLED


def test_git_source_is_checked_out_at_ref(store, make_settings, run_executor, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "VERSION").write_text("one\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    subprocess.run([*git, "tag", "v1"], check=True)
    (repo / "VERSION").write_text("two\n")
    subprocess.run([*git, "commit", "-qam", "two"], check=True)
    run_executor(make_settings())
    at_tag = store.enqueue(JobSpec(source={"git": {"url": str(repo), "ref": "v1"}}, steps=[{"name": "v", "run": "cat VERSION"}]), "t")
    at_head = store.enqueue(JobSpec(source={"git": {"url": str(repo)}}, steps=[{"name": "v", "run": "cat VERSION"}]), "t")
    bad_ref = store.enqueue(JobSpec(source={"git": {"url": str(repo), "ref": "nope"}}, steps=[{"name": "v", "run": "true"}]), "t")
    assert wait_done(store, at_tag.id).state is JobState.SUCCEEDED
    assert "one\n" in full_log(store, at_tag.id)
    assert wait_done(store, at_head.id).state is JobState.SUCCEEDED
    assert "two\n" in full_log(store, at_head.id)
    failed = wait_done(store, bad_ref.id)
    assert (failed.state, failed.error) == (JobState.FAILED, ErrorCode.SOURCE_FAILED)


def test_workspace_is_removed_after_the_job(store, make_settings, run_executor):
    settings = make_settings()
    ex = run_executor(settings, "ex-ws")
    job = store.enqueue(JobSpec(steps=[{"name": "w", "run": "pwd; touch made-here"}]), "t")
    wait_done(store, job.id)
    root = ex.executor.workspaces
    wait_for(lambda: root.exists() and not any(root.iterdir()), 5, what="the workspace to be removed")


def test_executor_reports_its_state_and_drains(store, registry, make_settings, run_executor, tmp_path):
    ex = run_executor(make_settings(), "ex-state")
    wait_for(lambda: registry.counts("default")["idle"] == 1, 5, what="idle")
    flag = tmp_path / "go"
    job = store.enqueue(JobSpec(steps=[{"name": "w", "run": f"while [ ! -e {flag} ]; do sleep 0.05; done"}]), "t")
    wait_for(lambda: registry.counts("default")["busy"] == 1, 5, what="busy")
    ex.executor.drain()
    assert registry.counts("default")["draining"] == 1
    flag.touch()
    ex.thread.join(10)
    assert not ex.thread.is_alive() and store.get(job.id).state is JobState.SUCCEEDED
    assert ex.executor.state is ExecutorState.STOPPED and registry.counts("default") == dict.fromkeys(registry.counts("default"), 0)


def test_a_job_of_a_dead_executor_runs_again_on_another(store, registry, make_settings, run_executor):
    settings = make_settings(lease={"lease_s": 1.0, "heartbeat_s": 0.2})
    job = store.enqueue(JobSpec(steps=[{"name": "s", "run": "echo ran"}]), "t")
    store.claim("default", "ghost", lease_s=1.0, grace_s=5)  # an executor that then dies
    run_executor(settings, "ex-alive")
    reaper = Reaper(store, registry, settings)
    t0 = time.monotonic()
    wait_for(lambda: reaper.run_once().reaped.requeued, 3, interval=0.1, what="the lease to expire")
    done = wait_done(store, job.id)
    assert time.monotonic() - t0 < 1.0 + 5
    assert (done.state, done.attempt, done.executor) == (JobState.SUCCEEDED, 2, "ex-alive")
    assert full_log(store, job.id).count("ran\n") == 1


def test_a_log_over_its_cap_keeps_the_end_where_failures_are(store, make_settings, run_executor):
    """Seen by a user: a step printing 50 MB kept its first 10 MiB, lost its end, and farm's
    own `step exited` line with it; the cut note landed mid-line."""
    from farm.logtext import LogView

    run_executor(make_settings(retention={"log_max_bytes": 100_000}))
    script = "i=0; while [ $i -lt 40000 ]; do echo line-$i; i=$((i+1)); done; printf 'THE END'; exit 3"
    done = wait_done(store, store.enqueue(JobSpec(steps=[{"name": "noisy", "run": script}]), "t").id, timeout=120)
    chunks = store.read_log(done.id, count=100_000)
    view = LogView(store.log_cuts(done.id))
    text = "".join(view.feed(c.entry_id, c.data) for c in chunks if c.data)
    assert done.log_truncated and "line-0\n" in text and "line-39999\n" in text and "line-20000\n" not in text
    cut = [line for line in text.splitlines() if "cut here" in line]
    assert len(cut) == 1 and cut[0].startswith("[farm] --- ")  # a line of its own
    assert "THE END\n--- step noisy (exit 3, " in text  # farm's line kept, on a line of its own
    output = sum(len(c.data) for c in chunks if c.data and not c.data.startswith(("[farm]", "--- ", "\n--- ")))
    assert output <= 100_000 + 80_000 // 16  # the cap, give or take the piece the cut stops at


def test_what_an_executor_cannot_honour_is_a_warning_in_the_log_and_the_result(store, make_settings, run_executor):
    """Where the API did not know the runtime (the job reached a local executor anyway), and
    a cache key whose hashFiles matched nothing (every commit would share it)."""
    run_executor(make_settings())
    spec = JobSpec(steps=[{"name": "s", "run": "true", "image": "alpine:3"}],
                   caches=[{"key": "pip-{{ hashFiles('requirements*.txt') }}", "paths": ["deps"]}])  # fmt: skip
    done = wait_done(store, store.enqueue(spec, "t").id)
    log = full_log(store, done.id)
    assert done.state is JobState.SUCCEEDED
    assert any("runs steps on the host, not in 'alpine:3'" in w for w in done.warnings), done.warnings
    assert any("hashFiles('requirements*.txt') matched no file" in w for w in done.warnings), done.warnings
    assert "[farm] warning: the local runtime runs steps on the host" in log.splitlines()[1]  # at the top


def test_an_executor_loop_outlives_a_turn_that_fails_unexpectedly(store, make_settings, run_executor):
    """A turn that raises what nobody expected (a bug, an error the store layer did not
    translate) is logged and backed off; the loop goes on and runs the job."""
    ex = run_executor(make_settings(), "ex-flaky")
    wait_for(lambda: ex.executor.state is ExecutorState.IDLE, 30, what="the executor to be ready")
    real_claim, failures = ex.executor.store.claim, []

    def claim(*args, **kw):
        if len(failures) < 2:
            failures.append(1)
            raise RuntimeError("a bug in a turn")
        return real_claim(*args, **kw)

    ex.executor.store.claim = claim  # type: ignore[method-assign]
    job = store.enqueue(JobSpec(steps=[{"name": "s", "run": "echo fine"}]), "t")
    wait_for(lambda: store.get(job.id).state is JobState.SUCCEEDED, 30, what="the job to run after two failed turns")
    assert len(failures) == 2 and ex.thread.is_alive()


def test_a_drain_asked_during_the_start_is_never_followed_by_an_idle_report(store, make_settings):
    """An executor drained while it boots (a stand-in boot here) stays draining, then
    stopped, in the registry: never idle, which would make the autoscaler count it."""
    import threading

    from agents.executor import build_executor

    executor = build_executor("ex-boot", make_settings(executors={"startup_delay_s": 5}))
    seen: list[str] = []
    report = executor.registry.report

    def recording(executor_id, pool, state, *args, **kw):
        seen.append(state.value)
        return report(executor_id, pool, state, *args, **kw)

    executor.registry.report = recording  # type: ignore[method-assign]
    thread = threading.Thread(target=executor.run, daemon=True)
    thread.start()
    wait_for(lambda: "starting" in seen, 30, what="the executor to start")
    executor.drain()
    thread.join(30)
    assert not thread.is_alive()
    assert "idle" not in seen, seen
    assert seen[-1] == "stopped" and "draining" in seen, seen
