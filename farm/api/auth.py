"""Bearer-token authentication: a token maps to a tenant and a role.

Tokens are kept as sha256 hashes only (settings carry hashes; the admin token is hashed on
load). A tenant sees and acts on its own jobs only; the admin sees all.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from farm.errors import NotFound, Unauthorized
from farm.models import Job
from farm.settings import Settings, hash_token

ADMIN_TENANT = "admin"


@dataclass(frozen=True)
class Principal:
    tenant: str
    admin: bool
    weight: float = 1.0
    tier: str = "unprotected"  # cache trust tier: a tenant's protected token, or the admin's, is "protected"

    def check_can_see(self, job: Job) -> None:
        # A job of another tenant is reported as missing, not forbidden: ids don't leak.
        if not self.admin and job.tenant != self.tenant:
            raise NotFound(f"no job {job.id}")

    @property
    def scope(self) -> str | None:
        """The tenant to filter listings by; None for the admin."""
        return None if self.admin else self.tenant


class TokenBook:
    def __init__(self, settings: Settings) -> None:
        self._by_hash: dict[str, Principal] = {t.token_sha256: Principal(t.name, False, t.weight) for t in settings.tenants}
        for t in settings.tenants:
            if t.protected_token_sha256:
                self._by_hash[t.protected_token_sha256] = Principal(t.name, False, t.weight, "protected")
        if settings.admin_token is not None:
            self._by_hash[hash_token(settings.admin_token.get_secret_value())] = Principal(ADMIN_TENANT, True, 1.0, "protected")

    def resolve(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("expected 'Authorization: Bearer <token>'")
        return self.resolve_digest(hash_token(token.strip()))

    def resolve_digest(self, sha256_hex: str) -> Principal:
        """Who a token is, by its sha256: how a portal session (which keeps the digest, never
        the token) finds its principal on every request, so a token taken out of the
        settings ends its sessions too."""
        for known, principal in self._by_hash.items():
            if hmac.compare_digest(known, sha256_hex):
                return principal
        raise Unauthorized("unknown token")


_BEARER = HTTPBearer(auto_error=False, description="a tenant's token, or the admin token")


async def principal(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> Principal:
    """FastAPI dependency: who is calling, as the gate (`farm.api.gate`) found before the body
    was read (async: no I/O, so no thread-pool hop). `_` puts the bearer scheme in the
    OpenAPI document."""
    found = getattr(request.state, "principal", None)
    return found if found is not None else request.app.state.tokens.resolve(request.headers.get("authorization"))
