"""What a route may ask for, as `Annotated` aliases: the one way handlers reach the app's
parts (no `request.app.state` in a route). Each dependency only reads app.state (no I/O),
so they are async: FastAPI calls them on the event loop, without a thread-pool hop. JobId
and RunId are the path's id as the store knows it: a whole id as given (no I/O either), a
prefix looked up among the caller's (farm.store.ids) in a worker thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from farm.addresses import Resolver
from farm.api.auth import Principal, principal
from farm.api.gate import Followers
from farm.artifacts import DirectoryStore
from farm.settings import Settings, TenantConfig
from farm.store.cache_index import CacheIndex
from farm.store.executors import ExecutorRegistry
from farm.store.history import DemandHistory
from farm.store.ids import ID_LENGTH, MIN_PREFIX, PATTERN, is_whole
from farm.store.jobs import JobStore
from farm.store.policies import PolicyStore
from farm.store.runs import RunStore


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _jobs(request: Request) -> JobStore:
    return request.app.state.store


async def _runs(request: Request) -> RunStore:
    return request.app.state.runs


async def _registry(request: Request) -> ExecutorRegistry:
    return request.app.state.registry


async def _policies(request: Request) -> PolicyStore:
    return request.app.state.policies


async def _demand_history(request: Request) -> DemandHistory:
    return request.app.state.demand_history


async def _caches(request: Request) -> CacheIndex:
    return request.app.state.caches


async def _artifacts(request: Request) -> DirectoryStore:
    return request.app.state.artifacts


async def _tenant(request: Request, who: Annotated[Principal, Depends(principal)]) -> TenantConfig | None:
    """The caller's tenant settings (None for the admin, or a tenant without any)."""
    return request.app.state.tenants.get(who.tenant)


async def _metrics(request: Request) -> CollectorRegistry:
    return request.app.state.metrics


@dataclass(frozen=True)
class Caller:
    """Who submits and what under: the caller, its tenant's settings, the farm's settings,
    the job store and the resolver of git hosts, as one dependency (a submit is the hot path:
    each dependency FastAPI resolves costs the request time)."""

    who: Principal
    tenant: TenantConfig | None
    config: Settings
    jobs: JobStore
    resolve: Resolver


async def _caller(request: Request, who: Annotated[Principal, Depends(principal)]) -> Caller:
    state = request.app.state
    return Caller(who, state.tenants.get(who.tenant), state.settings, state.store, state.resolve)


async def _resolver(request: Request) -> Resolver:
    return request.app.state.resolve


async def _stopping(request: Request) -> threading.Event:
    return request.app.state.stopping


async def _followers(request: Request) -> Followers:
    return request.app.state.followers


def _id_param(kind: str) -> Any:
    """The path parameter of a job's or run's id. The schema says what names one; any other
    value is answered as an id nobody has (404), as before prefixes were taken."""
    return Path(
        description=f"the {kind}'s id ({ID_LENGTH} hex characters), or its first {MIN_PREFIX} or more when no other "
        f"{kind} of the caller's begins with them (else a 409 lists those that do)",
        json_schema_extra={"minLength": MIN_PREFIX, "maxLength": ID_LENGTH, "pattern": PATTERN},
    )


async def _job_id(request: Request, who: Annotated[Principal, Depends(principal)],
                  job_id: Annotated[str, _id_param("job")]) -> str:  # fmt: skip
    if is_whole(job_id):
        return job_id
    return await run_in_threadpool(request.app.state.store.resolve, job_id, tenant=who.scope)


async def _run_id(request: Request, who: Annotated[Principal, Depends(principal)],
                  run_id: Annotated[str, _id_param("run")]) -> str:  # fmt: skip
    if is_whole(run_id):
        return run_id
    return await run_in_threadpool(request.app.state.runs.resolve, run_id, tenant=who.scope)


# Shared by the routers that submit (jobs, runs), which import no other router.
def queue_quota(config: Settings, tenant: TenantConfig | None, who: Principal) -> int | None:
    """The most jobs the caller may have queued: the tenant's own, else the setting; the
    admin has none."""
    if who.admin:
        return None
    return tenant.max_queued if tenant is not None and tenant.max_queued else config.api.max_queued_per_tenant


Who = Annotated[Principal, Depends(principal)]
Config = Annotated[Settings, Depends(_settings)]
Jobs = Annotated[JobStore, Depends(_jobs)]
Runs = Annotated[RunStore, Depends(_runs)]
Registry = Annotated[ExecutorRegistry, Depends(_registry)]
Policies = Annotated[PolicyStore, Depends(_policies)]
History = Annotated[DemandHistory, Depends(_demand_history)]
Caches = Annotated[CacheIndex, Depends(_caches)]
Artifacts = Annotated[DirectoryStore, Depends(_artifacts)]
Tenant = Annotated[TenantConfig | None, Depends(_tenant)]
Stopping = Annotated[threading.Event, Depends(_stopping)]
Submitter = Annotated[Caller, Depends(_caller)]
Following = Annotated[Followers, Depends(_followers)]
Lookup = Annotated[Resolver, Depends(_resolver)]
MetricsRegistry = Annotated[CollectorRegistry, Depends(_metrics)]
JobId = Annotated[str, Depends(_job_id)]
RunId = Annotated[str, Depends(_run_id)]
