"""/v1/caches: a tenant's dependency cache entries (its own only), and deleting them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from farm.api.auth import Principal, principal
from farm.api.errors import COMMON, NOT_FOUND
from farm.api.public import CachesDeleted, CachesPublic
from farm.errors import NotFound

router = APIRouter(prefix="/v1/caches", tags=["caches"], responses=COMMON)
Who = Annotated[Principal, Depends(principal)]


def _tenant(who: Principal, tenant: str | None) -> str:
    """A tenant sees its own caches; the admin names the tenant (default: its own)."""
    return tenant if who.admin and tenant else who.tenant


@router.get("", response_model=CachesPublic)
def list_caches(request: Request, who: Who, tenant: str | None = None, key_prefix: str = "") -> dict[str, Any]:
    name = _tenant(who, tenant)
    index = request.app.state.caches
    entries = [e.shown() for e in index.entries(name) if e.key.startswith(key_prefix)]
    cache = request.app.state.settings.cache
    return {"tenant": name, "entries": entries, "bytes": index.bytes_used(name), "quota_bytes": cache.quota_bytes,
            "protected_reserve_bytes": int(cache.quota_bytes * cache.protected_share)}  # fmt: skip


@router.delete("/{key:path}", response_model=CachesDeleted, responses=NOT_FOUND)
def delete_cache(
    key: str, request: Request, who: Who, tenant: str | None = None,
    ref: Annotated[str | None, Query(description="only this ref's entry")] = None, repo: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Delete the tenant's entries with this key (every repository, tier and ref unless narrowed)."""
    index = request.app.state.caches
    ids = [e.id for e in index.entries(_tenant(who, tenant))
           if e.key == key and (ref is None or e.scope.ref == ref) and (repo is None or e.scope.repo == repo)]  # fmt: skip
    if not ids:
        raise NotFound(f"no cache entry with key {key}")
    return {"deleted": index.delete(ids)}
