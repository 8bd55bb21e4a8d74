"""Accounts: tenants and their API tokens, kept in Redis and managed while farm runs.

A token is a random secret shown once; Redis keeps only its sha256 (`tokenhash` maps a live
token's hash to its id, `token:{id}` holds the rest). Revoking drops the hash, so the next
request with it is refused (resolve_token.lua, one round trip per request: no cache that a
revocation would have to outrun). Rotating gives the same id, name and role a new secret and
drops the old one's hash at once.

farm.yaml's tenants seed accounts (`seed`): each configured token becomes a maintainer token
named "farm.yaml" with the id `cfg-<first 12 hex of its hash>`, created once: revoking it
holds across restarts, and a new hash in the file is a new token. The settings' admin token
is not kept here: it is the root credential, resolved in memory (farm.api.auth).

Invariants:
- Every live token's hash is in `tokenhash`, and only a live token's.
- A token of a tenant that does not exist cannot be made; the `admin` tenant is the platform
  team's, holds admin tokens only, and is not an account.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from farm.errors import Conflict, InvalidInput, NotFound
from farm.roles import Role
from farm.settings import Settings, hash_token
from farm.store.client import translated
from farm.store.jobs import JobStore

ADMIN_TENANT = "admin"
TOKEN_PREFIX = "farm_"  # a farm token is recognisable (secret scanners, logs)
MAX_TOKENS_PER_TENANT = 1000


@dataclass(frozen=True)
class Resolved:
    """A live token's identity, as resolve_token.lua found it."""

    token_id: str
    tenant: str
    role: Role
    name: str
    tier: str
    weight: float
    left_ms: int  # until it expires; -1: never


@dataclass(frozen=True)
class Refused:
    reason: str  # unknown, expired, disabled
    # the token refused, when farm knows it (expired, or of a disabled tenant): its refusal is
    # recorded under it, so its tenant's maintainer sees it in the trail
    token_id: str = ""
    tenant: str = ""
    role: str = ""
    name: str = ""


def _resolved(got: list[Any]) -> Resolved | Refused:
    if got[0] != "ok":
        return Refused(*got[:5])
    _, token_id, tenant, role, name, tier, weight, left = got
    return Resolved(token_id, tenant, Role(role), name, tier, float(weight), int(left))


def _token_doc(token_id: str, h: dict[str, str]) -> dict[str, Any]:
    def ms(field: str) -> int | None:
        return int(h[field]) if h.get(field) else None

    return {"id": token_id, "tenant": h.get("tenant", ""), "role": h.get("role", ""), "name": h.get("name", ""),
            "tier": h.get("tier", "unprotected"), "created_at_ms": ms("created"), "created_by": h.get("by", ""),
            "expires_at_ms": ms("expires"), "last_used_at_ms": ms("last_used"), "revoked_at_ms": ms("revoked")}  # fmt: skip


class Accounts:
    def __init__(self, jobs: JobStore) -> None:
        self.jobs, self.client, self.keys = jobs, jobs.client, jobs.keys
        self.on_change: list[Callable[[], None]] = []  # this process's caches of tokens (farm.api.auth)

    def _changed(self) -> None:
        """A token or tenant changed in a way that must refuse a cached token: this process's
        caches drop theirs at once, other replicas' on the bus (`listen`)."""
        for forget in self.on_change:
            forget()
        with translated():
            self.client.publish(self.keys.accounts_bus, "changed")

    async def listen(self, forget: Callable[[], None], stop: asyncio.Event) -> None:
        """Call `forget` for each change another replica (or this one) announces, until
        `stop` is set; on a lost connection, forget everything and subscribe again. (A stop
        flag, not cancellation alone: redis-py may turn a cancelled read into a
        ConnectionError, which must not start another round.)"""
        if self.jobs.aclient is None:
            return  # a store without an asyncio client: caches expire on their own
        while not stop.is_set():
            try:
                async with self.jobs.aclient.pubsub() as bus:
                    await bus.subscribe(self.keys.accounts_bus)
                    forget()  # what was cached while not listening
                    while not stop.is_set():
                        message = await bus.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is not None:
                            forget()
            except Exception:  # noqa: BLE001 - the store away: caches expire on their own meanwhile
                forget()
                if not stop.is_set():
                    await asyncio.sleep(1.0)

    # -- resolving ------------------------------------------------------------------------

    def resolve(self, sha256_hex: str) -> Resolved | Refused:
        return _resolved(self.jobs._call("resolve_token", sha256_hex))

    async def aresolve(self, sha256_hex: str) -> Resolved | Refused:
        """`resolve` on the asyncio client: the gate runs on the event loop (a store made
        without one, as some tests make it, resolves in a worker thread)."""
        if self.jobs.aclient is None:
            return await asyncio.to_thread(self.resolve, sha256_hex)
        with translated():
            return _resolved(await self.jobs._scripts.acall("resolve_token", sha256_hex))

    # -- tenants --------------------------------------------------------------------------

    def _now(self) -> int:
        return self.jobs.server_time_ms()

    def create_tenant(self, name: str, *, weight: float = 1.0, by: str, exist_ok: bool = False) -> dict[str, Any]:
        if name == ADMIN_TENANT:
            raise InvalidInput(f"{ADMIN_TENANT!r} is the platform team's, not a tenant", ("body", "name"))
        key = self.keys.account(name)
        with translated():
            if not self.client.hsetnx(key, "created", self._now()):
                if exist_ok:
                    return self.tenant(name)
                raise Conflict(f"tenant {name!r} exists already")
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, mapping={"weight": repr(float(weight)), "disabled": "0", "by": by})
            pipe.zadd(self.keys.accounts, {name: 0})
            pipe.execute()
        return self.tenant(name)

    def tenant(self, name: str) -> dict[str, Any]:
        with translated():
            h = self.client.hgetall(self.keys.account(name))
            tokens = self.client.zcard(self.keys.tenant_tokens(name))
        if not h:
            raise NotFound(f"no tenant {name}")
        return {"name": name, "weight": float(h.get("weight", "1")), "disabled": h.get("disabled") == "1",
                "created_at_ms": int(h["created"]), "created_by": h.get("by", ""), "tokens": tokens}  # fmt: skip

    def tenants(self) -> list[dict[str, Any]]:
        with translated():
            names = self.client.zrange(self.keys.accounts, 0, -1)
        return [self.tenant(n) for n in names]

    def set_disabled(self, name: str, disabled: bool) -> dict[str, Any]:
        """A disabled tenant's tokens are refused at their next request; its jobs are left
        as they are (cancel them apart)."""
        self.tenant(name)
        with translated():
            self.client.hset(self.keys.account(name), "disabled", "1" if disabled else "0")
        self._changed()
        return self.tenant(name)

    # -- tokens ---------------------------------------------------------------------------

    def create_token(self, tenant: str, role: Role, name: str, *, by: str, expires_in_s: int | None = None,
                     tier: str = "unprotected") -> tuple[dict[str, Any], str]:  # fmt: skip
        """A new token: its record and its secret (the only time the secret exists outside
        the caller's hands)."""
        if (tenant == ADMIN_TENANT) != (role is Role.ADMIN):
            raise InvalidInput("admin tokens belong to the admin tenant, and only they", ("body", "role"))
        if tenant != ADMIN_TENANT:
            self.tenant(tenant)
        with translated():
            if self.client.zcard(self.keys.tenant_tokens(tenant)) >= MAX_TOKENS_PER_TENANT:
                raise Conflict(f"tenant {tenant!r} has {MAX_TOKENS_PER_TENANT} tokens: revoke some first")
        tier = "protected" if role is Role.ADMIN else tier  # the admin's tokens are of the protected tier (farm.api.auth)
        token_id = uuid.uuid4().hex[:16]
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._now()
        fields = {"tenant": tenant, "role": role.value, "name": name, "tier": tier, "created": now, "by": by,
                  "expires": now + expires_in_s * 1000 if expires_in_s else ""}  # fmt: skip
        self._write(token_id, hash_token(secret), fields, now)
        return self.token(token_id), secret

    def _write(self, token_id: str, sha: str, fields: dict[str, Any], now: int) -> None:
        with translated():
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self.keys.token(token_id), mapping={**fields, "sha256": sha})
            pipe.hset(self.keys.token_hash, sha, token_id)
            pipe.zadd(self.keys.tenant_tokens(fields["tenant"]), {token_id: now})
            pipe.execute()

    def token(self, token_id: str) -> dict[str, Any]:
        with translated():
            h = self.client.hgetall(self.keys.token(token_id)) if _plain(token_id) else {}
        if not h:
            raise NotFound(f"no token {token_id}")
        return _token_doc(token_id, h)

    def tokens(self, tenant: str | None) -> list[dict[str, Any]]:
        """A tenant's tokens, oldest first (every tenant's, the admin's too, for None)."""
        with translated():
            names = [tenant] if tenant is not None else [ADMIN_TENANT, *self.client.zrange(self.keys.accounts, 0, -1)]
            ids = [i for n in names for i in self.client.zrange(self.keys.tenant_tokens(n), 0, -1)]
        return [self.token(i) for i in ids]

    def revoke(self, token_id: str) -> dict[str, Any]:
        """Refused from the next request on. Revoking twice is a no-op."""
        with translated():
            key = self.keys.token(token_id)
            sha = self.client.hget(key, "sha256") if _plain(token_id) else None
            if sha is None:
                raise NotFound(f"no token {token_id}")
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(self.keys.token_hash, sha)
            pipe.hsetnx(key, "revoked", self._now())
            pipe.execute()
        self._changed()
        return self.token(token_id)

    def rotate(self, token_id: str) -> tuple[dict[str, Any], str]:
        """A new secret for the token (same id, name, role, expiry); the old one is refused
        from the next request on."""
        doc = self.token(token_id)
        if doc["revoked_at_ms"] is not None:
            raise Conflict(f"token {token_id} is revoked: create a new one")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        sha, key = hash_token(secret), self.keys.token(token_id)
        with translated():
            old = self.client.hget(key, "sha256")
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(self.keys.token_hash, old)
            pipe.hset(key, mapping={"sha256": sha, "rotated": self._now()})
            pipe.hset(self.keys.token_hash, sha, token_id)
            pipe.execute()
        self._changed()
        return self.token(token_id), secret

    # -- farm.yaml ------------------------------------------------------------------------

    def seed(self, settings: Settings) -> None:
        """farm.yaml's tenants as accounts, their tokens as maintainer tokens (once each)."""
        for t in settings.tenants:
            self.create_tenant(t.name, weight=t.weight, by="farm.yaml", exist_ok=True)
            for sha, tier in ((t.token_sha256, "unprotected"), (t.protected_token_sha256, "protected")):
                if sha:
                    self.seed_token(t.name, sha, tier)

    def seed_token(self, tenant: str, sha: str, tier: str) -> None:
        token_id = "cfg-" + sha[:12]
        with translated():
            now = self._now()
            if not self.client.hsetnx(self.keys.token(token_id), "created", now):
                return  # made before (perhaps revoked since: that holds)
        self._write(token_id, sha, {"tenant": tenant, "role": Role.MAINTAINER.value, "name": "farm.yaml", "tier": tier,
                                    "created": now, "by": "farm.yaml", "expires": ""}, now)  # fmt: skip


def _plain(token_id: str) -> bool:
    """A token id as farm makes them (a key is never built from anything else)."""
    return 0 < len(token_id) <= 40 and all(c.isalnum() or c == "-" for c in token_id)

