"""RunStore: runs in Redis. A run is its jobs, created in one script call (all or none), and
a hash that counts them as they end; its state is derived from its jobs' (models.run_state).

Invariants (enforced by the scripts, tested against a real server):
- Every job of a run exists from the moment the run does, and carries the run's id.
- A run ends exactly once, when its last job ends: its outcome, metrics and webhook are
  written then, in the same step as that job's end (lib.lua `run_job_ended`).
- A tenant has at most one run in a supersede group that has not ended: a new one cancels
  the others' unfinished jobs first.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from farm.errors import Conflict, NotFound
from farm.models import JobState, Run, RunSpec, RunState, Supersede, rfc3339, run_state
from farm.store.client import translated
from farm.store.jobs import JobStore
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
    def _args(spec: RunSpec, tenant: str, jobs: list[dict[str, str]], idempotency_key: str | None) -> str:
        """The run_submit script's argument; `jobs` are the jobs' fields (JobStore._enqueue_fields)."""
        body = spec.model_dump_json()
        return json.dumps(
            {
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

    def submit(self, spec: RunSpec, tenant: str, jobs: list[dict[str, str]], *, idempotency_key: str | None = None) -> SubmittedRun:
        """Queue every job of the run in one step. With an idempotency key, a repeat of the
        same body within 24 h gets the first run back (created=False); the same key with
        another body is a Conflict."""
        got = self.jobs._call("run_submit", self._args(spec, tenant, jobs, idempotency_key))
        return self._submitted(got)

    async def asubmit(self, spec: RunSpec, tenant: str, jobs: list[dict[str, str]], *, idempotency_key: str | None = None) -> SubmittedRun:
        """`submit` on the asyncio client (the API's path)."""
        with translated():
            got = await self.jobs._scripts.acall("run_submit", self._args(spec, tenant, jobs, idempotency_key))
            outcome, run_id, *_ = got
            if outcome == "conflict":
                raise Conflict(f"Idempotency-Key already used for run {run_id} with a different body")
            return SubmittedRun(await self.aget(run_id), created=outcome == "created")

    def _submitted(self, got: list[Any]) -> SubmittedRun:
        outcome, run_id, *_ = got
        if outcome == "conflict":
            raise Conflict(f"Idempotency-Key already used for run {run_id} with a different body")
        return SubmittedRun(self.get(run_id), created=outcome == "created")

    # -- read --------------------------------------------------------------------------------

    _JOB_FIELDS = ("state", "started_at", "finished_at")

    def get(self, run_id: str) -> Run:
        with translated():
            h = self.jobs.client.hgetall(self.keys.run(run_id))
            if not h:
                raise NotFound(f"no run {run_id}")
            pipe = self.jobs.client.pipeline(transaction=False)
            ids = json.loads(h["jobs"])
            for job_id in ids:
                pipe.hmget(self.keys.job(job_id), *self._JOB_FIELDS)
            return self._run(h, ids, pipe.execute())

    async def aget(self, run_id: str) -> Run:
        assert self.jobs.aclient is not None
        with translated():
            h = await self.jobs.aclient.hgetall(self.keys.run(run_id))
            if not h:
                raise NotFound(f"no run {run_id}")
            pipe = self.jobs.aclient.pipeline(transaction=False)
            ids = json.loads(h["jobs"])
            for job_id in ids:
                pipe.hmget(self.keys.job(job_id), *self._JOB_FIELDS)
            return self._run(h, ids, await pipe.execute())

    @staticmethod
    def _run(h: dict[str, str], ids: list[str], rows: list[list[str | None]]) -> Run:
        """A run from its hash and its jobs' (state, started_at, finished_at); a job purged
        by retention before its run is left out of the counts."""
        states = [JobState(r[0]) for r in rows if r[0]]
        starts = [int(r[1]) for r in rows if r[0] and r[1]]
        counts = {s: 0 for s in JobState}
        for s in states:
            counts[s] += 1
        state = RunState(h["outcome"]) if h.get("outcome") else run_state(states, started=bool(starts))
        return Run(
            id=h["id"],
            tenant=h["tenant"],
            name=h["name"],
            labels=json.loads(h.get("labels") or "{}"),
            supersede=Supersede(group=h["group"]) if h.get("group") else None,
            state=state,
            counts=counts,
            jobs=ids,
            created_at=rfc3339(int(h["created_at"])),
            started_at=rfc3339(min(starts)) if starts else None,
            finished_at=rfc3339(_ms(h.get("finished_at"))),
            superseded_by=h.get("superseded_by") or None,
            callback_url=h.get("callback") or None,
            webhook=h.get("webhook") or None,  # type: ignore[arg-type]
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
        found = {}
        for run_id in run_ids:
            try:
                found[run_id] = self.get(run_id)
            except NotFound:
                pass  # purged between the index and the read
        return found

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
