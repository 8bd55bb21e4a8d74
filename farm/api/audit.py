"""/v1/audit: the audit trail, paged newest first, or exported as JSON lines for a SIEM
(`?format=jsonl`).

Read-only: the trail is written by the gate (farm.api.gate) and leaves only by age, so no
route here changes it. The admin reads every record (or one tenant's with `?tenant=`); a
maintainer reads its own tenant's only (another tenant's is a 403, as for jobs). Records of
tokens farm never issued have no tenant: only the admin sees them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from farm.api.auth import Principal
from farm.api.deps import Who
from farm.api.errors import COMMON, FORBIDDEN
from farm.audit import ID_PATTERN, MAX_TEXT, AuditRecord, parse_since
from farm.errors import Forbidden
from farm.roles import Role, needs
from farm.store.audit import AuditTrail

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=COMMON)


async def _trail(request: Request) -> AuditTrail:
    """The trail, with what this process's gate still holds written first (farm.api.recorder):
    a caller reads its own requests back."""
    await request.app.state.recorder.flush()
    return request.app.state.audit


Trail = Annotated[AuditTrail, Depends(_trail)]  # belongs in farm.api.deps beside the other parts


class AuditPage(BaseModel):
    records: list[AuditRecord]
    next_cursor: str | None


def _scope(who: Principal, tenant: str | None) -> str | None:
    """The tenant whose records the caller reads: the admin any (None: all), a maintainer its own."""
    if who.admin:
        return tenant
    if tenant is not None and tenant != who.tenant:
        raise Forbidden("a maintainer reads its own tenant's audit trail only")
    return who.tenant


TenantQ = Annotated[str | None, Query(max_length=63, description="one tenant's records (the admin; a maintainer reads its own)")]
ActorQ = Annotated[str | None, Query(max_length=MAX_TEXT, description="a token's id or name")]
ActionQ = Annotated[
    str | None, Query(max_length=MAX_TEXT, description='an action ("job.cancel"), or its area ("job." or "job.*")')
]
SinceQ = Annotated[
    str | None, Query(max_length=64, description='records from then on: a time ago ("30m", "1h", "7d") or an ISO 8601 time')
]


def _filters(who: Principal, tenant: str | None, actor: str | None, action: str | None, since: str | None) -> dict[str, Any]:
    since_ms = None if since is None else parse_since(since, now_ms=int(time.time() * 1000))
    return {"tenant": _scope(who, tenant), "actor": actor, "action": action, "since_ms": since_ms}


_JSONL = {
    "description": "A page of records (application/json); with `format=jsonl`, every matching record, oldest first, "
    "one JSON object a line (application/x-ndjson), for a SIEM",
    "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
}


@router.get("", openapi_extra=needs(Role.MAINTAINER), response_model=AuditPage, responses={200: _JSONL, **FORBIDDEN})
def list_audit(
    who: Who, trail: Trail, tenant: TenantQ = None, actor: ActorQ = None, action: ActionQ = None, since: SinceQ = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(pattern=ID_PATTERN, description="`next_cursor` of the page before")] = None,
    form: Annotated[Literal["json", "jsonl"], Query(alias="format", description=(
        "jsonl: the whole matching trail as JSON lines, oldest first (limit and cursor do not apply)"))] = "json",
) -> Any:  # fmt: skip
    """Records newest first. A page may hold fewer than `limit` and still have a
    `next_cursor`: a filtered page reads a bounded stretch of the trail."""
    filters = _filters(who, tenant, actor, action, since)
    if form == "jsonl":
        return _json_lines(trail.export(**filters))
    records, nxt = trail.page(limit=limit, cursor=cursor, **filters)
    return AuditPage(records=records, next_cursor=nxt)


def _json_lines(records: Iterator[AuditRecord]) -> StreamingResponse:
    """The export as a stream, up to the newest record when it began. One export is one
    content type of the listing, not a route of its own: a client generated from the
    document reads the page, and a SIEM asks for the lines."""
    first = next(records, None)  # the store's errors before the first byte are a 503, not a cut stream

    def lines() -> Iterator[str]:
        if first is not None:
            yield first.model_dump_json() + "\n"
        for record in records:
            yield record.model_dump_json() + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
