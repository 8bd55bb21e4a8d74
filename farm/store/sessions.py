"""Portal sessions (farm.api.ui): what a browser's session cookie stands for.

A session is a hash `session:{digest}` holding the sha256 of the token that logged in (never
the token), the session's CSRF token and when it was made, with a TTL: it ends by itself.

Invariants:
- The cookie's value (a random id) is never stored: the key holds its sha256, so whoever
  reads Redis (a dump, a replica, a backup) holds no cookie a browser could replay.
- A session names a token, not a principal: the API resolves the token's digest on every
  request (farm.api.auth.TokenBook.resolve_digest), so a token taken out of the settings
  ends its sessions at the next restart of the API, and a role never outlives its token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import redis

from farm.store.client import translated
from farm.store.keys import Keys

SESSION_TTL_S = 12 * 3600


@dataclass(frozen=True)
class Session:
    id: str  # the cookie's value: the random id, held by the browser only
    token_sha256: str
    csrf: str
    created_ms: int


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    def __init__(self, client: redis.Redis, keys: Keys | None = None, *, ttl_s: int = SESSION_TTL_S) -> None:
        self.client, self.keys, self.ttl_s = client, keys or Keys(), ttl_s

    def create(self, token_sha256: str) -> Session:
        """A new session for the token whose digest is given: a fresh id (never one the
        browser brought, so a planted cookie fixes nothing) and a fresh CSRF token."""
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        key = self.keys.session(_digest(session_id))
        with translated():
            s, us = self.client.time()
            created = s * 1000 + us // 1000
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, mapping={"token": token_sha256, "csrf": csrf, "created": created})
            pipe.expire(key, self.ttl_s)
            pipe.execute()
        return Session(session_id, token_sha256, csrf, created)

    def get(self, session_id: str) -> Session | None:
        """The session the cookie names; None when it is unknown or expired."""
        if not session_id or len(session_id) > 100:
            return None
        with translated():
            h = self.client.hgetall(self.keys.session(_digest(session_id)))
        if not h.get("token") or not h.get("csrf"):
            return None
        return Session(session_id, h["token"], h["csrf"], int(h.get("created") or 0))

    def delete(self, session_id: str) -> None:
        with translated():
            self.client.delete(self.keys.session(_digest(session_id)))
