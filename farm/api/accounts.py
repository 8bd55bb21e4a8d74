"""Accounts over the API: who am I, tenants (the admin's) and tokens (a tenant's maintainers'
for their own tenant, the admin's for all).

A token never makes a token that can do more than itself: a maintainer gives its own tenant
roles up to maintainer, and the protected tier only from a protected-tier token. A token's
secret is in the answer that creates or rotates it, and nowhere else, ever.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from farm.api.auth import Principal
from farm.api.deps import Who
from farm.api.errors import COMMON, CONFLICT, FORBIDDEN, NOT_FOUND
from farm.durations import parse_duration
from farm.errors import Forbidden, InvalidInput, NotFound
from farm.roles import WHAT, Role, needs
from farm.store.accounts import ADMIN_TENANT, Accounts

router = APIRouter(prefix="/v1", tags=["accounts"], responses=COMMON)

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
MOST_EXPIRY_S = 5 * 365 * 86400


async def _accounts(request: Request) -> Accounts:
    return request.app.state.accounts


Book = Annotated[Accounts, Depends(_accounts)]
TokenId = Annotated[str, Path(alias="id", pattern=r"^[A-Za-z0-9-]{1,40}$", description="the token's id (`farm token ls`)")]
TenantName = Annotated[str, Path(pattern=NAME, description="the tenant's name")]


class WhoAmI(BaseModel):
    tenant: str
    role: Role
    may: str = Field(description="what the role may do")
    tier: str
    token_id: str
    token_name: str


def _whoami(who: Principal) -> WhoAmI:
    return WhoAmI(tenant=who.tenant, role=who.role, may=WHAT[who.role], tier=who.tier, token_id=who.token_id, token_name=who.token_name)


@router.get("/whoami", openapi_extra=needs(Role.VIEWER), response_model=WhoAmI)
async def whoami(who: Who) -> WhoAmI:
    """The calling token: its tenant, role (and what it may do), tier, id and name."""
    return _whoami(who)


@router.post("/login", openapi_extra=needs(Role.VIEWER, "context.login"), response_model=WhoAmI)
async def login(who: Who) -> WhoAmI:
    """What `farm login` calls: `whoami`, and a line in the audit trail that a context was
    opened with this token."""
    return _whoami(who)


# -- tenants (the admin's) ------------------------------------------------------------------


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=NAME)]
    weight: Annotated[float, Field(gt=0, le=1000)] = 1.0


class TenantOut(BaseModel):
    name: str
    weight: float
    disabled: bool
    created_at_ms: int
    created_by: str
    tokens: int


class TenantsOut(BaseModel):
    tenants: list[TenantOut]


def _by(who: Principal) -> str:
    return who.token_id or who.tenant


@router.post("/tenants", openapi_extra=needs(Role.ADMIN, "tenant.create"), status_code=status.HTTP_201_CREATED,
             response_model=TenantOut, responses={**FORBIDDEN, **CONFLICT})  # fmt: skip
def create_tenant(body: TenantIn, who: Who, book: Book) -> dict[str, Any]:
    return book.create_tenant(body.name, weight=body.weight, by=_by(who))


@router.get("/tenants", openapi_extra=needs(Role.ADMIN), response_model=TenantsOut, responses=FORBIDDEN)
def list_tenants(book: Book) -> dict[str, Any]:
    return {"tenants": book.tenants()}


@router.post("/tenants/{name}/disable", openapi_extra=needs(Role.ADMIN, "tenant.disable"), response_model=TenantOut,
             responses={**FORBIDDEN, **NOT_FOUND})  # fmt: skip
def disable_tenant(name: TenantName, book: Book) -> dict[str, Any]:
    """Its tokens are refused from their next request; its jobs are left as they are."""
    return book.set_disabled(name, True)


@router.post("/tenants/{name}/enable", openapi_extra=needs(Role.ADMIN, "tenant.enable"), response_model=TenantOut,
             responses={**FORBIDDEN, **NOT_FOUND})  # fmt: skip
def enable_tenant(name: TenantName, book: Book) -> dict[str, Any]:
    return book.set_disabled(name, False)


# -- tokens ---------------------------------------------------------------------------------


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: Annotated[str | None, Field(pattern=NAME, description="default: the caller's; 'admin' for an admin token")] = None
    role: Role
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
    expires_in: Annotated[str | None, Field(max_length=20, description="e.g. 90m, 12h, 30d; none: never")] = None
    protected: bool = Field(False, description="the protected cache tier (a tenant's default and release branches)")


class TokenOut(BaseModel):
    id: str
    tenant: str
    role: str
    name: str
    tier: str
    created_at_ms: int | None
    created_by: str
    expires_at_ms: int | None
    last_used_at_ms: int | None
    revoked_at_ms: int | None


class NewToken(TokenOut):
    token: str = Field(description="the secret: shown this once, kept by farm only as a hash")


class TokensOut(BaseModel):
    tokens: list[TokenOut]


def _may_manage(who: Principal, tenant: str) -> None:
    if not who.admin and tenant != who.tenant:
        raise NotFound("no such tenant")  # another tenant's tokens are not there for a maintainer


@router.post("/tokens", openapi_extra=needs(Role.MAINTAINER, "token.create"), status_code=status.HTTP_201_CREATED,
             response_model=NewToken, responses={**FORBIDDEN, **NOT_FOUND, **CONFLICT})  # fmt: skip
def create_token(body: TokenIn, who: Who, book: Book) -> dict[str, Any]:
    """A new token. The answer holds its secret, the only time farm shows it."""
    if body.tenant is None and who.admin and body.role is not Role.ADMIN:
        raise InvalidInput(f"name the tenant the {body.role} token is for", ("body", "tenant"))
    tenant = body.tenant or (ADMIN_TENANT if body.role is Role.ADMIN and who.admin else who.tenant)
    _may_manage(who, tenant)
    if not who.role.allows(body.role):
        raise Forbidden(f"{_a(who.role)} token cannot make {_a(body.role)} token")
    if body.protected and who.tier != "protected":
        raise Forbidden("only a protected-tier token can make a protected-tier token")
    try:
        expires = parse_duration(body.expires_in, most_s=MOST_EXPIRY_S) if body.expires_in else None
    except ValueError as e:
        raise InvalidInput(str(e), ("body", "expires_in")) from None
    doc, secret = book.create_token(tenant, body.role, body.name, by=_by(who), expires_in_s=expires,
                                    tier="protected" if body.protected else "unprotected")  # fmt: skip
    return {**doc, "token": secret}


@router.get("/tokens", openapi_extra=needs(Role.MAINTAINER), response_model=TokensOut, responses={**FORBIDDEN, **NOT_FOUND})
def list_tokens(who: Who, book: Book, tenant: Annotated[str | None, Query(pattern=NAME)] = None) -> dict[str, Any]:
    """A tenant's tokens (the admin: every tenant's, or `?tenant=`); secrets are never shown."""
    if tenant is not None:
        _may_manage(who, tenant)
    return {"tokens": book.tokens(tenant if who.admin else who.tenant)}


def _a(role: Role) -> str:
    return f"{'an' if role is Role.ADMIN else 'a'} {role}"


def _own_token(who: Principal, book: Accounts, token_id: str) -> dict[str, Any]:
    doc = book.token(token_id)
    if not who.admin and doc["tenant"] != who.tenant:
        raise NotFound(f"no token {token_id}")  # another tenant's is not there for a maintainer, as an unknown one
    if not who.role.allows(Role(doc["role"])):
        raise Forbidden(f"{_a(who.role)} token cannot change {_a(Role(doc['role']))} token")
    return doc


@router.post("/tokens/{id}/revoke", openapi_extra=needs(Role.MAINTAINER, "token.revoke"), response_model=TokenOut,
             responses={**FORBIDDEN, **NOT_FOUND})  # fmt: skip
async def revoke_token(token_id: TokenId, who: Who, book: Book) -> dict[str, Any]:
    """Refused from its next request on, on every API replica."""
    await run_in_threadpool(_own_token, who, book, token_id)
    return await run_in_threadpool(book.revoke, token_id)


@router.post("/tokens/{id}/rotate", openapi_extra=needs(Role.MAINTAINER, "token.rotate"), response_model=NewToken,
             responses={**FORBIDDEN, **NOT_FOUND, **CONFLICT})  # fmt: skip
async def rotate_token(token_id: TokenId, who: Who, book: Book) -> dict[str, Any]:
    """A new secret for the token (same id, name, role and expiry); the old secret is
    refused from its next request on."""
    await run_in_threadpool(_own_token, who, book, token_id)
    doc, secret = await run_in_threadpool(book.rotate, token_id)
    return {**doc, "token": secret}
