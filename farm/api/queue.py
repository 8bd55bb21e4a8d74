"""/v1/queue: each pool's queue and executors, and the parts of the farm restarted so far;
/v1/executors: every executor and where it runs (the admin: node names and addresses are
the farm's, not a tenant's)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from farm.api.auth import principal
from farm.api.deps import Config, Jobs, Registry
from farm.api.errors import COMMON, FORBIDDEN, NOT_FOUND
from farm.api.public import ExecutorsPublic, QueuePublic
from farm.errors import NotFound
from farm.models import rfc3339
from farm.roles import Role, needs
from farm.store.health import degraded
from farm.store.nodes import NodeBook
from farm.store.summary import summarize

router = APIRouter(prefix="/v1", tags=["queue"], dependencies=[Depends(principal)], responses=COMMON)


@router.get("/executors", openapi_extra=needs(Role.ADMIN), response_model=ExecutorsPublic, responses={**FORBIDDEN, **NOT_FOUND})
def executors(config: Config, registry: Registry, pool: Annotated[str | None, Query(max_length=63)] = None) -> dict[str, Any]:
    if pool is not None and pool not in config.pools:
        raise NotFound(f"no pool {pool}")
    found = []
    for name in [pool] if pool else config.pools:
        for e in registry.list(name):
            found.append({"id": e.id, "pool": e.pool, "state": e.state.value, "job": e.job, "seen_at": rfc3339(e.seen_ms),
                          **{k: int(v) if k == "pid" else v for k, v in e.where.items()}})  # fmt: skip
    return {"executors": found}


@router.get("/queue", openapi_extra=needs(Role.VIEWER), response_model=QueuePublic)
def queue(config: Config, jobs: Jobs, registry: Registry) -> dict[str, Any]:
    pools = [asdict(p) for p in summarize(jobs, registry, config.pools)]
    return {"pools": pools, "restarts": NodeBook(jobs.client, jobs.keys).restarts(), "degraded": degraded(jobs.client)}
