"""JobStore: the job state machine in Redis. Every transition is one Lua script call.

Invariants (enforced by the scripts, tested against a real server):
- A job id is in exactly one of: its pool's queue (queued), the lease book (running), or
  the finished book (terminal).
- Executor writes (heartbeat, log, finish) carry the attempt number; a write for an attempt
  that is not current is refused ('stale'), so a job never finishes twice.
- Times come from the Redis server clock, never from the caller's.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio

from farm.errors import Conflict, NotFound, StaleAttempt, TooManyRequests
from farm.models import ArtifactInfo, CacheResult, ErrorCode, ImageResult, Job, JobSpec, JobState, StepResult, rfc3339
from farm.store.client import translated
from farm.store.ids import resolve_id
from farm.store.keys import Keys
from farm.store.lua import Scripts
from farm.store.paging import newest_first


@dataclass(frozen=True)
class Claim:
    """A job an executor now holds: the id, the attempt it must fence its writes with, and
    the spec to run."""

    job_id: str
    attempt: int
    spec: JobSpec
    tenant: str
    secrets: dict[str, str] = field(default_factory=dict)
    tier: str = "unprotected"  # the cache trust tier of the token the job was submitted with
    source_exempt: bool = False  # its git source was admitted under the exemption: the checkout does not check its host


@dataclass(frozen=True)
class LogChunk:
    entry_id: str
    data: str | None  # None for the end marker
    end_state: JobState | None = None
    attempt: int | None = None  # the attempt that wrote it
    kept: bool = False  # one of farm's own lines (never cut, not counted in the attempt's log_bytes)


def _chunk(entry_id: str, f: dict[str, str]) -> LogChunk:
    return LogChunk(entry_id, f.get("d"), JobState(f["e"]) if "e" in f else None, int(f["a"]) if f.get("a") else None, "k" in f)


@dataclass(frozen=True)
class LogPosition:
    """Where an attempt's log stands: which attempt, and its output bytes so far."""

    attempt: int
    log_bytes: int


@dataclass(frozen=True)
class ReapReport:
    requeued: int
    lost: int
    timed_out: int
    expired: int
    fencing: int = 0  # leases expired on a node with a live warden: requeued once it confirms the kill


class QueueFull(TooManyRequests):
    """The tenant has as many jobs queued as it may (its quota): 429, retry later."""

    def __init__(self, tenant: str, queued: int) -> None:
        super().__init__(f"tenant {tenant!r} has {queued:,} jobs queued, as many as it may (api.max_queued_per_tenant, "
                         "tenants[].max_queued): retry when some have started, or cancel some")  # fmt: skip


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool  # False: an earlier submit with the same Idempotency-Key made it


Segments = list[tuple[str, str]]
LOG_HEAD_SHARE = 0.2  # of an attempt's log cap, kept from its start; the rest is its most recent output


def log_head_bytes(cap: int) -> int:
    return int(cap * LOG_HEAD_SHARE)


def _segments(data: str | Segments) -> str:
    return json.dumps([["o", data]] if isinstance(data, str) else [list(s) for s in data])


def _ms(v: str | None) -> int | None:
    return int(v) if v not in (None, "") else None


def job_from_hash(h: dict[str, str]) -> Job:
    return Job(
        id=h["id"],
        tenant=h["tenant"],
        state=JobState(h["state"]),
        attempt=int(h["attempt"]),
        spec=JobSpec.model_validate_json(h["spec"]),
        queued_at=rfc3339(int(h["queued_at"])),
        started_at=rfc3339(_ms(h.get("started_at"))),
        finished_at=rfc3339(_ms(h.get("finished_at"))),
        executor=h.get("executor") or None,
        exit_code=_ms(h.get("exit_code")),
        error=ErrorCode(h["error"]) if h.get("error") else None,
        steps=[StepResult(**s) for s in json.loads(h.get("steps") or "[]")],
        artifacts=[ArtifactInfo(**a) for a in json.loads(h.get("artifacts") or "[]")],
        caches=[CacheResult(**c) for c in json.loads(h.get("caches") or "[]")],
        image=ImageResult.model_validate_json(h["image"]) if h.get("image") else None,
        log_truncated=h.get("log_truncated") == "1",
        warnings=json.loads(h.get("warnings") or "[]"),
        webhook=h.get("webhook") or None,
        rerun_of=h.get("rerun_of") or None,
        run_id=h.get("run") or None,
    )


class JobStore:
    def __init__(self, client: redis.Redis, keys: Keys | None = None, *, aclient: redis.asyncio.Redis | None = None) -> None:
        self.client = client
        self.aclient = aclient
        self.keys = keys or Keys()
        self._scripts = Scripts(client, self.keys, aclient)

    def _call(self, name: str, *args: Any) -> Any:
        with translated():
            return self._scripts.call(name, *args)

    # -- submit and read ------------------------------------------------------------------

    def enqueue(self, spec: JobSpec, tenant: str) -> Job:
        return self.submit(spec, tenant).job

    def submit(self, spec: JobSpec, tenant: str, **kw: Any) -> Submitted:
        """Queue a job (see `_enqueue_args` for the options). With an idempotency key, a
        repeat of the same body within 24 h gets the first job back (created=False); the
        same key with another body is a Conflict."""
        got = self._call("enqueue", *self._enqueue_args(spec, tenant, **kw))
        return self._submitted(got, spec, tenant, kw.get("rerun_of")) or Submitted(self.get(got[1]), created=False)

    async def asubmit(self, spec: JobSpec, tenant: str, **kw: Any) -> Submitted:
        """`submit` on the asyncio client (the API's hot path)."""
        with translated():
            got = await self._scripts.acall("enqueue", *self._enqueue_args(spec, tenant, **kw))
            done = self._submitted(got, spec, tenant, kw.get("rerun_of"))
            if done is None:
                h = await self.aclient.hgetall(self.keys.job(got[1]))  # type: ignore[union-attr]
                done = Submitted(job_from_hash(h), created=False)
        return done

    @staticmethod
    def _enqueue_args(spec: JobSpec, tenant: str, **kw: Any) -> list[str]:
        """The enqueue script's one argument (see `_enqueue_fields` for the options)."""
        return [json.dumps(JobStore._enqueue_fields(spec, tenant, **kw))]

    @staticmethod
    def _enqueue_fields(
        spec: JobSpec,
        tenant: str,
        *,
        weight: float = 1.0,
        idempotency_key: str | None = None,
        secrets: dict[str, str] | None = None,
        rerun_of: str | None = None,
        tier: str = "unprotected",
        max_queued: int | None = None,
        source_exempt: bool = False,
    ) -> dict[str, str]:
        """A job as lib.lua's `enqueue_job` takes it, every value a string. `secrets` are
        the resolved values the steps will see; `max_queued` the most jobs the tenant may
        have queued (None: no limit); `source_exempt` that the API admitted its git source
        under the exemption (farm.permissions.source_exempt), kept beside the spec, never
        in it, and handed to the executor with the claim."""
        body = spec.model_dump_json()
        group = spec.concurrency
        return {
            "id": uuid.uuid4().hex,
            "tenant": tenant,
            "pool": spec.pool,
            "priority": str(spec.priority),
            "retries": str(spec.retries),
            "timeout_ms": str(spec.timeout_s * 1000),
            "spec": body,
            "weight": repr(float(weight)),
            "group": group.group if group else "",
            "group_limit": str(group.limit if group else 0),
            "on_full": group.on_full if group else "",
            "queue_timeout_ms": "" if spec.queue_timeout_s is None else str(spec.queue_timeout_s * 1000),
            "idem": idempotency_key or "",
            "body": hashlib.sha256(body.encode()).hexdigest() if idempotency_key else "",
            "callback": spec.callback_url or "",
            "secrets": json.dumps(secrets) if secrets else "",
            "rerun_of": rerun_of or "",
            "tier": tier,
            "run": "",
            "max_queued": "" if max_queued is None else str(max_queued),
            "source_exempt": "1" if source_exempt else "",
        }

    @staticmethod
    def _submitted(got: list[Any], spec: JobSpec, tenant: str, rerun_of: str | None) -> Submitted | None:
        """The new job from what the enqueue script answered (without reading it back);
        None for a duplicate, which the caller reads."""
        outcome, job_id, *queued_at = got
        if outcome == "full":
            raise QueueFull(tenant, int(job_id))
        if outcome == "conflict":
            raise Conflict(f"Idempotency-Key already used for job {job_id} with a different body")
        if outcome == "duplicate":
            return None
        job = Job(id=job_id, tenant=tenant, state=JobState.QUEUED, attempt=1, spec=spec,
                  queued_at=rfc3339(int(queued_at[0])), rerun_of=rerun_of)  # fmt: skip
        return Submitted(job, created=True)

    def get(self, job_id: str) -> Job:
        with translated():
            h = self.client.hgetall(self.keys.job(job_id))
        if not h:
            raise NotFound(f"no job {job_id}")
        return job_from_hash(h)

    def resolve(self, typed: str, *, tenant: str | None = None) -> str:
        """The job id `typed` names: a whole id as it is (not read), else a unique prefix of
        8 characters or more among `tenant`'s jobs (None: every job's). NotFound, or
        Ambiguous listing some matches with their states (farm.store.ids)."""
        return resolve_id(self.client, self.keys.job_ids, "job", typed, tenant=tenant, read=self._owners)

    def _owners(self, job_ids: list[str]) -> list[tuple[str, str] | None]:
        with translated():
            pipe = self.client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hmget(self.keys.job(job_id), "tenant", "state")
            return [(t, s) if t is not None else None for t, s in pipe.execute()]

    def get_many(self, job_ids: list[str]) -> list[Job]:
        with translated():
            pipe = self.client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
            return [job_from_hash(h) for h in pipe.execute() if h]

    def list(
        self,
        *,
        tenant: str | None,
        state: JobState | None = None,
        pool: str | None = None,
        limit: int = 50,
        cursor: int | None = None,
        scan_max: int = 10_000,
    ) -> tuple[list[Job], int | None]:
        """Newest first, `cursor` the submission sequence to continue below (store.paging)."""
        index = self.keys.jobs if tenant is None else self.keys.tenant_jobs(tenant)
        keep = (lambda j: (state is None or j.state == state) and (pool is None or j.pool == pool)) if state or pool else None
        return newest_first(self.client, index, limit=limit, cursor=cursor, fetch=lambda ids: {j.id: j for j in self.get_many(ids)},
                            keep=keep, scan_max=scan_max)  # fmt: skip

    # -- executor side ---------------------------------------------------------------------

    def claim(self, pool: str, executor: str, *, lease_s: float, grace_s: float, node: str = "") -> Claim | None:
        """The next job of the pool under a lease, or None. `node` is where the executor
        runs: if the lease expires, that node's warden must fence the attempt before the job
        runs again (farm/store/nodes.py)."""
        while (got := self._call("claim", pool, executor, int(lease_s * 1000), int(grace_s * 1000), node)) == "more":
            pass  # the script parked a run of jobs of full groups; search on
        if not got:
            return None
        job_id, attempt, spec_json, tenant, secrets, tier, exempt = got
        return Claim(job_id, int(attempt), JobSpec.model_validate_json(spec_json), tenant, json.loads(secrets or "{}"), tier,
                     source_exempt=exempt == "1")  # fmt: skip

    def raw_spec(self, job_id: str) -> JobSpec:
        """The spec as submitted, literal secret values included (for a rerun)."""
        with translated():
            raw = self.client.hget(self.keys.job(job_id), "spec")
        if raw is None:
            raise NotFound(f"no job {job_id}")
        return JobSpec.model_validate_json(raw)

    def wait_for_work(self, pool: str, timeout_s: float) -> bool:
        """Block until a job may be waiting in `pool` (or the timeout passes)."""
        with translated():
            return self.client.blpop([self.keys.wake(pool)], timeout=timeout_s) is not None

    def heartbeat(self, job_id: str, attempt: int, *, lease_s: float) -> str:
        """'ok' while the attempt holds the job (its lease and its executor's registry entry are
        renewed, in one step); anything else means stop and kill the step."""
        return self._call("heartbeat", job_id, attempt, int(lease_s * 1000))

    def append_log(self, job_id: str, attempt: int, data: str | Segments, *, cap: int) -> None:
        """Append output (a str) or segments ([("o", output), ("n", farm's line)]); past `cap`
        bytes of output, the attempt keeps its head and its tail (lib.lua `append`)."""
        got = self._call("append_log", job_id, attempt, _segments(data), cap, log_head_bytes(cap))
        if got == -1:
            raise StaleAttempt(f"job {job_id}: attempt {attempt} is not current")

    def finish(
        self,
        job_id: str,
        attempt: int,
        state: JobState,
        *,
        exit_code: int | None,
        error: ErrorCode | None,
        steps: list[StepResult],
        artifacts: Sequence[ArtifactInfo] = (),
        log_tail: str | Segments = "",
        log_cap: int = 0,
        caches: Sequence[CacheResult] = (),
        image: ImageResult | None = None,
        warnings: Sequence[str] = (),
    ) -> str:
        """'ok' when recorded; 'stale' or the job's terminal state when refused."""
        return self._call("finish", json.dumps({
            "id": job_id, "attempt": str(attempt), "state": state.value,
            "exit_code": "" if exit_code is None else str(exit_code), "error": "" if error is None else error.value,
            "steps": json.dumps([s.model_dump() for s in steps]), "artifacts": json.dumps([a.model_dump() for a in artifacts]),
            "caches": json.dumps([c.model_dump() for c in caches]), "image": image.model_dump_json() if image else "",
            "warnings": json.dumps(list(warnings)) if warnings else "",
            "log": _segments(log_tail) if log_tail else "", "log_cap": log_cap, "log_head": log_head_bytes(log_cap),
        }))  # fmt: skip

    # -- control ---------------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        prev = self._call("cancel", job_id)
        if prev == "gone":
            raise NotFound(f"no job {job_id}")
        if prev not in (JobState.QUEUED, JobState.RUNNING):
            raise Conflict(f"job {job_id} already ended: {prev}")
        return self.get(job_id)

    def reap(self, limit: int = 1000, *, node_timeout_s: float = 10.0) -> ReapReport:
        return ReapReport(*(int(n) for n in self._call("reap", limit, int(node_timeout_s * 1000))))

    def fenced(self, job_id: str, attempt: int, node: str) -> str:
        """A node confirms nothing of the attempt runs there: 'requeued', 'lost' or 'stale'."""
        return self._call("fenced", job_id, attempt, node)

    def instance(self) -> str:
        """This farm's id, made on first use: it names the attempts' cgroups and containers,
        so farms sharing a machine never touch each other's."""
        with translated():
            self.client.set(self.keys.instance, uuid.uuid4().hex[:12], nx=True)
            return self.client.get(self.keys.instance)  # type: ignore[return-value]

    def purge(self, retention_s: int, limit: int = 1000) -> list[str]:
        return list(self._call("purge", retention_s * 1000, limit))

    # -- logs ------------------------------------------------------------------------------

    def read_log(self, job_id: str, after: str = "-", *, count: int = 500) -> list[LogChunk]:
        """Log entries after entry id `after` ('-' for the start)."""
        key = self.keys.log(job_id)
        with translated():
            lo = after if after == "-" else f"({after}"
            rows = self.client.xrange(key, lo, "+", count=count)
        return [_chunk(eid, f) for eid, f in rows]

    def read_log_before(self, job_id: str, before: str = "+", *, count: int = 100, inclusive: bool = False) -> list[LogChunk]:
        """Log entries before entry id `before` ('+' for the end; `inclusive`: that entry
        too), newest first: a reader that shows a log's end (the portal) reads back from
        there, a page at a time, and never the whole stream."""
        key = self.keys.log(job_id)
        with translated():
            rows = self.client.xrevrange(key, before if before == "+" or inclusive else f"({before}", "-", count=count)
        return [_chunk(eid, f) for eid, f in rows]

    async def aread_log(self, job_id: str, after: str = "-", *, block_ms: int, count: int = 500) -> list[LogChunk]:
        """`read_log` with block_ms on the asyncio client: a follower waits without holding a
        thread."""
        assert self.aclient is not None, "the asyncio client is needed to follow logs"
        with translated():
            got = await self.aclient.xread({self.keys.log(job_id): "0-0" if after == "-" else after}, count=count, block=block_ms)
        rows = got[0][1] if got else []
        return [_chunk(eid, f) for eid, f in rows]

    async def alog_snapshot(self, job_id: str, after: str, *, count: int = 500) -> tuple[list[LogChunk], LogPosition | None]:
        """The entries after `after` and where the attempt's log stands, read in one step,
        so what a follower has received, the entries still there and the attempt's output
        bytes can be compared (None: the job is gone)."""
        assert self.aclient is not None
        with translated():
            pipe = self.aclient.pipeline(transaction=True)
            pipe.xrange(self.keys.log(job_id), "-" if after == "-" else f"({after}", "+", count=count)
            pipe.hmget(self.keys.job(job_id), "attempt", "log_bytes")
            rows, (attempt, log_bytes) = await pipe.execute()
        chunks = [_chunk(eid, f) for eid, f in rows]
        return chunks, None if attempt is None else LogPosition(int(attempt), int(log_bytes or 0))

    def log_cuts(self, job_id: str) -> dict[str, int]:
        """Where output was cut from the log (over its cap): entry id -> bytes cut after it."""
        with translated():
            return {k: int(v) for k, v in self.client.hgetall(self.keys.logcut(job_id)).items()}

    async def alog_cuts(self, job_id: str) -> dict[str, int]:
        assert self.aclient is not None
        with translated():
            return {k: int(v) for k, v in (await self.aclient.hgetall(self.keys.logcut(job_id))).items()}

    async def aclose(self) -> None:
        if self.aclient is not None:
            await self.aclient.aclose()

    async def aexists(self, job_id: str) -> bool:
        assert self.aclient is not None
        with translated():
            return bool(await self.aclient.exists(self.keys.job(job_id)))

    def is_running(self, job_id: str, attempt: int) -> bool:
        """Whether `attempt` is the running attempt of the job."""
        with translated():
            state, current = self.client.hmget(self.keys.job(job_id), "state", "attempt")
        return state == JobState.RUNNING and current == str(attempt)

    def exists(self, job_id: str) -> bool:
        with translated():
            return bool(self.client.exists(self.keys.job(job_id)))

    def server_time_ms(self) -> int:
        with translated():
            s, us = self.client.time()
        return s * 1000 + us // 1000
