"""Workspaces no running attempt owns are cleared (a crashed executor's leftovers too)."""

import os
import time

from agents.workspace import sweep
from farm.models import JobSpec


def test_sweep_keeps_running_attempts_and_young_kept_workspaces(store, tmp_path):
    running = store.enqueue(JobSpec(steps=[{"name": "s", "run": "true"}]), "t")
    store.claim("default", "ex", lease_s=30, grace_s=5)
    finished = store.enqueue(JobSpec(steps=[{"name": "s", "run": "true"}]), "t")
    store.cancel(finished.id)
    root = tmp_path / "workspaces"
    live = root / "ex-a" / f"{running.id}-1"
    stale_attempt = root / "ex-b" / f"{running.id}-0"
    done = root / "ex-b" / f"{finished.id}-1"
    gone = root / "ex-c" / "deadbeef-1"
    for p in (live, stale_attempt, done, gone):
        p.mkdir(parents=True)
        (p / "file").write_text("x")

    # Kept for an hour: only the old leftover goes.
    old = time.time() - 7200
    os.utime(gone, (old, old))
    assert sweep(root, store.is_running, keep_for_s=3600, now=time.time()) == [gone]
    # Not kept: everything but the running attempt goes.
    removed = sweep(root, store.is_running, keep_for_s=0, now=time.time())
    assert sorted(removed) == sorted([stale_attempt, done])
    assert live.exists() and not done.exists()
