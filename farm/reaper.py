"""The reaper: requeues jobs whose lease expired, times out jobs past their deadline, expires
jobs queued past their queue timeout, purges jobs past retention (with their artifacts), and
forgets executors that vanished.

Every step is an atomic, idempotent Lua script, so any number of reapers (one per API
replica) may run at once. `run_once()` is one pass, for tests and operators.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from farm import loops
from farm.artifacts import ArtifactStore, DirectoryStore
from farm.settings import Settings
from farm.store.executors import ExecutorRegistry
from farm.store.jobs import JobStore, ReapReport

log = logging.getLogger("farm.reaper")


@dataclass(frozen=True)
class ReaperPass:
    reaped: ReapReport
    purged: int


class Reaper:
    def __init__(self, store: JobStore, registry: ExecutorRegistry, settings: Settings, artifacts: ArtifactStore | None = None) -> None:
        self.store, self.registry, self.settings = store, registry, settings
        self.artifacts = artifacts or DirectoryStore(settings.artifact_dir)

    def run_once(self) -> ReaperPass:
        reaped = self.store.reap(node_timeout_s=self.settings.lease.node_timeout_s)
        purged = self.store.purge(self.settings.retention.jobs_s)
        for job_id in purged:
            self.artifacts.delete(job_id)
        for pool in self.settings.pools:
            self.registry.prune(pool)
        if reaped.requeued or reaped.lost or reaped.timed_out or reaped.fencing or purged:
            log.info("reaper: %s, purged %d", reaped, len(purged))
        return ReaperPass(reaped, len(purged))

    def start(self) -> tuple[threading.Thread, threading.Event]:
        return loops.start("reaper", self.run_once, self.settings.lease.reaper_interval_s, log)
