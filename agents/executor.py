"""The executor: one slot of one pool. Claims a job, runs it, repeats; drains on request.

Loop (`run_once` is one turn, so tests and operators can step it):
    observe: try to claim ─▶ got one: run the attempt (busy) ─▶ idle
                         └▶ none: block on the pool's wake list for up to idle_wait_s

Dispatch costs no polling: `enqueue` pushes a wake token that unblocks an idle executor at
once, so submit → start is a few Redis round trips. The executor holds no job state of its
own: if it dies, its lease expires and the reaper gives the job to another one.

`ExecutorActor` (bottom) is the Ray actor around it: `num_cpus=0` so slots are not tied to
cores, and `max_concurrency` > 1 so `drain()` can be called while the loop runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time

from agents import quota
from agents.attempt import Attempt
from agents.cache import overlays_possible, unmount_under
from agents.containment import Containment
from agents.runtimes import Runtime, make_runtime
from agents.warden import ensure_warden, node_name
from agents.watch import Watch
from agents.workspace import sweep, workspace_root
from farm.errors import FarmError, RuntimeFailure
from farm.ray_seam import actor_class, node_here, restarted
from farm.settings import Settings
from farm.store.client import connect
from farm.store.executors import ExecutorRegistry, ExecutorState
from farm.store.jobs import JobStore
from farm.store.nodes import count_restart

log = logging.getLogger("farm.executor")

SWEEP_EVERY_S = 600.0


class Executor:
    def __init__(
        self, executor_id: str, settings: Settings, *, store: JobStore, registry: ExecutorRegistry, runtime: Runtime,
        containment: Containment | None = None,
    ) -> None:  # fmt: skip
        self.id = executor_id
        self.containment = containment
        self.node = node_name(settings)
        self.where: dict[str, str] = {}  # the Ray node id and address, when a Ray actor hosts it
        self.settings = settings
        self.pool = settings.executors.pool
        self.store, self.registry, self.runtime = store, registry, runtime
        self.workspace_root = workspace_root(settings)
        self.workspaces = self.workspace_root / executor_id
        self._swept_at = 0.0
        self._reported_at = 0.0
        self.watch = Watch()
        self.state = ExecutorState.STARTING
        self.current: str | None = None
        self.jobs_run = 0
        self.error: str | None = None  # why it could not start
        self._drain = threading.Event()
        self._disk_short = False  # the workspaces' filesystem was found too full to claim
        self._ready_lock = threading.Lock()

    def _report(self, state: ExecutorState, *, beat: bool = False) -> None:
        """Tell the registry our state. A beat (same state, idle loop) goes out at most once
        a second; busy/idle around a finished job is recorded by the claim/finish scripts."""
        now = time.monotonic()
        if beat and state is self.state and now - self._reported_at < 1.0:
            return
        self.state, self._reported_at = state, now
        try:
            self.registry.report(self.id, self.pool, state, self.current, where={"pid": os.getpid(), "node": self.node, **self.where})
        except FarmError:
            pass  # advisory: a missed report is corrected by the next one

    def start(self) -> None:
        self._report(ExecutorState.STARTING)
        if self.containment is None or self.containment.cgroups is None:
            kind = self.containment.kind if self.containment else "process group"
            log.warning("executor %s: no cgroups for attempts here (farm is not root?): steps are contained by %s, "
                        "which the node's warden cannot find again if this executor dies", self.id, kind)  # fmt: skip
        self.workspaces.mkdir(parents=True, exist_ok=True)
        if overlays_possible():
            unmount_under(self.workspaces)  # what a crash of this slot left mounted (overlays, DinD's bind mount)
        self.runtime.prepare()
        self.sweep_workspaces()
        quota.enforceable(self.settings.executors.disk_quota_bytes, self.workspaces)  # where there is none, says so now, once
        if self.settings.executors.startup_delay_s:
            self._drain.wait(self.settings.executors.startup_delay_s)  # a stand-in boot; a drain cuts it short
        with self._ready_lock:  # a drain asked during the start is never followed by an idle report
            self._report(ExecutorState.DRAINING if self._drain.is_set() else ExecutorState.IDLE)

    def sweep_workspaces(self) -> None:
        """Clear workspaces no running attempt owns (kept ones once past retention)."""
        retention = self.settings.retention
        keep = retention.jobs_s if retention.keep_workspaces else 0
        try:
            sweep(self.workspace_root, self.store.is_running, keep_for_s=keep, now=time.time())
        except FarmError as e:
            log.warning("workspace sweep skipped: %s", e)
        self._swept_at = time.monotonic()

    def disk_free(self) -> bool:
        """Whether the workspaces' filesystem has room for a job (executors.min_free_disk_bytes);
        says so when that changes."""
        need = self.settings.executors.min_free_disk_bytes
        try:
            free = shutil.disk_usage(self.workspaces).free if need else need
        except OSError:
            free = 0
        short = free < need
        if short != self._disk_short:
            self._disk_short = short
            if short:
                log.warning("executor %s: %d bytes free for workspaces, under executors.min_free_disk_bytes (%d): "
                            "claiming no job until there is room", self.id, free, need)  # fmt: skip
            else:
                log.info("executor %s: room for workspaces again; claiming jobs", self.id)
        return not short

    def run_once(self) -> bool:
        """One turn: run one job if there is one (True), else wait for a wake-up (False)."""
        lease = self.settings.lease
        if not self.disk_free():
            self._report(ExecutorState.DRAINING if self._drain.is_set() else ExecutorState.IDLE, beat=True)
            self._drain.wait(1.0)
            return False
        try:
            claim = self.store.claim(self.pool, self.id, lease_s=lease.lease_s, grace_s=lease.timeout_grace_s, node=self.node)
        except FarmError as e:
            log.warning("claim failed: %s", e)
            self._drain.wait(1.0)
            return False
        if claim is None:
            try:
                self.store.wait_for_work(self.pool, self.settings.executors.idle_wait_s)
            except FarmError:
                self._drain.wait(1.0)
            self._report(ExecutorState.DRAINING if self._drain.is_set() else ExecutorState.IDLE, beat=True)
            if time.monotonic() - self._swept_at > SWEEP_EVERY_S:
                self.sweep_workspaces()
            return False
        self.current = claim.job_id
        # The claim script recorded us busy; a drain requested meanwhile must stay visible.
        self.state = ExecutorState.BUSY
        if self._drain.is_set():
            self._report(ExecutorState.DRAINING)
        outcome = "error"
        try:
            outcome = Attempt(
                claim, store=self.store, runtime=self.runtime, settings=self.settings,
                workspaces=self.workspaces, watch=self.watch, containment=self.containment,
            ).run()  # fmt: skip
            log.info("job %s attempt %d: %s", claim.job_id, claim.attempt, outcome)
        except FarmError as e:
            # Redis went away mid-job: the lease will expire and the job is retried.
            log.warning("job %s attempt %d: %s", claim.job_id, claim.attempt, e)
        except Exception:  # noqa: BLE001 - a bug in one attempt must not take the executor down
            log.exception("job %s attempt %d failed unexpectedly; its lease will requeue it", claim.job_id, claim.attempt)
        finally:
            self.current = None
            self.jobs_run += 1
        if self._drain.is_set():
            self._report(ExecutorState.DRAINING)
        elif outcome == "ok":
            self.state = ExecutorState.IDLE  # the finish script recorded it
        else:
            self._report(ExecutorState.IDLE)
        return True

    def run(self) -> None:
        try:
            self.start()
            failures = 0
            while not self._drain.is_set():
                try:
                    self.run_once()
                    failures = 0
                except Exception:  # noqa: BLE001 - the loop outlives its store and its bugs: back off, go on
                    failures += 1
                    (log.exception if failures == 1 else log.warning)("executor %s: turn failed (%d in a row); backing off",
                                                                      self.id, failures)  # fmt: skip
                    self._drain.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))
        except RuntimeFailure as e:
            log.error("executor %s cannot start: %s", self.id, e)
            self.error = str(e)
        finally:
            self.runtime.close()
            self.watch.close()
            if self.error is None:
                self._report(ExecutorState.STOPPED)
            else:
                self.state = ExecutorState.STOPPED
                try:
                    self.registry.start_failed(self.id, self.pool, self.error)
                except FarmError:
                    pass

    def drain(self) -> None:
        """Stop claiming; the loop ends after the current job (if any)."""
        with self._ready_lock:
            self._drain.set()
            if self.state is not ExecutorState.STOPPED:
                self._report(ExecutorState.DRAINING)


def build_executor(executor_id: str, settings: Settings) -> Executor:
    client = connect(settings.redis_url or "", socket_timeout=settings.executors.idle_wait_s + 10)  # over the wake-list block
    store = JobStore(client)
    return Executor(
        executor_id,
        settings,
        store=store,
        registry=ExecutorRegistry(client, stale_s=max(15.0, settings.executors.idle_wait_s * 5)),
        runtime=make_runtime(settings, executor_id),
        containment=Containment.for_node(store.instance(), settings.data_dir, pids_max=settings.executors.pids_limit),
    )


class ExecutorActor:
    """The executor as a Ray actor (`executor_actor()` is its actor class): its loop on a thread."""

    def __init__(self, executor_id: str, settings: dict) -> None:  # type: ignore[type-arg]
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        self.executor = build_executor(executor_id, Settings.load(**settings))
        self.executor.where = node_here()
        # Every node that runs executors has a warden, which fences them if they die.
        ensure_warden(self.executor.settings, self.executor.store.instance(), settings)
        self.thread = threading.Thread(target=self._run, name=f"executor-{executor_id}", daemon=True)
        if restarted():
            # Ray restarted a static executor that died (farm up makes them so): the same
            # slot runs again at once; its old attempt is the warden's to fence.
            count_restart(self.executor.store, "executor")
            self.thread.start()

    def _run(self) -> None:
        """The loop; if it ever ends unasked, the process goes too, so that Ray restarts
        the actor (and the restart is counted) instead of hosting an executor that runs nothing."""
        try:
            self.executor.run()
        finally:
            if not self.executor._drain.is_set() and self.executor.error is None:
                log.error("executor %s: its loop ended unasked; exiting for Ray to restart it", self.executor.id)
                os._exit(70)

    def start(self) -> str:
        if self.thread.ident is None:  # a restarted actor started its loop already
            self.thread.start()
        return self.executor.id

    def started(self, timeout_s: float) -> str | None:
        """Wait until the executor is ready (None) or could not start (the reason)."""
        deadline = time.monotonic() + timeout_s
        while self.executor.state is ExecutorState.STARTING and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.executor.state is ExecutorState.STARTING:
            return f"not ready after {timeout_s:.0f}s"
        return self.executor.error

    def drain(self, timeout_s: float | None = None) -> bool:
        """Stop claiming and return once the current job is done (True), or after
        timeout_s with the job still running (False)."""
        self.executor.drain()
        self.thread.join(timeout_s)
        return not self.thread.is_alive()

    def status(self) -> dict:  # type: ignore[type-arg]
        e = self.executor
        return {"id": e.id, "pool": e.pool, "state": e.state.value, "job": e.current, "jobs_run": e.jobs_run}

    def pid(self) -> int:
        return os.getpid()


executor_actor = actor_class(ExecutorActor, num_cpus=0, max_concurrency=4)
