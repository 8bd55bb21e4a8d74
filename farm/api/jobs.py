"""/v1/jobs: submit, read, list, cancel, and the log."""

from __future__ import annotations

import base64
import functools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from farm import permissions, secrets
from farm.addresses import Resolver
from farm.api.auth import Principal
from farm.api.deps import Artifacts, Config, Following, JobId, Jobs, Lookup, Stopping, Submitter, Tenant, Who, queue_quota
from farm.api.errors import AMBIGUOUS, AMBIGUOUS_OR_CONFLICT, COMMON, CONFLICT, FORBIDDEN, NOT_FOUND
from farm.api.gate import FollowerStream, acted_on
from farm.artifacts import safe_name
from farm.errors import Forbidden, InvalidInput, NotFound
from farm.logtext import LogView
from farm.models import ArtifactInfo, Job, JobSpec, JobState, unsupported
from farm.roles import Role, needs
from farm.settings import Settings, TenantConfig
from farm.store.jobs import JobStore, Submitted
from farm.webhooks import check_callback

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=COMMON)


class JobsPage(BaseModel):
    jobs: list[Job]
    next_cursor: str | None


@router.post(
    "", openapi_extra=needs(Role.SUBMITTER, "job.submit"),
    status_code=status.HTTP_201_CREATED,
    response_model=Job,
    responses={200: {"model": Job, "description": "An earlier submit with this Idempotency-Key made the job"},
               **FORBIDDEN, **CONFLICT},
)
async def submit(
    spec: JobSpec,
    response: Response,
    caller: Submitter,
    idempotency_key: Annotated[str, Header(max_length=200, pattern=r"^[\x21-\x7e]+$")] = None,  # type: ignore[assignment]
) -> Job:
    config = caller.config
    if spec.pool not in config.pools:
        raise InvalidInput(f"unknown pool {spec.pool!r}; pools are: {', '.join(config.pools)}", ("body", "pool"))
    if spec.needs:
        raise InvalidInput("needs names jobs of the same run: submit the jobs together as a run (POST /v1/runs)", ("body", "needs"))
    got = await _submit(config, caller.tenant, caller.who, caller.jobs, spec, caller.resolve, idempotency_key=idempotency_key)
    if not got.created:
        response.status_code = status.HTTP_200_OK
    return got.job


async def _submit(
    config: Settings, tenant: TenantConfig | None, who: Principal, jobs: JobStore, spec: JobSpec, resolve: Resolver, **kw: Any
) -> Submitted:
    for loc, why in unsupported(spec, config.executors.runtime):
        raise InvalidInput(why, ("body", *loc))  # a setting the runtime would ignore: say so now
    check = functools.partial(permissions.check_job, spec, tenant, admin=who.admin, resolve=resolve)
    exempt = permissions.source_exempt(spec, tenant, admin=who.admin)
    if spec.source is not None and not exempt:
        await run_in_threadpool(check)  # a git host's name is looked up (farm.api.resolver): not on the loop
    else:
        check()
    check_callback(spec.callback_url, tenant)
    # The exemption goes with the job (never in its spec): the executor does not know tenants.
    return await jobs.asubmit(spec, who.tenant, weight=who.weight, secrets=secrets.resolve(spec, tenant), tier=who.tier,
                              max_queued=queue_quota(config, tenant, who), source_exempt=exempt, **kw)  # fmt: skip


@router.post("/{job_id}/rerun", openapi_extra=needs(Role.SUBMITTER, "job.rerun"), status_code=status.HTTP_201_CREATED, response_model=Job,
             responses={**NOT_FOUND, **FORBIDDEN, **AMBIGUOUS})  # fmt: skip
async def rerun_job(request: Request, job_id: JobId, who: Who, jobs: Jobs, config: Config, tenant: Tenant, resolve: Lookup) -> Job:
    """Submit the same spec again as a new job linked to this one (rerun_of): checked as a
    submit is, by the caller's permissions now (the exemption is derived again, not copied)."""
    spec, owner = await run_in_threadpool(_spec_to_rerun, jobs, who, job_id)
    acted_on(request.scope, owner)  # the new job is the caller's; the one rerun, its tenant's
    return (await _submit(config, tenant, who, jobs, spec, resolve, rerun_of=job_id)).job


def _spec_to_rerun(jobs: JobStore, who: Principal, job_id: str) -> tuple[JobSpec, str]:
    """The spec to submit again, and whose job it was."""
    job = jobs.get(job_id)
    who.check_can_see(job)
    return jobs.raw_spec(job_id), job.tenant


@router.get("", openapi_extra=needs(Role.VIEWER), response_model=JobsPage, responses=FORBIDDEN)
def list_jobs(
    who: Who,
    jobs: Jobs,
    state: JobState | None = None,
    pool: Annotated[str | None, Query(max_length=63)] = None,
    tenant: Annotated[str | None, Query(max_length=63, description="one tenant's jobs (the admin; a tenant sees its own)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> JobsPage:
    if tenant is not None and not who.admin and tenant != who.tenant:
        raise Forbidden("a tenant lists its own jobs only")
    scope = tenant if who.admin else who.tenant
    page, nxt = jobs.list(tenant=scope, state=state, pool=pool, limit=limit, cursor=int(cursor) if cursor else None)
    return JobsPage(jobs=page, next_cursor=None if nxt is None else str(nxt))


@router.get("/{job_id}", openapi_extra=needs(Role.VIEWER), response_model=Job, responses={**NOT_FOUND, **AMBIGUOUS})
def get_job(job_id: JobId, who: Who, jobs: Jobs) -> Job:
    job = jobs.get(job_id)
    who.check_can_see(job)
    return job


@router.post("/{job_id}/cancel", openapi_extra=needs(Role.SUBMITTER, "job.cancel"), status_code=status.HTTP_202_ACCEPTED, response_model=Job,
             responses={**NOT_FOUND, **FORBIDDEN, **AMBIGUOUS_OR_CONFLICT})  # fmt: skip
def cancel_job(job_id: JobId, who: Who, jobs: Jobs) -> Job:
    who.check_can_see(jobs.get(job_id))
    return jobs.cancel(job_id)


@router.get("/{job_id}/artifacts", openapi_extra=needs(Role.VIEWER), response_model=list[ArtifactInfo], responses={**NOT_FOUND, **AMBIGUOUS})
def list_artifacts(job_id: JobId, who: Who, jobs: Jobs) -> list[ArtifactInfo]:
    job = jobs.get(job_id)
    who.check_can_see(job)
    return job.artifacts


_ARTIFACT = {
    "description": "The artifact's bytes",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "headers": {
        "Content-Disposition": {"description": "attachment, with the file's name", "required": True, "schema": {"type": "string"}},
        "Digest": {"description": "sha-256=<base64 of the artifact's SHA-256>", "required": True, "schema": {"type": "string"}},
    },
}


@router.get("/{job_id}/artifacts/{name:path}", openapi_extra=needs(Role.VIEWER), response_class=StreamingResponse,
            responses={200: _ARTIFACT, **NOT_FOUND, **AMBIGUOUS})  # fmt: skip
def get_artifact(job_id: JobId, name: str, who: Who, jobs: Jobs, artifacts: Artifacts) -> StreamingResponse:
    job = jobs.get(job_id)
    who.check_can_see(job)
    info = next((a for a in job.artifacts if a.name == safe_name(name)), None)
    if info is None:
        raise NotFound(f"no artifact {name!r} for job {job_id}")
    f = artifacts.open(job.id, job.attempt, info.name)

    def chunks() -> Iterator[bytes]:
        with f:
            while chunk := f.read(1 << 20):
                yield chunk

    filename = info.name.rsplit("/", 1)[-1]
    headers = {
        "Content-Length": str(info.size),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
        "Digest": f"sha-256={base64.b64encode(bytes.fromhex(info.sha256)).decode()}",
    }
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)


SNAPSHOT = 500  # log entries a follow reads at a time


async def _follow(
    jobs: JobStore, job_id: str, *, offset: int, max_s: float, stopping: threading.Event, timestamps: bool
) -> AsyncIterator[str]:
    """The log from `offset` on, as it grows, until the job ends (or is purged, or the
    follow outlives `followers.max_s`). Runs on the event loop: a client that hangs up
    cancels it (Starlette listens for the disconnect), and no thread waits on Redis."""
    after, skip = "-", offset
    view = LogView(await jobs.alog_cuts(job_id), timestamps=timestamps)
    # Of the attempt being followed: its output bytes this follow received, and those a
    # marker already stood for. A log over its cap loses the oldest output after its head as
    # it grows; a follow that was behind never gets those entries, which were the very next
    # ones it would have read. So when news comes, the entries left and the attempt's
    # output bytes are read in one step, and what is neither received, marked nor still
    # there was cut right here: a marker says so before the rest (LogView.late_cut).
    attempt, received, marked = None, 0, 0
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        if stopping.is_set():
            yield "[farm] the server is stopping; follow again with ?offset= to go on\n"
            return
        if not await jobs.aread_log(job_id, after, block_ms=500, count=1):  # wait for news
            if not await jobs.aexists(job_id):
                return  # purged while we followed
            continue
        chunks, position = await jobs.alog_snapshot(job_id, after, count=SNAPSHOT)
        if position is None:
            return
        ours = [c for c in chunks if c.data and not c.kept and c.attempt == attempt]
        if attempt is not None and position.attempt == attempt and len(chunks) < SNAPSHOT and all(
            c.attempt in (attempt, None) for c in chunks
        ):
            missed = position.log_bytes - received - marked - sum(len(c.data.encode()) for c in ours if c.data)
            if missed > 0:
                marked += missed
                data, skip = _skip(view.late_cut(after, missed), skip)
                if data:
                    yield data
        for c in chunks:
            if c.end_state is not None:
                return
            if c.attempt != attempt:
                attempt, received, marked = c.attempt, 0, 0
            if c.data:
                if not c.kept:
                    received += len(c.data.encode())
                marked += view.cuts.get(c.entry_id, 0)
                data, skip = _skip(view.feed(c.entry_id, c.data), skip)
                if data:
                    yield data
        if chunks:
            after = chunks[-1].entry_id
    yield f"[farm] log follow ended after {max_s:.0f}s; follow again with ?offset= to go on\n"


def _skip(data: str, skip: int) -> tuple[str, int]:
    """Drop the first `skip` bytes (UTF-8) of the log; returns what is left and the rest to skip."""
    if skip <= 0:
        return data, 0
    raw = data.encode()
    if len(raw) <= skip:
        return "", skip - len(raw)
    return raw[skip:].decode(errors="replace"), 0


@router.get("/{job_id}/log", openapi_extra=needs(Role.VIEWER), response_class=PlainTextResponse, responses={**NOT_FOUND, **AMBIGUOUS})
async def get_log(
    job_id: JobId,
    who: Who,
    jobs: Jobs,
    followers: Following,
    stopping: Stopping,
    follow: bool = False,
    offset: Annotated[int, Query(ge=0, description="bytes of the log to skip (where an earlier read ended)")] = 0,
    timestamps: Annotated[bool, Query(description="prefix each line with the time it was written")] = False,
) -> Response:
    job = await run_in_threadpool(jobs.get, job_id)
    who.check_can_see(job)
    if follow:
        followers.admit(who.tenant)
        stream = _follow(jobs, job_id, offset=offset, max_s=followers.max_s, stopping=stopping, timestamps=timestamps)
        return FollowerStream(stream, on_close=lambda: followers.leave(who.tenant), media_type="text/plain; charset=utf-8")
    text = await run_in_threadpool(_whole_log, jobs, job_id, timestamps)
    return PlainTextResponse(text.encode()[offset:].decode(errors="replace") if offset else text)


def _whole_log(jobs: JobStore, job_id: str, timestamps: bool) -> str:
    view = LogView(jobs.log_cuts(job_id), timestamps=timestamps)
    parts, after = [], "-"
    while chunks := jobs.read_log(job_id, after, count=1000):
        parts.extend(view.feed(c.entry_id, c.data) for c in chunks if c.data)
        after = chunks[-1].entry_id
    return "".join(parts)
