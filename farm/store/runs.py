"""RunStore: runs in Redis. A run is its jobs, created in one script call (all or none), and
a hash that counts them as they start and end; its state follows from those counts.

Invariants (enforced by the scripts, tested against a real server):
- Every job of a run exists from the moment the run does, and carries the run's id.
- A run ends exactly once, when its last job ends: its outcome, metrics and webhook are
  written then, in the same step as that job's end (lib.lua `run_job_ended`).
- A tenant has at most one run in a supersede group that has not ended: a new one cancels
  the others' unfinished jobs first.
- The run's hash counts its jobs as they start and end (n:running, n:<end state>), so a
  run is read in one round trip whatever its size, also after retention purged its jobs.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from farm.errors import Conflict, NotFound
from farm.models import ErrorCode, JobState, Run, RunJob, RunSpec, RunState, Supersede, rfc3339
from farm.store.client import translated
from farm.store.ids import resolve_id
from farm.store.jobs import JobStore, QueueFull
from farm.store.paging import newest_first


@dataclass(frozen=True)
class SubmittedRun:
    run: Run
    created: bool  # False: an earlier submit with the same Idempotency-Key made it


def _ms(v: str | None) -> int | None:
    return int(v) if v not in (None, "") else None


class RunStore:
    """Runs, on the job store's clients and scripts (a run is made of jobs)."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self.keys = jobs.keys

    # -- submit ------------------------------------------------------------------------------

    @staticmethod
    def _args(spec: RunSpec, tenant: str, jobs: list[dict[str, str]], idempotency_key: str | None, max_queued: int | None) -> str:
        """The run_submit script's argument; `jobs` are the jobs' fields (JobStore._enqueue_fields)."""
        body = spec.model_dump_json()
        ids = [fields["id"] for fields in jobs]
        named = {job.name: i for i, job in enumerate(spec.jobs) if job.name is not None}
        after: dict[int, list[str]] = {}
        for i, job in enumerate(spec.jobs):
            for need in job.needs:
                after.setdefault(named[need], []).append(ids[i])
        jobs = [{**fields, "name": job.name or "", "blocked": str(len(job.needs)), "after": json.dumps(after.get(i, [])),
                 "needs_ids": json.dumps([ids[named[n]] for n in job.needs])}
                for i, (fields, job) in enumerate(zip(jobs, spec.jobs, strict=True))]  # fmt: skip
        graph = [[job.name, job.needs] for job in spec.jobs] if any(job.name or job.needs for job in spec.jobs) else None
        return json.dumps(
            {
                "graph": json.dumps(graph) if graph else "",
                "max_queued": "" if max_queued is None else str(max_queued),
                "id": uuid.uuid4().hex,
                "tenant": tenant,
                "name": spec.name,
                "labels": json.dumps(spec.labels),
                "group": spec.supersede.group if spec.supersede else "",
                "callback": spec.callback_url or "",
                "idem": idempotency_key or "",
                "body": hashlib.sha256(body.encode()).hexdigest() if idempotency_key else "",
                "jobs": jobs,
            }
        )

    def submit(self, spec: RunSpec, tenant: str, jobs: list[dict[str, str]], *, idempotency_key: str | None = None,
               max_queued: int | None = None) -> SubmittedRun:  # fmt: skip
        """Queue every job of the run in one step. With an idempotency key, a repeat of the
        same body within 24 h gets the first run back (created=False); the same key with
        another body is a Conflict."""
        got = self.jobs._call("run_submit", self._args(spec, tenant, jobs, idempotency_key, max_queued))
        return self._submitted(got, tenant)

    async def asubmit(self, spec: RunSpec, tenant: str, jobs: list[dict[str, str]], *, idempotency_key: str | None = None,
                      max_queued: int | None = None) -> SubmittedRun:  # fmt: skip
        """`submit` on the asyncio client (the API's path)."""
        with translated():
            got = await self.jobs._scripts.acall("run_submit", self._args(spec, tenant, jobs, idempotency_key, max_queued))
            outcome, run_id, *_ = got
            if outcome == "full":
                raise QueueFull(tenant, int(run_id))
            if outcome == "conflict":
                raise Conflict(f"Idempotency-Key already used for run {run_id} with a different body")
            return SubmittedRun(await self.aget(run_id), created=outcome == "created")

    def _submitted(self, got: list[Any], tenant: str) -> SubmittedRun:
        outcome, run_id, *_ = got
        if outcome == "full":
            raise QueueFull(tenant, int(run_id))
        if outcome == "conflict":
            raise Conflict(f"Idempotency-Key already used for run {run_id} with a different body")
        return SubmittedRun(self.get(run_id), created=outcome == "created")

    # -- read --------------------------------------------------------------------------------

    GRAPH_FIELDS = ("state", "error")

    def get(self, run_id: str) -> Run:
        """The run, with its graph (each job's name, needs and state) when its jobs have
        names or needs: one more round trip, for the jobs' states."""
        with translated():
            h = self.jobs.client.hgetall(self.keys.run(run_id))
            if not h:
                raise NotFound(f"no run {run_id}")
            rows = None
            if h.get("graph"):
                pipe = self.jobs.client.pipeline(transaction=False)
                for job_id in json.loads(h["jobs"]):
                    pipe.hmget(self.keys.job(job_id), *self.GRAPH_FIELDS)
                rows = pipe.execute()
        return self._run(h, rows)

    async def aget(self, run_id: str) -> Run:
        assert self.jobs.aclient is not None
        with translated():
            h = await self.jobs.aclient.hgetall(self.keys.run(run_id))
            if not h:
                raise NotFound(f"no run {run_id}")
            rows = None
            if h.get("graph"):
                pipe = self.jobs.aclient.pipeline(transaction=False)
                for job_id in json.loads(h["jobs"]):
                    pipe.hmget(self.keys.job(job_id), *self.GRAPH_FIELDS)
                rows = await pipe.execute()
        return self._run(h, rows)

    @staticmethod
    def _graph(h: dict[str, str], rows: list[list[str | None]]) -> list[RunJob]:
        """Each job's place in the graph and its state (None once retention purged it);
        `waiting_on`: the needs of a job still queued that have not succeeded yet."""
        ids = json.loads(h["jobs"])
        nodes = json.loads(h["graph"])
        by_name = {name: i for i, (name, _) in enumerate(nodes) if name}
        states = [JobState(row[0]) if row and row[0] else None for row in rows]
        graph = []
        for i, ((name, needs), row) in enumerate(zip(nodes, rows, strict=True)):
            waiting = [n for n in needs if states[by_name[n]] is not JobState.SUCCEEDED] if states[i] is JobState.QUEUED else []
            error = row[1] if row and row[1] in ErrorCode._value2member_map_ else None
            graph.append(RunJob(id=ids[i], name=name, needs=needs, state=states[i], error=error, waiting_on=waiting))  # type: ignore[arg-type]
        return graph

    @classmethod
    def _run(cls, h: dict[str, str], rows: list[list[str | None]] | None = None) -> Run:
        """A run from its hash alone: the jobs running and ended are counted there as they
        change (the rest are queued), and its state follows (models.RunState's rule)."""
        total = int(h["total"])
        counts = {s: int(h.get(f"n:{s.value}", 0)) for s in JobState if s is not JobState.QUEUED}
        counts[JobState.QUEUED] = max(0, total - sum(counts.values()))
        ended = sum(n for s, n in counts.items() if s.terminal)
        if h.get("outcome"):
            state = RunState(h["outcome"])
        else:
            state = RunState.RUNNING if h.get("started_at") or ended else RunState.QUEUED
        return Run(
            id=h["id"],
            tenant=h["tenant"],
            name=h["name"],
            labels=json.loads(h.get("labels") or "{}"),
            supersede=Supersede(group=h["group"]) if h.get("group") else None,
            state=state,
            counts={s: counts[s] for s in JobState},
            jobs=json.loads(h["jobs"]),
            created_at=rfc3339(int(h["created_at"])),
            started_at=rfc3339(_ms(h.get("started_at"))),
            finished_at=rfc3339(_ms(h.get("finished_at"))),
            superseded_by=h.get("superseded_by") or None,
            callback_url=h.get("callback") or None,
            webhook=h.get("webhook") or None,  # type: ignore[arg-type]
            graph=cls._graph(h, rows) if rows is not None else None,
        )

    def list(
        self,
        *,
        tenant: str | None,
        state: RunState | None = None,
        name: str | None = None,
        limit: int = 20,
        cursor: int | None = None,
        scan_max: int = 2_000,
    ) -> tuple[list[Run], int | None]:
        """Newest first, `cursor` the submission sequence to continue below (store.paging)."""
        index = self.keys.runs if tenant is None else self.keys.tenant_runs(tenant)
        keep = (lambda r: (state is None or r.state == state) and (name is None or r.name == name)) if state or name else None
        return newest_first(self.jobs.client, index, limit=limit, cursor=cursor, fetch=self._get_many, keep=keep, scan_max=scan_max)

    def _get_many(self, run_ids: list[str]) -> dict[str, Run]:
        """The runs in one round trip; one purged between the index and the read is left out."""
        with translated():
            pipe = self.jobs.client.pipeline(transaction=False)
            for run_id in run_ids:
                pipe.hgetall(self.keys.run(run_id))
            rows = pipe.execute()
        return {run_id: self._run(h) for run_id, h in zip(run_ids, rows, strict=True) if h}

    # -- control -----------------------------------------------------------------------------

    def cancel(self, run_id: str) -> Run:
        """Cancel every job of the run that has not ended (202 even if none is left: the
        run's state says what it ended as)."""
        got = self.jobs._call("run_cancel", run_id)
        if got == "gone":
            raise NotFound(f"no run {run_id}")
        return self.get(run_id)

    def tenant_of(self, run_id: str) -> str:
        with translated():
            tenant = self.jobs.client.hget(self.keys.run(run_id), "tenant")
        if tenant is None:
            raise NotFound(f"no run {run_id}")
        return tenant

    def resolve(self, typed: str, *, tenant: str | None = None) -> str:
        """The run id `typed` names: a whole id as it is (not read), else a unique prefix of
        8 characters or more among `tenant`'s runs (None: every run's). NotFound, or
        Ambiguous listing some matches with their states (farm.store.ids)."""
        return resolve_id(self.jobs.client, self.keys.run_ids, "run", typed, tenant=tenant, read=self._owners)

    def _owners(self, run_ids: list[str]) -> list[tuple[str, str] | None]:
        with translated():
            pipe = self.jobs.client.pipeline(transaction=False)
            for run_id in run_ids:
                pipe.hgetall(self.keys.run(run_id))
            rows = pipe.execute()
        return [(h["tenant"], self._run(h).state.value) if h else None for h in rows]
