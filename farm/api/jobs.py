"""/v1/jobs: submit, read, list, cancel, and the log."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from farm import secrets
from farm.api.auth import Principal, principal
from farm.artifacts import safe_name
from farm.errors import InvalidInput, NotFound
from farm.models import ArtifactInfo, Job, JobSpec, JobState
from farm.store.jobs import JobStore, Submitted
from farm.webhooks import check_callback

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


class JobsPage(BaseModel):
    jobs: list[Job]
    next_cursor: str | None


async def store(request: Request) -> JobStore:
    return request.app.state.store


Who = Annotated[Principal, Depends(principal)]
Store = Annotated[JobStore, Depends(store)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Job,
    responses={200: {"model": Job, "description": "An earlier submit with this Idempotency-Key made the job"}},
)
async def submit(
    spec: JobSpec,
    request: Request,
    response: Response,
    who: Who,
    jobs: Store,
    idempotency_key: Annotated[str | None, Header(max_length=200, pattern=r"^[\x21-\x7e]+$")] = None,
) -> Job:
    pools = request.app.state.settings.pools
    if spec.pool not in pools:
        raise InvalidInput(f"unknown pool {spec.pool!r}; pools are: {', '.join(pools)}", ("body", "pool"))
    got = await _submit(request, who, jobs, spec, idempotency_key=idempotency_key)
    if not got.created:
        response.status_code = status.HTTP_200_OK
    return got.job


async def _submit(request: Request, who: Principal, jobs: JobStore, spec: JobSpec, **kw: Any) -> Submitted:
    tenant = request.app.state.tenants.get(who.tenant)
    check_callback(spec.callback_url, tenant)
    return await jobs.asubmit(spec, who.tenant, weight=who.weight, secrets=secrets.resolve(spec, tenant), tier=who.tier, **kw)


@router.post("/{job_id}/rerun", status_code=status.HTTP_201_CREATED, response_model=Job)
async def rerun_job(job_id: str, request: Request, who: Who, jobs: Store) -> Job:
    """Submit the same spec again as a new job linked to this one (rerun_of)."""
    spec = await run_in_threadpool(_spec_to_rerun, jobs, who, job_id)
    return (await _submit(request, who, jobs, spec, rerun_of=job_id)).job


def _spec_to_rerun(jobs: JobStore, who: Principal, job_id: str) -> JobSpec:
    who.check_can_see(jobs.get(job_id))
    return jobs.raw_spec(job_id)


@router.get("", response_model=JobsPage)
def list_jobs(
    who: Who,
    jobs: Store,
    state: JobState | None = None,
    pool: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]+$")] = None,
) -> JobsPage:
    page, nxt = jobs.list(tenant=who.scope, state=state, pool=pool, limit=limit, cursor=int(cursor) if cursor else None)
    return JobsPage(jobs=page, next_cursor=None if nxt is None else str(nxt))


@router.get("/{job_id}", response_model=Job)
def get_job(job_id: str, who: Who, jobs: Store) -> Job:
    job = jobs.get(job_id)
    who.check_can_see(job)
    return job


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=Job)
def cancel_job(job_id: str, who: Who, jobs: Store) -> Job:
    who.check_can_see(jobs.get(job_id))
    return jobs.cancel(job_id)


@router.get("/{job_id}/artifacts", response_model=list[ArtifactInfo])
def list_artifacts(job_id: str, who: Who, jobs: Store) -> list[ArtifactInfo]:
    job = jobs.get(job_id)
    who.check_can_see(job)
    return job.artifacts


@router.get("/{job_id}/artifacts/{name:path}", response_class=StreamingResponse)
def get_artifact(job_id: str, name: str, request: Request, who: Who, jobs: Store) -> StreamingResponse:
    job = jobs.get(job_id)
    who.check_can_see(job)
    info = next((a for a in job.artifacts if a.name == safe_name(name)), None)
    if info is None:
        raise NotFound(f"no artifact {name!r} for job {job_id}")
    f = request.app.state.artifacts.open(job.id, job.attempt, info.name)

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


def _follow(jobs: JobStore, job_id: str) -> Iterator[str]:
    after = "-"
    while True:
        chunks = jobs.read_log(job_id, after, block_ms=1000)
        for c in chunks:
            if c.end_state is not None:
                return
            if c.data:
                yield c.data
        if chunks:
            after = chunks[-1].entry_id
        elif not jobs.exists(job_id):
            return  # purged while we followed


@router.get("/{job_id}/log", response_class=PlainTextResponse)
def get_log(job_id: str, who: Who, jobs: Store, follow: bool = False) -> Response:
    who.check_can_see(jobs.get(job_id))
    if follow:
        return StreamingResponse(_follow(jobs, job_id), media_type="text/plain; charset=utf-8")
    parts, after = [], "-"
    while chunks := jobs.read_log(job_id, after, count=1000):
        parts.extend(c.data for c in chunks if c.data)
        after = chunks[-1].entry_id
    return PlainTextResponse("".join(parts))
