"""/v1/pools: pools, their capacity policies (admin-only changes, versioned, audited) and
the autoscaler's decisions."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import TypeAdapter

from farm.api.deps import Config, Jobs, Policies, Registry, Who
from farm.api.errors import COMMON, CONFLICT, FORBIDDEN, NOT_FOUND
from farm.api.gate import ADMIN_ONLY
from farm.api.public import DecisionsPublic, PolicyHistoryPublic, PolicyPublic, PoolsPublic
from farm.autoscale.policy import LivePolicy
from farm.errors import Forbidden, NotFound
from farm.settings import Settings
from farm.store.summary import summarize

router = APIRouter(prefix="/v1/pools", tags=["pools"], responses=COMMON)
_POLICY: TypeAdapter = TypeAdapter(LivePolicy)


def _pool(config: Settings, name: str) -> str:
    if name not in config.pools:
        raise NotFound(f"no pool {name}")
    return name


def _shown(stored: Any) -> dict[str, Any]:
    return {"version": stored.version, "policy": stored.policy, "updated_by": stored.by, "updated_at": stored.at}


@router.get("", response_model=PoolsPublic)
def list_pools(who: Who, config: Config, jobs: Jobs, registry: Registry, policies: Policies) -> dict[str, Any]:
    pools = []
    for summary in summarize(jobs, registry, config.pools):
        pools.append({**asdict(summary), "policy": _shown(policies.get(summary.name))})
    return {"pools": pools}


@router.get("/{name}/policy", response_model=PolicyPublic, responses=NOT_FOUND)
def get_policy(name: str, who: Who, config: Config, policies: Policies) -> dict[str, Any]:
    return _shown(policies.get(_pool(config, name)))


@router.put(
    "/{name}/policy",
    response_model=PolicyPublic,
    responses={**NOT_FOUND, **FORBIDDEN, **CONFLICT},
    openapi_extra={ADMIN_ONLY: True},
)
def put_policy(
    name: str,
    body: LivePolicy,
    who: Who,
    config: Config,
    policies: Policies,
    if_match: Annotated[str, Header(pattern=r"^[0-9]+$", description="the version being replaced")] = None,  # type: ignore[assignment]
) -> dict[str, Any]:
    """Replace the pool's policy (admin token only). With If-Match, a change based on a
    stale version is refused with 409."""
    if not who.admin:
        raise Forbidden("changing a capacity policy needs the admin token")
    policy = _POLICY.dump_python(body, mode="json")
    stored = policies.put(
        _pool(config, name), policy, by=who.tenant, expected_version=int(if_match) if if_match else None
    )
    return _shown(stored)


@router.get("/{name}/policy/history", response_model=PolicyHistoryPublic, responses=NOT_FOUND)
def policy_history(name: str, who: Who, config: Config, policies: Policies, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    return {"changes": policies.history(_pool(config, name), limit)}


@router.get("/{name}/decisions", response_model=DecisionsPublic, responses=NOT_FOUND)
def decisions(name: str, who: Who, config: Config, policies: Policies, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    return {"decisions": policies.decisions(_pool(config, name), limit)}
