"""/v1/caches: a tenant's dependency cache entries (its own only), and deleting them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from farm.api.auth import Principal
from farm.api.deps import Caches, Config, Who
from farm.api.errors import COMMON, FORBIDDEN, NOT_FOUND
from farm.api.gate import acted_on
from farm.api.public import CachesDeleted, CachesPublic
from farm.errors import NotFound
from farm.roles import Role, needs

router = APIRouter(prefix="/v1/caches", tags=["caches"], responses=COMMON)


def _tenant(who: Principal, tenant: str | None) -> str:
    """A tenant sees its own caches; the admin names the tenant (default: its own)."""
    return tenant if who.admin and tenant else who.tenant


@router.get("", openapi_extra=needs(Role.VIEWER), response_model=CachesPublic)
def list_caches(who: Who, index: Caches, config: Config, tenant: str | None = None, key_prefix: str = "") -> dict[str, Any]:
    name = _tenant(who, tenant)
    entries = [e.shown() for e in index.entries(name) if e.key.startswith(key_prefix)]
    cache = config.cache
    return {"tenant": name, "entries": entries, "bytes": index.bytes_used(name), "quota_bytes": cache.quota_bytes,
            "protected_reserve_bytes": int(cache.quota_bytes * cache.protected_share)}  # fmt: skip


@router.delete("/{key:path}", openapi_extra=needs(Role.MAINTAINER, "cache.delete"), response_model=CachesDeleted, responses={**NOT_FOUND, **FORBIDDEN})
def delete_cache(
    request: Request, key: str, who: Who, index: Caches, tenant: str | None = None,
    ref: Annotated[str | None, Query(description="only this ref's entry")] = None, repo: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Delete the tenant's entries with this key (every repository, tier and ref unless narrowed)."""
    name = _tenant(who, tenant)
    acted_on(request.scope, name)
    ids = [e.id for e in index.entries(name)
           if e.key == key and (ref is None or e.scope.ref == ref) and (repo is None or e.scope.repo == repo)]  # fmt: skip
    if not ids:
        raise NotFound(f"no cache entry with key {key}")
    return {"deleted": index.delete(ids)}
