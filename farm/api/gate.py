"""The gate every /v1 request passes before any handler runs: who is calling, whether they
may, and how much they may send.

A pure ASGI middleware, so it acts before FastAPI reads (and parses) a body:
- the bearer token is resolved first (farm.api.auth, one Redis round trip): an unknown,
  revoked or expired token is a 401 without a byte of its body read;
- every /v1 route declares the least role it needs (farm.roles `needs`, in its
  `openapi_extra`); a lesser token is a 403 before validation, so it learns nothing from the
  route's 422s. A route that declares none is refused to all but the admin;
- a body over `api.max_body_bytes` is a 413: at once when Content-Length says so, else as
  soon as the bytes received pass the limit (the rest is never read);
- a body not wholly received within `api.body_timeout_s` of the request's head is a 408 (the
  connection closes): a client that sends less than its Content-Length would otherwise hold a
  slot of its tenant (below) until the connection died, and 16 of them shut the tenant out.
  Once the body is complete, `receive` is not timed: the app waits on it for a disconnect;
- every request to a route that changes something (its `x-farm-action`), and every 401 and
  403, goes into the audit trail (farm.store.audit) once answered: who, from where, the
  action, the ids it named or made, the body's sha256 and the status; refusals rate-limited
  per client;
- a tenant with `api.max_inflight_per_tenant` requests in progress gets a 429 for the next:
  the worker threads that sync handlers run on (AnyIO's 40) are shared, and one tenant must
  not hold them all. Log followers are not counted here: they hold no thread, and have a
  cap of their own (farm/api/jobs.py).

The caller is left in `scope["state"]["principal"]` for the `principal` dependency.
/healthz, /metrics and the OpenAPI documents are not gated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs

import anyio
from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from farm.api.auth import Principal, TokenBook
from farm.api.recorder import Recorder
from farm.audit import REFUSED, AuditRecord
from farm.errors import FarmError, StoreUnavailable, TooManyRequests, Unauthorized
from farm.roles import ROLE_KEY, Role, declared

log = logging.getLogger("farm.api")
ANSWER_READ = 64 * 1024  # bytes of a changing route's answer read for the id of what it made


# The two below are HTTPExceptions as well: FastAPI turns any other error raised while it reads a
# body into a 400, and lets those through (then the app's HTTPException handler answers them).
class BodyTooLarge(HTTPException, FarmError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the {limit}-byte limit")


class BodyTimeout(HTTPException, FarmError):
    def __init__(self, timeout_s: float) -> None:
        # Connection: close, as the rest of the body may still come: it is not a next request.
        super().__init__(408, f"the request body did not arrive within {timeout_s:g}s", headers={"Connection": "close"})


class _Exchange:
    """One request as the audit trail sees it: who, which route, the body's digest, and
    what was answered (the status, and the `id` or `name` of what a route made)."""

    __slots__ = ("who", "action", "params", "status", "digest", "answer")

    def __init__(self) -> None:
        self.who: Principal | None = None
        self.action: str | None = None
        self.params: dict[str, Any] = {}
        self.status = 0
        self.digest: Any = None  # a sha256 of the body, on a route that changes something
        self.answer = b""

    def watching(self, send: Send) -> Send:
        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body" and self.action and len(self.answer) < ANSWER_READ:
                self.answer += message.get("body", b"")
            await send(message)

        return watched

    def record(self, scope: Scope) -> AuditRecord:
        who = self.who
        targets = [str(v) for v in self.params.values()]
        made, on = _made(self.answer, self.action) if self.action and self.status < 300 else (None, None)
        on = (scope.get("state") or {}).get(ACTED_ON) or on
        if made and made not in targets:
            targets.append(made)
        return AuditRecord(
            actor=who.token_id if who else "", name=who.token_name if who else "", tenant=who.tenant if who else "",
            role=who.role.value if who else "", on_tenant=on or "",
            client=(scope.get("client") or ("",))[0] or "", action=self.action or REFUSED, targets=targets,
            body_sha256=self.digest.hexdigest() if self.digest else "", status=self.status, method=scope["method"],
            path=scope["path"],
        )  # fmt: skip


ACTED_ON = "audit_on_tenant"  # in a request's scope state: the tenant a route acted on, when its answer does not say


def acted_on(scope: Scope, tenant: str) -> None:
    """For a route whose answer does not name the tenant it acted on (a rerun answers the
    new job, the caller's; a cache delete, a count): that tenant, for its audit record."""
    scope.setdefault("state", {})[ACTED_ON] = tenant


def _made(answer: bytes, action: str) -> tuple[str | None, str | None]:
    """From a route's JSON answer: the id (or name) of what it made or acted on, and the
    tenant that belongs to (a job's, a run's, a token's; a tenant route's own)."""
    try:
        doc = json.loads(answer)
    except ValueError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    found = doc.get("id") or doc.get("name")
    tenant = doc.get("name") if action.startswith("tenant.") else doc.get("tenant")
    return (found if isinstance(found, str) else None), (tenant if isinstance(tenant, str) else None)


class Gate:
    def __init__(self, app: ASGIApp, *, tokens: TokenBook, max_body_bytes: int, body_timeout_s: float, max_inflight: int,
                 routers: Any, audit: Recorder | None = None) -> None:  # fmt: skip
        self.app = app
        self.tokens = tokens
        self.audit = audit
        self.limit = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.max_inflight = max_inflight
        self.inflight: dict[str, int] = {}  # per tenant; touched only on the event loop
        # (literal head of its path, route, the role it needs, its audit action): matched in
        # order, as the app does; the head spares most routes a regex match per request
        self.routes = [(getattr(r, "path", "").partition("{")[0], r, *declared(getattr(r, "openapi_extra", None)))
                       for router in routers for r in router.routes]  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        seen = _Exchange()
        try:
            await self._gated(scope, receive, seen.watching(send), seen)
        finally:
            if self.audit is not None and (seen.action or seen.status in (401, 403)):
                await self._audit(scope, seen)

    async def _audit(self, scope: Scope, seen: _Exchange) -> None:
        """A route that changes something, answered, or a refusal (rate-limited per client),
        into the audit trail. After the answer was sent: the caller does not wait on it."""
        assert self.audit is not None
        try:
            record = seen.record(scope)
            await (self.audit.refused(record) if seen.status in (401, 403) else self.audit.append(record))
        except Exception:  # noqa: BLE001 - the request was answered; the trail's failure is logged, not the caller's
            log.exception("could not write the audit record of %s %s", scope["method"], scope["path"])

    async def _gated(self, scope: Scope, receive: Receive, send: Send, seen: _Exchange) -> None:
        deadline = time.monotonic() + self.body_timeout_s  # the head is in: the body's clock starts
        headers = Headers(scope=scope)
        try:
            who = await self.tokens.aresolve(headers.get("authorization"))
        except Unauthorized as e:
            seen.who = getattr(e, "who", None)  # a token farm knows but refuses: recorded under it
            await _refuse(scope, receive, send, 401, str(e), {"WWW-Authenticate": "Bearer"})
            return
        except StoreUnavailable as e:  # Redis away or refusing: the token cannot be looked up (a 503, as any handler's)
            await _refuse(scope, receive, send, 503, str(e), {"Retry-After": "5"})
            return
        seen.who = who
        needed, seen.action, seen.params = self._declared(scope)
        if seen.action:
            seen.digest = hashlib.sha256()
        if not who.role.allows(needed):
            await _refuse(scope, receive, send, 403, f"this needs the {needed} role (this token's is {who.role})")
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _refuse(scope, receive, send, 413, f"request body over the {self.limit}-byte limit")
            return
        scope.setdefault("state", {})["principal"] = who
        if _follows(scope):
            await self.app(scope, self._bounded(receive, deadline, seen.digest), send)
            return
        if self.inflight.get(who.tenant, 0) >= self.max_inflight:
            await _refuse(scope, receive, send, 429, f"{self.max_inflight} requests of tenant {who.tenant!r} are in progress already; "
                          "retry later", {"Retry-After": "1"})  # fmt: skip
            return
        self.inflight[who.tenant] = self.inflight.get(who.tenant, 0) + 1
        try:
            await self.app(scope, self._bounded(receive, deadline, seen.digest), send)
        finally:
            self.inflight[who.tenant] -= 1
            if not self.inflight[who.tenant]:
                del self.inflight[who.tenant]

    def _declared(self, scope: Scope) -> tuple[Role, str | None, dict[str, Any]]:
        """The role the route `scope` asks for needs, its audit action and its path's
        values. A path no route serves needs the least role (the app answers it 404 or
        405); a route that declares no role needs the admin's."""
        path = scope["path"]
        for head, route, role, action in self.routes:
            if not path.startswith(head):
                continue
            match, child = route.matches(scope)
            if match is Match.FULL:
                return role or Role.ADMIN, action, child.get("path_params", {})
        return Role.VIEWER, None, {}

    def _bounded(self, receive: Receive, deadline: float, digest: Any = None) -> Receive:
        """`receive` that stops a body (chunked, or lying about its length) at the limit, and
        one still arriving at `deadline` (raised where the app reads it, so the app's exception
        handlers answer, and the request, with its slot, ends)."""
        seen, complete = 0, False
        limit, timeout_s = self.limit, self.body_timeout_s

        async def bounded() -> Message:
            nonlocal seen, complete
            if complete:
                return await receive()  # a wait for the disconnect, however long the response takes
            try:
                with anyio.fail_after(max(deadline - time.monotonic(), 0)):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(timeout_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if digest is not None:
                    digest.update(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
                complete = not message.get("more_body", False)
            else:
                complete = True  # http.disconnect: no body is coming
            return message

        return bounded


def roles_in_document(document: dict[str, Any]) -> dict[str, Any]:
    """Each /v1 operation's description says the role it needs (its `x-farm-role` says it
    to a program)."""
    for item in document.get("paths", {}).values():
        for operation in item.values():
            role = operation.get(ROLE_KEY) if isinstance(operation, dict) else None
            if role:
                operation["description"] = f"Needs the `{role}` role.\n\n" + operation.get("description", "")
    return document


def _follows(scope: Scope) -> bool:
    """A log follow (`GET .../log?follow=true`)."""
    if scope["method"] != "GET" or not scope["path"].endswith("/log"):
        return False
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("follow", [])
    return any(v.lower() in ("1", "true", "t", "yes", "y", "on") for v in values)


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    # The body is left unread: the server closes the connection rather than drain it.
    response = JSONResponse({"detail": detail}, status_code=status, headers={**(headers or {}), "Connection": "close"})
    await response(scope, receive, send)


class Followers:
    """Live log followers per tenant, in this API process: a tenant past `cap` gets a 429, so
    one tenant's hung-up or hoarded streams cannot take the server from others."""

    def __init__(self, cap: int, max_s: float) -> None:
        self.cap, self.max_s = cap, max_s
        self.count: dict[str, int] = {}

    def admit(self, tenant: str) -> None:
        if self.count.get(tenant, 0) >= self.cap:
            raise TooManyRequests(f"{self.cap} log followers of tenant {tenant!r} are open already; close one or retry later")
        self.count[tenant] = self.count.get(tenant, 0) + 1

    def leave(self, tenant: str) -> None:
        self.count[tenant] -= 1
        if not self.count[tenant]:
            del self.count[tenant]


class FollowerStream(StreamingResponse):
    """A follower's response (a log followed over the API or the portal's live log): its
    follower slot is given back however the stream ends (the job ended, the client hung up,
    the server is stopping)."""

    def __init__(self, content: AsyncIterator[str], *, on_close: Callable[[], None], media_type: str,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(content, media_type=media_type, headers=headers)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()
