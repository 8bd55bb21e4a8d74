"""Bearer-token authentication: a token maps to a tenant, a role and a trust tier.

Tokens live in Redis (farm.store.accounts), as sha256 hashes only. A token found there is
kept in this process for at most `CACHE_S` (and never past its expiry), so the gate pays
a Redis round trip per token per second, not per request; a revocation, rotation or a
disabled tenant empties the cache of the process that made it at once and the others' by
the accounts bus (a Redis channel) within milliseconds, `CACHE_S` at worst if a message is
lost. Refusals are never cached. The settings' admin token is the root credential and is
resolved in memory; farm.yaml's tenant tokens are accounts seeded into Redis (and seeded on
first use too, so a farm whose seeding failed at start still knows them). A tenant sees and
acts on its own jobs only; the admin sees all. What each role may do: farm.roles.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from farm.errors import NotFound, Unauthorized
from farm.models import Job
from farm.roles import Role
from farm.settings import Settings, hash_token
from farm.store.accounts import ADMIN_TENANT, Accounts, Refused, Resolved

ADMIN_TOKEN_ID = "cfg-admin"  # the settings' admin token, in the audit trail
_REFUSED = {"unknown": "unknown token", "expired": "this token has expired", "disabled": "this token's tenant is disabled"}


@dataclass(frozen=True)
class Principal:
    tenant: str
    role: Role
    weight: float = 1.0
    tier: str = "unprotected"  # cache trust tier: a tenant's protected token, or the admin's, is "protected"
    token_id: str = ""
    token_name: str = ""

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN

    def check_can_see(self, job: Job) -> None:
        # A job of another tenant is reported as missing, not forbidden: ids don't leak.
        if not self.admin and job.tenant != self.tenant:
            raise NotFound(f"no job {job.id}")

    @property
    def scope(self) -> str | None:
        """The tenant to filter listings by; None for the admin."""
        return None if self.admin else self.tenant


class TokenRefused(Unauthorized):
    """A token farm knows but refuses (expired, its tenant disabled): `who` it was, for the
    audit trail only; it grants nothing."""

    def __init__(self, message: str, who: Principal) -> None:
        super().__init__(message)
        self.who = who


def _principal(r: Resolved | Refused) -> Principal:
    if isinstance(r, Refused):
        message = _REFUSED.get(r.reason, "unknown token")
        if r.token_id and r.role in {role.value for role in Role}:
            raise TokenRefused(message, Principal(r.tenant, Role(r.role), 0.0, "", r.token_id, r.name))
        raise Unauthorized(message)
    tier = "protected" if r.role is Role.ADMIN else r.tier
    return Principal(r.tenant, r.role, r.weight, tier, r.token_id, r.name)


CACHE_S = 1.0
CACHE_MAX = 10_000  # tokens kept; past it the cache starts again


class TokenBook:
    def __init__(self, settings: Settings, accounts: Accounts) -> None:
        self.accounts = accounts
        self._cache: dict[str, tuple[Principal, float]] = {}  # sha256 -> (who, until: monotonic)
        accounts.on_change.append(self.forget)
        self._admin = hash_token(settings.admin_token.get_secret_value()) if settings.admin_token is not None else None
        self._configured = {sha: (t.name, tier) for t in settings.tenants
                            for sha, tier in ((t.token_sha256, "unprotected"), (t.protected_token_sha256, "protected")) if sha}  # fmt: skip

    @staticmethod
    def _digest(authorization: str | None) -> str:
        if not authorization:
            raise Unauthorized("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("expected 'Authorization: Bearer <token>'")
        return hash_token(token.strip())

    def _root(self, sha256_hex: str) -> Principal | None:
        if self._admin is not None and hmac.compare_digest(self._admin, sha256_hex):
            return Principal(ADMIN_TENANT, Role.ADMIN, 1.0, "protected", ADMIN_TOKEN_ID, "admin (settings)")
        return None

    def _unseeded(self, sha256_hex: str) -> bool:
        """A farm.yaml token Redis does not know yet (its seeding at start failed): seed it now."""
        if sha256_hex not in self._configured:
            return False
        tenant, tier = self._configured[sha256_hex]
        self.accounts.create_tenant(tenant, by="farm.yaml", exist_ok=True)
        self.accounts.seed_token(tenant, sha256_hex, tier)
        return True

    async def aresolve(self, authorization: str | None) -> Principal:
        """Who the Authorization header is (the gate, on the event loop)."""
        return await self.aresolve_digest(self._digest(authorization))

    def forget(self) -> None:
        self._cache = {}

    async def listen(self, stop: asyncio.Event) -> None:
        """Empty the cache whenever a replica announces a change, until `stop` is set."""
        await self.accounts.listen(self.forget, stop)

    async def aresolve_digest(self, sha256_hex: str) -> Principal:
        if (root := self._root(sha256_hex)) is not None:
            return root
        now = time.monotonic()
        if (hit := self._cache.get(sha256_hex)) is not None and hit[1] > now:
            return hit[0]
        got = await self.accounts.aresolve(sha256_hex)
        if isinstance(got, Refused) and got.reason == "unknown" and sha256_hex in self._configured:
            await run_in_threadpool(self._unseeded, sha256_hex)
            got = await self.accounts.aresolve(sha256_hex)
        who = _principal(got)
        assert isinstance(got, Resolved)
        if len(self._cache) >= CACHE_MAX:
            self._cache = {}
        self._cache[sha256_hex] = (who, now + (CACHE_S if got.left_ms < 0 else min(CACHE_S, got.left_ms / 1000)))
        return who

    def resolve(self, authorization: str | None) -> Principal:
        return self.resolve_digest(self._digest(authorization))

    def resolve_digest(self, sha256_hex: str) -> Principal:
        """Who a token is, by its sha256: how a portal session (which keeps the digest, never
        the token) finds its principal on every request, so a revoked token ends its
        sessions too. Sync: it reads Redis (call it from a worker thread)."""
        if (root := self._root(sha256_hex)) is not None:
            return root
        got = self.accounts.resolve(sha256_hex)
        if isinstance(got, Refused) and got.reason == "unknown" and self._unseeded(sha256_hex):
            got = self.accounts.resolve(sha256_hex)
        return _principal(got)


_BEARER = HTTPBearer(auto_error=False, description="a tenant's token, or the admin token")


async def principal(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> Principal:
    """FastAPI dependency: who is calling, as the gate (`farm.api.gate`) found before the body
    was read (async: no thread-pool hop). `_` puts the bearer scheme in the
    OpenAPI document."""
    found = getattr(request.state, "principal", None)
    return found if found is not None else await request.app.state.tokens.aresolve(request.headers.get("authorization"))
