"""The job state machine against a real Redis-compatible server."""

import time

import pytest

from farm.errors import Conflict, NotFound, StaleAttempt
from farm.models import ErrorCode, JobSpec, JobState, StepResult
from farm.store.jobs import JobStore

LEASE = dict(lease_s=0.3, grace_s=0.2)


def spec(**kw) -> JobSpec:
    return JobSpec(steps=[{"name": "s", "run": "true"}], **kw)


def test_claim_takes_a_lease_and_finish_is_fenced(store: JobStore):
    job = store.enqueue(spec(), "t")
    assert job.state is JobState.QUEUED and job.attempt == 1 and job.queued_at.endswith("Z")
    claim = store.claim("default", "ex1", **LEASE)
    assert claim.job_id == job.id and claim.attempt == 1
    assert store.claim("default", "ex2", **LEASE) is None
    assert store.get(job.id).state is JobState.RUNNING
    assert store.heartbeat(job.id, 1, lease_s=10) == "ok"
    assert store.heartbeat(job.id, 2, lease_s=10) == "stale"
    assert store.finish(job.id, 2, JobState.SUCCEEDED, exit_code=0, error=None, steps=[]) == "stale"
    steps = [StepResult(name="s", exit_code=0, duration_s=0.5)]
    assert store.finish(job.id, 1, JobState.SUCCEEDED, exit_code=0, error=None, steps=steps) == "ok"
    # A second finish of the same attempt is refused: a job never finishes twice.
    assert store.finish(job.id, 1, JobState.FAILED, exit_code=1, error=ErrorCode.STEP_FAILED, steps=[]) == "succeeded"
    done = store.get(job.id)
    assert (done.state, done.exit_code, done.steps, done.executor) == (JobState.SUCCEEDED, 0, steps, "ex1")
    assert done.finished_at >= done.started_at >= done.queued_at
    assert store.client.hget(store.keys.stats("default"), "finished_total:succeeded") == "1"


def test_expired_lease_requeues_with_next_attempt_then_fails_when_budget_spent(store: JobStore):
    job = store.enqueue(spec(retries=1), "t")
    first = store.claim("default", "ex1", **LEASE)
    time.sleep(0.4)
    assert store.reap().requeued == 1
    again = store.get(job.id)
    assert (again.state, again.attempt, again.error) == (JobState.QUEUED, 2, ErrorCode.EXECUTOR_LOST)
    # The lost executor's late writes are refused.
    assert store.heartbeat(job.id, first.attempt, lease_s=10) == "stale"
    with pytest.raises(StaleAttempt):
        store.append_log(job.id, first.attempt, "late\n", cap=1000)
    second = store.claim("default", "ex2", **LEASE)
    assert second.attempt == 2
    time.sleep(0.4)
    report = store.reap()
    assert (report.requeued, report.lost) == (0, 1)
    lost = store.get(job.id)
    assert (lost.state, lost.error, lost.attempt) == (JobState.FAILED, ErrorCode.EXECUTOR_LOST, 2)
    assert store.claim("default", "ex3", **LEASE) is None


def test_heartbeat_keeps_the_lease(store: JobStore):
    job = store.enqueue(spec(), "t")
    store.claim("default", "ex1", **LEASE)
    for _ in range(5):
        time.sleep(0.1)
        assert store.heartbeat(job.id, 1, lease_s=0.3) == "ok"
        assert store.reap().requeued == 0
    assert store.get(job.id).state is JobState.RUNNING


def test_reaper_times_out_a_running_job_whose_executor_is_gone(store: JobStore):
    job = store.enqueue(spec(timeout_s=1), "t")
    store.claim("default", "ex1", lease_s=60, grace_s=0.2)
    time.sleep(0.5)
    assert store.reap().timed_out == 0
    time.sleep(0.8)
    assert store.reap().timed_out == 1
    got = store.get(job.id)
    assert (got.state, got.error) == (JobState.TIMED_OUT, ErrorCode.TIMEOUT)
    assert store.heartbeat(job.id, 1, lease_s=10) == "timed_out"


def test_cancel_queued_and_running_and_refuse_terminal(store: JobStore):
    queued = store.enqueue(spec(), "t")
    assert store.cancel(queued.id).state is JobState.CANCELLED
    assert store.claim("default", "ex1", **LEASE) is None  # gone from the queue
    running = store.enqueue(spec(), "t")
    store.claim("default", "ex1", **LEASE)
    assert store.cancel(running.id).error is ErrorCode.CANCELLED
    assert store.heartbeat(running.id, 1, lease_s=10) == "cancelled"
    assert store.finish(running.id, 1, JobState.SUCCEEDED, exit_code=0, error=None, steps=[]) == "cancelled"
    with pytest.raises(Conflict):
        store.cancel(running.id)
    with pytest.raises(NotFound):
        store.cancel("nope")


def test_priority_then_fifo(store: JobStore):
    low = store.enqueue(spec(priority=10), "t")
    mid1 = store.enqueue(spec(priority=50), "t")
    high = store.enqueue(spec(priority=90), "t")
    mid2 = store.enqueue(spec(priority=50), "t")
    order = [store.claim("default", "ex", **LEASE).job_id for _ in range(4)]
    assert order == [high.id, mid1.id, mid2.id, low.id]


def test_a_requeued_job_keeps_its_place(store: JobStore):
    first = store.enqueue(spec(), "t")
    store.claim("default", "ex1", **LEASE)
    later = store.enqueue(spec(), "t")
    time.sleep(0.4)
    store.reap()
    assert store.claim("default", "ex2", **LEASE).job_id == first.id
    assert store.claim("default", "ex2", **LEASE).job_id == later.id


def test_a_log_over_its_cap_keeps_its_head_its_tail_and_farms_lines(store: JobStore):
    """Where failures are is the end: over the cap an attempt keeps its first fifth and its
    most recent output, farm's own lines whatever their place, and the reader sees one
    marker line where the middle was cut."""
    from farm.logtext import LogView

    job = store.enqueue(spec(), "t")
    store.claim("default", "ex1", **LEASE)
    store.append_log(job.id, 1, [("n", "--- step build\n"), ("o", "HEAD-" + "h" * 95)], cap=1000)  # the head: 200 bytes
    store.append_log(job.id, 1, "H" * 100, cap=1000)
    for i in range(30):
        store.append_log(job.id, 1, f"line {i:02d} " + "m" * 91 + "\n", cap=1000)  # 100 bytes each
    store.append_log(job.id, 1, [("o", "the failure"), ("n", "\n--- step build (exit 1, 2.0 s)\n")], cap=1000)
    chunks = store.read_log(job.id, count=1000)
    view = LogView(store.log_cuts(job.id))
    text = "".join(view.feed(c.entry_id, c.data) for c in chunks if c.data)
    assert text.startswith("[farm] attempt 1 started on ex1\n--- step build\nHEAD-" + "h" * 95 + "H" * 100 + "\n[farm] --- ")
    assert "bytes of output cut here" in text and text.count("cut here") == 1
    assert text.endswith("line 29 " + "m" * 91 + "\nthe failure\n--- step build (exit 1, 2.0 s)\n")
    assert "line 00" not in text  # the middle went
    kept = sum(len(c.data) for c in chunks if c.data and not c.data.startswith("--- "))
    assert kept <= 1000
    assert store.get(job.id).log_truncated


def test_end_marker_follows_the_last_line(store: JobStore):
    job = store.enqueue(spec(), "t")
    store.claim("default", "ex1", **LEASE)
    store.append_log(job.id, 1, "out\n", cap=1000)
    store.finish(job.id, 1, JobState.FAILED, exit_code=2, error=ErrorCode.STEP_FAILED, steps=[])
    chunks = store.read_log(job.id)
    assert chunks[-1].end_state is JobState.FAILED
    assert "out\n" in [c.data for c in chunks]
    assert store.read_log(job.id, chunks[-1].entry_id) == []


def test_list_pages_newest_first_filters_and_scopes(store: JobStore):
    ids = [store.enqueue(spec(), "a" if i % 2 else "b").id for i in range(25)]
    store.cancel(ids[-1])
    seen, cursor = [], None
    while True:
        page, cursor = store.list(tenant=None, limit=10, cursor=cursor)
        seen += [j.id for j in page]
        if cursor is None:
            break
    assert seen == ids[::-1]
    mine, _ = store.list(tenant="a", limit=100)
    assert {j.tenant for j in mine} == {"a"} and len(mine) == 12
    cancelled, _ = store.list(tenant=None, state=JobState.CANCELLED, limit=10)
    assert [j.id for j in cancelled] == [ids[-1]]
    assert store.list(tenant=None, pool="other", limit=10) == ([], None)


def test_purge_removes_jobs_past_retention_only(store: JobStore):
    old = store.enqueue(spec(), "t")
    store.cancel(old.id)
    kept = store.enqueue(spec(), "t")
    time.sleep(0.05)
    assert store.purge(retention_s=3600) == []
    store.client.zadd(store.keys.finished, {old.id: 0})  # as if it ended long ago
    assert store.purge(retention_s=3600) == [old.id]
    assert not store.exists(old.id) and store.read_log(old.id) == []
    assert [j.id for j in store.list(tenant="t", limit=10)[0]] == [kept.id]


def test_a_long_output_is_cut_in_pieces_that_stay_whole_characters(store: JobStore):
    job = store.enqueue(spec(), "t")
    store.claim("default", "ex1", **LEASE)
    text = "é€😀" * 2000  # 2, 3 and 4 bytes a character: pieces of 1 KiB must not split one
    store.append_log(job.id, 1, text, cap=20_000)
    assert "".join(c.data for c in store.read_log(job.id, count=1000) if c.data and not c.data.startswith("[farm]")) == text


def test_a_follow_that_was_behind_says_what_was_cut_before_it_read_it(redis_url):
    """A follower reads the head, then the attempt writes far past its cap before the
    follower reads on: the entries it had not read are gone. Once it has caught up it says
    so, with the bytes it missed, and what it received and what its markers stand for add
    up to what the attempt wrote."""
    import asyncio
    import re
    import threading

    from farm.api.jobs import _follow
    from farm.store.client import connect, connect_async

    store = JobStore(connect(redis_url), aclient=connect_async(redis_url))
    job = store.enqueue(spec(), "t")
    store.claim("default", "ex1", **LEASE)
    store.append_log(job.id, 1, "HEAD-" + "h" * 195 + "\n", cap=1000)  # the head (200 bytes)

    async def follow() -> str:
        out, gen = [], _follow(store, job.id, offset=0, max_s=10, stopping=threading.Event(), timestamps=False)
        out.append(await gen.__anext__())  # the follower has read the head...
        for i in range(30):  # ...and falls behind while 3,000 bytes go in (the cap keeps 1,000)
            store.append_log(job.id, 1, f"line {i:02d} " + "m" * 91 + "\n", cap=1000)
        store.finish(job.id, 1, JobState.SUCCEEDED, exit_code=0, error=None, steps=[], log_tail="the end\n", log_cap=1000)
        async for text in gen:
            out.append(text)
        await store.aclose()
        return "".join(out)

    text = asyncio.run(follow())
    markers = re.findall(r"\[farm\] --- ([\d,]+) bytes of output cut", text)
    assert markers, text
    received = sum(len(line) + 1 for line in text.splitlines() if not line.startswith("[farm]"))
    produced = int(store.client.hget(store.keys.job(job.id), "log_bytes"))
    assert received + sum(int(m.replace(",", "")) for m in markers) == produced
    assert text.rstrip().endswith("the end") and "line 29" in text and "line 00" not in text
    gap = text.index("while this follow was behind")  # where the cut output was: between the head and what is left
    assert text.index("HEAD-") < gap < text.index("line 29") and not re.search(r"line \d\d", text[text.index("HEAD-") : gap])
