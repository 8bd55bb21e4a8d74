"""/v1/runs: a CI pipeline's jobs submitted (all or none), read, listed and cancelled as one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from farm import permissions, secrets
from farm.addresses import Resolver
from farm.api.auth import Principal
from farm.api.deps import Config, Lookup, RunId, Runs, Tenant, Who, queue_quota
from farm.api.errors import AMBIGUOUS, COMMON, CONFLICT, FORBIDDEN, NOT_FOUND
from farm.api.resolver import budgeted
from farm.errors import Forbidden, InvalidInput, NotFound
from farm.models import Run, RunSpec, RunState, unsupported
from farm.roles import Role, needs
from farm.settings import Settings, TenantConfig
from farm.store.jobs import JobStore
from farm.store.runs import RunStore
from farm.webhooks import check_callback

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=COMMON)


class RunsPage(BaseModel):
    runs: list[Run]
    next_cursor: str | None


def _check(settings: Settings, tenant: TenantConfig | None, who: Principal, spec: RunSpec, resolve: Resolver) -> list[dict[str, str]]:
    """Every job of the run checked as a job submit checks it, its errors naming the job
    (body.jobs.<i>...); returns the jobs' fields for the run's one script call. Runs in a
    worker thread: `resolve` looks git hosts up."""
    cap = settings.api.max_run_jobs
    if len(spec.jobs) > cap:
        raise InvalidInput(f"a run holds at most {cap} jobs (api.max_run_jobs); this one has {len(spec.jobs)}", ("body", "jobs"))
    resolve = budgeted(resolve)  # one bound for the run's lookups, not one per job
    check_callback(spec.callback_url, tenant)
    fields = []
    for i, job in enumerate(spec.jobs):
        at = ("body", "jobs", i)
        if job.pool not in settings.pools:
            raise InvalidInput(f"unknown pool {job.pool!r}; pools are: {', '.join(settings.pools)}", (*at, "pool"))
        for loc, why in unsupported(job, settings.executors.runtime):
            raise InvalidInput(why, (*at, *loc))
        try:
            permissions.check_job(job, tenant, admin=who.admin, resolve=resolve)
            check_callback(job.callback_url, tenant)
            resolved = secrets.resolve(job, tenant)
        except Forbidden as e:
            raise Forbidden(f"jobs[{i}]: {e.args[0]}") from e
        except InvalidInput as e:  # its path is the job's ("body", ...): put it under the run's
            raise InvalidInput(e.args[0], (*at, *e.args[1][1:])) from e
        fields.append(JobStore._enqueue_fields(job, who.tenant, weight=who.weight, secrets=resolved, tier=who.tier,
                                               source_exempt=permissions.source_exempt(job, tenant, admin=who.admin)))  # fmt: skip
    return fields


@router.post(
    "", openapi_extra=needs(Role.SUBMITTER, "run.submit"),
    status_code=status.HTTP_201_CREATED,
    response_model=Run,
    responses={200: {"model": Run, "description": "An earlier submit with this Idempotency-Key made the run"},
               **FORBIDDEN, **CONFLICT},
)  # fmt: skip
async def submit_run(
    spec: RunSpec,
    response: Response,
    who: Who,
    runs: Runs,
    config: Config,
    tenant: Tenant,
    resolve: Lookup,
    idempotency_key: Annotated[str, Header(max_length=200, pattern=r"^[\x21-\x7e]+$")] = None,  # type: ignore[assignment]
) -> Run:
    """Queue every job of the run in one step: all of them, or none (a bad job is a 422
    naming its index). `supersede` cancels the tenant's older runs in the same group."""
    # Checking 500 jobs is work: in the thread pool, not on the loop other tenants share.
    fields = await run_in_threadpool(_check, config, tenant, who, spec, resolve)
    got = await runs.asubmit(spec, who.tenant, fields, idempotency_key=idempotency_key, max_queued=queue_quota(config, tenant, who))
    if not got.created:
        response.status_code = status.HTTP_200_OK
    return got.run


def _visible(runs: RunStore, who: Principal, run_id: str) -> None:
    # Another tenant's run is reported as missing, not forbidden: ids don't leak.
    if not who.admin and runs.tenant_of(run_id) != who.tenant:
        raise NotFound(f"no run {run_id}")


@router.get("", openapi_extra=needs(Role.VIEWER), response_model=RunsPage, responses=FORBIDDEN)
def list_runs(
    who: Who,
    runs: Runs,
    state: RunState | None = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    tenant: Annotated[str | None, Query(max_length=63, description="one tenant's runs (the admin; a tenant sees its own)")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> RunsPage:
    """Newest first; `next_cursor` continues the listing."""
    if tenant is not None and not who.admin and tenant != who.tenant:
        raise Forbidden("a tenant lists its own runs only")
    scope = tenant if who.admin else who.tenant
    page, nxt = runs.list(tenant=scope, state=state, name=name, limit=limit, cursor=int(cursor) if cursor else None)
    return RunsPage(runs=page, next_cursor=None if nxt is None else str(nxt))


@router.get("/{run_id}", openapi_extra=needs(Role.VIEWER), response_model=Run, responses={**NOT_FOUND, **AMBIGUOUS})
def get_run(run_id: RunId, who: Who, runs: Runs) -> Run:
    """The run, its state derived from its jobs'."""
    run = runs.get(run_id)
    if not who.admin and run.tenant != who.tenant:
        raise NotFound(f"no run {run_id}")  # another tenant's run is missing, not forbidden: ids don't leak
    return run


@router.post("/{run_id}/cancel", openapi_extra=needs(Role.SUBMITTER, "run.cancel"), status_code=status.HTTP_202_ACCEPTED, response_model=Run,
             responses={**NOT_FOUND, **FORBIDDEN, **AMBIGUOUS})
async def cancel_run(run_id: RunId, who: Who, runs: Runs) -> Run:
    """Cancel every job of the run that has not ended: queued ones at once, running ones
    killed by their executors as a job cancel does."""

    def cancel() -> Run:
        _visible(runs, who, run_id)
        return runs.cancel(run_id)

    return await run_in_threadpool(cancel)
