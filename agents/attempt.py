"""One attempt of a claimed job, from workspace to finish.

    claim ─▶ workspace ─▶ checkout? ─▶ step 1 … step n ─▶ artifacts ─▶ finish (+ last log) ─▶ remove workspace
               └ the executor's watch thread: log flush, heartbeat, deadline (a non-'ok' heartbeat stops everything)

Invariants:
- While the attempt runs, a heartbeat renews its lease (and, in the same step, its executor's
  registry entry: a busy executor stays counted); when the server says the attempt no
  longer holds the job (cancelled, timed out by the reaper, fenced after a lost lease), the
  running step is killed at once and nothing more is written for this attempt. When the
  server cannot be reached for most of a lease, the attempt stops itself: by the time the
  lease expires nothing of it runs (self-fencing; the node's warden does the same when the
  executor is dead). That check is the watch's fuse (`guard`), which does no I/O: a
  heartbeat stuck on a frozen server cannot hold it up.
- Every process of the attempt lives in its unit (agents/containment.py), which is killed
  and removed when the attempt ends.
- The local deadline (timeout_s from the claim) kills the step and finishes `timed_out`;
  the server-side reaper does the same at timeout + grace if this executor is gone.
- The last log output goes in the finish script, before the end marker, so a follower has
  every line when it sees the end.
- A checkout, step or build that fails while the workspace's filesystem is (or was, during
  it) full fails the job with `disk_quota`, not its own code: it wrote past the workspace's
  quota (agents/quota.py), and the log says so.
- A checkout connects only to public addresses it resolved and checked itself (pinned:
  agents/workspace.py `pin`), unless the API admitted the job's source under the exemption
  (`Claim.source_exempt`); a refused host fails the job with `source_failed` before git runs.
- A job with `id_token` gets a request token for this attempt alone (farm.store.identity),
  masked in the log like a secret, and revoked when the attempt ends.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from enum import StrEnum
from pathlib import Path

from agents import quota
from agents.cache import JobCaches
from agents.containment import Containment, Fenced, Unit
from agents.logsink import LogSink
from agents.runtimes.base import ImageBuilder, Runtime, StepContext
from agents.watch import Watch
from agents.workspace import Workspace, give, step_env
from farm.artifacts import ArtifactStore, DirectoryStore
from farm.errors import FarmError, RuntimeFailure, SourceRefused
from farm.models import ArtifactInfo, ErrorCode, ImageBuild, ImageResult, JobState, StepResult, rfc3339, unsupported
from farm.secrets import JWT
from farm.settings import Settings
from farm.store.identity import IdentityStore, new_request_token
from farm.store.jobs import Claim, JobStore


class StopReason(StrEnum):
    TIMEOUT = "timeout"
    ABORTED = "aborted"  # the server says this attempt no longer holds the job


FLUSH_S = 0.1


class Attempt:
    def __init__(
        self,
        claim: Claim,
        *,
        store: JobStore,
        runtime: Runtime,
        settings: Settings,
        workspaces: Path,
        watch: Watch,
        artifacts: ArtifactStore | None = None,
        containment: Containment | None = None,
    ) -> None:
        self.claim = claim
        self.store = store
        self.runtime = runtime
        self.settings = settings
        self.watch = watch
        quota_bytes = quota.enforceable(settings.executors.disk_quota_bytes, workspaces)
        self.workspace = Workspace(workspaces, claim.job_id, claim.attempt, quota_bytes=quota_bytes)
        self.disk_filled = False  # the workspace was seen full during the current checkout, step or build
        self.unit = Unit(containment, claim.job_id, claim.attempt) if containment is not None else None
        self.artifact_store = artifacts or DirectoryStore(settings.artifact_dir)
        self.artifacts: list[ArtifactInfo] = []
        self.stop = threading.Event()
        self._fuse_lock = threading.Lock()
        self.reason: StopReason | None = None
        self.server_says: str | None = None
        self.steps: list[StepResult] = []
        self.warnings: list[str] = []  # what could not be honoured, for the log and the result
        # Job identity: the attempt's request token, masked like a secret, and the tokens a
        # step fetches with it by their shape (farm/identity.py).
        self.id_request = new_request_token() if claim.spec.id_token and settings.identity.enabled else None
        self.log = LogSink(
            store, claim.job_id, claim.attempt, cap=settings.retention.log_max_bytes,
            on_stale=lambda: self._halt(StopReason.ABORTED), on_full=watch.poke,
            secrets=[*claim.secrets.values(), *([self.id_request] if self.id_request else [])],
            shapes=[JWT] if self.id_request else [],
        )  # fmt: skip
        now = time.monotonic()
        self.deadline = now + claim.spec.timeout_s
        self.next_flush = now + FLUSH_S
        self.next_beat = now + settings.lease.heartbeat_s
        self.last_beat_ok = now

    def _halt(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop.set()

    def fuse_at(self) -> float:
        """When the step must be stopped if no heartbeat succeeds meanwhile: a margin before
        the lease the last good one renewed can expire (the lease counts from before that
        call went out), for the kill to finish in."""
        lease = self.settings.lease
        return self.last_beat_ok + lease.lease_s - max(2 * lease.heartbeat_s, lease.lease_s / 4)

    def guard(self, now: float) -> None:
        """Called by the watch's fuse, without I/O: the deadline, and the lease it cannot prove."""
        if now >= self.deadline:
            self._halt(StopReason.TIMEOUT)
        if self.reason is not None or now < self.fuse_at():
            return
        with self._fuse_lock:  # the tick and the fuse both guard: one note
            if self.reason is not None:
                return
            self.server_says = "unreachable"
            quiet = now - self.last_beat_ok
            why = (f"the farm's store has not confirmed this attempt's lease for {quiet:.1f}s "
                   f"(lease {self.settings.lease.lease_s:g}s): step stopped before the lease can expire; the job runs again")  # fmt: skip
            logging.getLogger("farm.attempt").warning("job %s attempt %d: %s", self.claim.job_id, self.claim.attempt, why)
            self.log.note(why)  # reaches the log only if the store comes back in time
            self._halt(StopReason.ABORTED)

    def tick(self, now: float) -> None:
        """Called by the executor's watch thread: deadline, log flush, heartbeat, and whether
        the workspace is full (a step may free what it wrote before it fails)."""
        self.guard(now)
        if not self.disk_filled and self.workspace.full():
            self.disk_filled = True
        if now >= self.next_flush or self.log.full:
            self.next_flush = now + FLUSH_S
            self.log.flush()
        if now >= self.next_beat:
            lease = self.settings.lease
            self.next_beat = now + lease.heartbeat_s
            try:
                answer = self.store.heartbeat(self.claim.job_id, self.claim.attempt, lease_s=lease.lease_s)
            except FarmError:
                return  # Redis away: keep trying; the fuse stops the step before the lease can expire
            self.last_beat_ok = now
            if answer != "ok":
                self.server_says = answer
                self._halt(StopReason.ABORTED)

    def _context(self, env: dict[str, str], network: str) -> StepContext:
        c = self.claim
        return StepContext(c.job_id, self.workspace.path, env, self.log.write, self.stop, network, c.attempt, self.unit,
                           tenant=c.tenant, tier=c.tier)  # fmt: skip

    def _identity_env(self) -> dict[str, str]:
        """FARM_ID_TOKEN_REQUEST_URL and _TOKEN for a job that asked for identity, its token
        granted in the store for this attempt's longest life (the reaper's timeout + grace);
        the attempt's end revokes it, and the API honours it only while the attempt runs."""
        if self.id_request is None:
            if self.claim.spec.id_token:  # the API takes the field whatever this executor's settings say
                why = "id_token: job identity is off on this farm (identity.enabled); the steps get no request token"
                self.warnings.append(why)
                self.log.note(f"warning: {why}")
            return {}
        ttl_s = self.claim.spec.timeout_s + self.settings.lease.timeout_grace_s
        try:
            IdentityStore(self.store.client, self.store.keys).grant(self.id_request, self.claim.job_id, self.claim.attempt, ttl_s=ttl_s)
        except FarmError as e:
            raise RuntimeFailure(f"the attempt's ID token request could not be stored: {e}") from e
        return {"FARM_ID_TOKEN_REQUEST_URL": self.settings.id_request_url, "FARM_ID_TOKEN_REQUEST_TOKEN": self.id_request}

    def _cause(self, code: ErrorCode) -> ErrorCode:
        """Why what just failed failed: `code`, or `disk_quota` when the workspace was full."""
        if not (self.disk_filled or self.workspace.full()):
            return code
        size = quota.size_text(self.workspace.quota_bytes or 0)
        self.log.note(f"the job's workspace reached its disk quota of {size} (executors.disk_quota_bytes); "
                      "the job fails with disk_quota")  # fmt: skip
        return ErrorCode.DISK_QUOTA

    def _quiesce(self) -> None:
        """End what the job's steps left running (their containers, the attempt's processes)
        before farm reads the workspace; the attempt's own end does it again."""
        self.runtime.end_job(self.claim.job_id)
        if self.unit is not None:
            self.unit.kill()

    def _collect(self, log: LogSink) -> None:
        """Keep the files the spec's artifact patterns match, within the size caps."""
        caps = self.settings.artifacts
        files, notes = self.workspace.collect(self.claim.spec.artifacts, max_files=caps.max_files)
        for note in notes:
            log.note(note)
        total = 0
        for name, path in files:
            size = path.stat().st_size
            if size > caps.max_file_bytes:
                log.note(f"artifact {name} is {size} bytes, over the {caps.max_file_bytes}-byte cap; skipped")
                continue
            if total + size > caps.max_job_bytes:
                log.note(f"artifacts over the {caps.max_job_bytes}-byte cap per job; {name} and later ones skipped")
                break
            try:
                self.artifacts.append(self.artifact_store.put(self.claim.job_id, self.claim.attempt, name, path))
            except OSError as e:
                log.note(f"artifact {name} could not be stored: {e}")
                continue
            total += size
        if self.artifacts:
            log.note(f"kept {len(self.artifacts)} artifact(s), {total} bytes")

    def _build(self, build: ImageBuild, log: LogSink, env: dict[str, str]) -> ImageResult | None:
        """An image job's build; None (noted in the log) when it failed."""
        if not isinstance(self.runtime, ImageBuilder):
            log.note(f"image jobs need the docker, dind or sandbox runtime; this executor runs {self.runtime.name}")
            return None
        log.note(f"building {', '.join(build.tags)} from {build.context}/{build.dockerfile}")
        ctx = self._context(env, build.network)
        t0 = time.monotonic()
        try:
            image = self.runtime.build_image(build, self.workspace.path, ctx, self.settings.images.registry)
        except RuntimeFailure as e:
            log.note(str(e))
            return None
        log.note(f"built {image.id[:19]} in {time.monotonic() - t0:.1f}s" + (f"; pushed {', '.join(image.pushed)}" if image.pushed else ""))
        return image

    def run(self) -> str:
        """Run the attempt; returns what finish answered ('ok', 'stale', a state), or
        'aborted:<why>' when the server took the job away first."""
        c, spec, log = self.claim, self.claim.spec, self.log
        state, error, exit_code = JobState.SUCCEEDED, None, 0
        caches: JobCaches | None = None
        image: ImageResult | None = None
        self.watch.attach(self)
        for _, why in unsupported(spec, self.runtime.name):  # the API could not know this executor's runtime
            self.warnings.append(why)
            log.note(f"warning: {why}")
        try:
            # A runtime that runs nothing (noop) needs no directory, unless the job brings
            # source or keeps artifacts.
            path = self.workspace.path
            if self.runtime.uses_workspace or spec.source or spec.artifacts or spec.caches:
                self.workspace.create()
            if spec.source and spec.source.git:
                log.note(f"checking out {spec.source.git.url} at {spec.source.git.ref}")
                try:
                    code = self.workspace.checkout(spec.source.git, log.write, self.stop, self.unit, exempt=c.source_exempt)
                except SourceRefused as e:
                    log.note(str(e))
                    state, error, exit_code = JobState.FAILED, ErrorCode.SOURCE_FAILED, None
                else:
                    if code != 0 and not self.stop.is_set():
                        state, error, exit_code = JobState.FAILED, self._cause(ErrorCode.SOURCE_FAILED), code
            owner = self.runtime.step_owner
            caches = (JobCaches(c, self.workspace, self.store, self.settings, log.note, overlays=self.runtime.sees_new_mounts,
                                owner=owner) if spec.caches else None)  # fmt: skip
            if caches and state is JobState.SUCCEEDED and not self.stop.is_set():
                caches.restore()
            if owner is not None and path.exists():
                give(path, owner)  # the steps' user writes its workspace, never as root
            env = {**step_env(spec, c.job_id, c.attempt), **c.secrets, **self._identity_env()}
            for step in spec.steps:
                if state is not JobState.SUCCEEDED or self.stop.is_set():
                    break
                log.line(f"--- step {step.name}")  # a reader folds the log at these lines
                ctx = self._context(env, spec.network)
                self.disk_filled = False
                started, t0 = rfc3339(int(time.time() * 1000)), time.monotonic()
                code = self.runtime.run_step(step, ctx)
                took = round(time.monotonic() - t0, 3)
                self.steps.append(StepResult(name=step.name, exit_code=code, duration_s=took, started_at=started))
                exit_code = code
                if self.stop.is_set():
                    break
                log.line(f"--- step {step.name} (exit {code}, {took:.1f} s)")
                if code != 0:
                    state, error = JobState.FAILED, self._cause(ErrorCode.STEP_FAILED)
            if spec.build is not None and state is JobState.SUCCEEDED and not self.stop.is_set():
                self.disk_filled = False
                image = self._build(spec.build, log, env)
                if image is None and not self.stop.is_set():
                    state, error, exit_code = JobState.FAILED, self._cause(ErrorCode.BUILD_FAILED), 1
            # Nothing of the job may run while farm, as root, reads its workspace: a process or
            # container it left could swap a directory for a link between farm's check of a
            # path and its open of it (tests/security: race-link, workspace-swap).
            if (spec.artifacts or caches) and not self.stop.is_set():
                self._quiesce()
            if spec.artifacts and not self.stop.is_set():
                self._collect(log)
            if caches and caches.results and not self.stop.is_set():
                caches.save(succeeded=state is JobState.SUCCEEDED)
        except Fenced:
            self.server_says = "fenced"
            self._halt(StopReason.ABORTED)
        except (RuntimeFailure, OSError) as e:  # OSError: the workspace could not be made or read
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) and not self.steps and not self.stop.is_set():
                # The node's disk, not the job: give the job back (its lease expires and it is
                # requeued) rather than fail it for a fault of the node's.
                log.note(f"the node's disk is full ({e}); the job runs again")
                self.server_says = "node_disk_full"
                self._halt(StopReason.ABORTED)
            else:
                log.note(f"runtime error: {e}")
                state, error, exit_code = JobState.FAILED, self._cause(ErrorCode.RUNTIME_ERROR), None
        except Exception as e:  # noqa: BLE001 - a bug here must end the job with a reason, not wait out its lease
            logging.getLogger("farm.attempt").exception("job %s attempt %d", c.job_id, c.attempt)
            log.note(f"internal error in farm ({type(e).__name__}: {e}); the job ends here, not retried")
            state, error, exit_code = JobState.FAILED, ErrorCode.RUNTIME_ERROR, None
        finally:
            self.watch.detach()
        if self.reason is StopReason.TIMEOUT:
            log.note(f"timed out after {spec.timeout_s}s; step killed")
            state, error = JobState.TIMED_OUT, ErrorCode.TIMEOUT
        try:
            if self.reason is StopReason.ABORTED:
                log.flush()
                return f"aborted:{self.server_says or 'stale'}"
            return self.store.finish(
                c.job_id, c.attempt, state, exit_code=exit_code, error=error, steps=self.steps, artifacts=self.artifacts,
                log_tail=log.take_rest(), log_cap=self.settings.retention.log_max_bytes,
                caches=caches.results if caches else (), image=image,
                warnings=self.warnings + (caches.warnings if caches else []),
            )  # fmt: skip
        finally:
            self.runtime.end_job(c.job_id)
            if self.id_request is not None:
                with contextlib.suppress(FarmError):  # else it expires, and the API refuses an ended attempt's anyway
                    IdentityStore(self.store.client, self.store.keys).revoke(self.id_request)
            if self.unit is not None:
                self.unit.end()
            if caches is not None:
                caches.close()
            if not self.settings.retention.keep_workspaces:
                self.workspace.remove()
