"""/v1/pools: pools, their capacity policies (admin-only changes, versioned, audited) and
the autoscaler's decisions."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import TypeAdapter

from farm.api.auth import Principal, principal
from farm.api.errors import COMMON, CONFLICT, FORBIDDEN, NOT_FOUND
from farm.api.gate import ADMIN_ONLY
from farm.api.public import DecisionsPublic, PolicyHistoryPublic, PolicyPublic, PoolsPublic
from farm.autoscale.policy import LivePolicy
from farm.errors import Forbidden, NotFound
from farm.queue import summarize

router = APIRouter(prefix="/v1/pools", tags=["pools"], responses=COMMON)
Who = Annotated[Principal, Depends(principal)]
_POLICY: TypeAdapter = TypeAdapter(LivePolicy)


def _pool(request: Request, name: str) -> str:
    if name not in request.app.state.settings.pools:
        raise NotFound(f"no pool {name}")
    return name


def _shown(stored: Any) -> dict[str, Any]:
    return {"version": stored.version, "policy": stored.policy, "updated_by": stored.by, "updated_at": stored.at}


@router.get("", response_model=PoolsPublic)
def list_pools(request: Request, who: Who) -> dict[str, Any]:
    st = request.app.state
    pools = []
    for summary in summarize(st.store, st.registry, st.settings.pools):
        pools.append({**asdict(summary), "policy": _shown(st.policies.get(summary.name))})
    return {"pools": pools}


@router.get("/{name}/policy", response_model=PolicyPublic, responses=NOT_FOUND)
def get_policy(name: str, request: Request, who: Who) -> dict[str, Any]:
    return _shown(request.app.state.policies.get(_pool(request, name)))


@router.put(
    "/{name}/policy",
    response_model=PolicyPublic,
    responses={**NOT_FOUND, **FORBIDDEN, **CONFLICT},
    openapi_extra={ADMIN_ONLY: True},
)
def put_policy(
    name: str,
    body: LivePolicy,
    request: Request,
    who: Who,
    if_match: Annotated[str, Header(pattern=r"^[0-9]+$", description="the version being replaced")] = None,  # type: ignore[assignment]
) -> dict[str, Any]:
    """Replace the pool's policy (admin token only). With If-Match, a change based on a
    stale version is refused with 409."""
    if not who.admin:
        raise Forbidden("changing a capacity policy needs the admin token")
    policy = _POLICY.dump_python(body, mode="json")
    stored = request.app.state.policies.put(
        _pool(request, name), policy, by=who.tenant, expected_version=int(if_match) if if_match else None
    )
    return _shown(stored)


@router.get("/{name}/policy/history", response_model=PolicyHistoryPublic, responses=NOT_FOUND)
def policy_history(name: str, request: Request, who: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    return {"changes": request.app.state.policies.history(_pool(request, name), limit)}


@router.get("/{name}/decisions", response_model=DecisionsPublic, responses=NOT_FOUND)
def decisions(name: str, request: Request, who: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    return {"decisions": request.app.state.policies.decisions(_pool(request, name), limit)}
