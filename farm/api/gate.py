"""The gate every /v1 request passes before any handler runs: who is calling, whether they
may, and how much they may send.

A pure ASGI middleware, so it acts before FastAPI reads (and parses) a body:
- the bearer token is resolved first: an unknown caller is a 401 without a byte of its body
  read;
- a tenant's request to an admin-only route (marked `ADMIN_ONLY` in its `openapi_extra`) is a
  403 before validation, so a tenant learns nothing from an admin route's 422s;
- a body over `api.max_body_bytes` is a 413: at once when Content-Length says so, else as
  soon as the bytes received pass the limit (the rest is never read);
- a body not wholly received within `api.body_timeout_s` of the request's head is a 408 (the
  connection closes): a client that sends less than its Content-Length would otherwise hold a
  slot of its tenant (below) until the connection died, and 16 of them shut the tenant out.
  Once the body is complete, `receive` is not timed: the app waits on it for a disconnect;
- a tenant with `api.max_inflight_per_tenant` requests in progress gets a 429 for the next:
  the worker threads that sync handlers run on (AnyIO's 40) are shared, and one tenant must
  not hold them all. Log followers are not counted here: they hold no thread, and have a
  cap of their own (farm/api/jobs.py).

The caller is left in `scope["state"]["principal"]` for the `principal` dependency.
/healthz, /metrics and the OpenAPI documents are not gated.
"""

from __future__ import annotations

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

from farm.api.auth import TokenBook
from farm.errors import FarmError, TooManyRequests, Unauthorized

ADMIN_ONLY = "x-farm-admin-only"  # openapi_extra marker of a route only the admin token may call


# The two below are HTTPExceptions as well: FastAPI turns any other error raised while it reads a
# body into a 400, and lets those through (then the app's HTTPException handler answers them).
class BodyTooLarge(HTTPException, FarmError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the {limit}-byte limit")


class BodyTimeout(HTTPException, FarmError):
    def __init__(self, timeout_s: float) -> None:
        # Connection: close, as the rest of the body may still come: it is not a next request.
        super().__init__(408, f"the request body did not arrive within {timeout_s:g}s", headers={"Connection": "close"})


class Gate:
    def __init__(self, app: ASGIApp, *, tokens: TokenBook, max_body_bytes: int, body_timeout_s: float, max_inflight: int,
                 routers: Any) -> None:  # fmt: skip
        self.app = app
        self.tokens = tokens
        self.limit = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.max_inflight = max_inflight
        self.inflight: dict[str, int] = {}  # per tenant; touched only on the event loop
        self.admin_routes = [r for router in routers for r in router.routes if (getattr(r, "openapi_extra", None) or {}).get(ADMIN_ONLY)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.body_timeout_s  # the head is in: the body's clock starts
        headers = Headers(scope=scope)
        try:
            who = self.tokens.resolve(headers.get("authorization"))
        except Unauthorized as e:
            await _refuse(scope, receive, send, 401, str(e), {"WWW-Authenticate": "Bearer"})
            return
        if not who.admin and self._admin_only(scope):
            await _refuse(scope, receive, send, 403, "this needs the admin token")
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _refuse(scope, receive, send, 413, f"request body over the {self.limit}-byte limit")
            return
        scope.setdefault("state", {})["principal"] = who
        if _follows(scope):
            await self.app(scope, self._bounded(receive, deadline), send)
            return
        if self.inflight.get(who.tenant, 0) >= self.max_inflight:
            await _refuse(scope, receive, send, 429, f"{self.max_inflight} requests of tenant {who.tenant!r} are in progress already; "
                          "retry later", {"Retry-After": "1"})  # fmt: skip
            return
        self.inflight[who.tenant] = self.inflight.get(who.tenant, 0) + 1
        try:
            await self.app(scope, self._bounded(receive, deadline), send)
        finally:
            self.inflight[who.tenant] -= 1
            if not self.inflight[who.tenant]:
                del self.inflight[who.tenant]

    def _admin_only(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is Match.FULL for route in self.admin_routes)

    def _bounded(self, receive: Receive, deadline: float) -> Receive:
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
                if seen > limit:
                    raise BodyTooLarge(limit)
                complete = not message.get("more_body", False)
            else:
                complete = True  # http.disconnect: no body is coming
            return message

        return bounded


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
