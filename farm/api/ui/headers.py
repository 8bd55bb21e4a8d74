"""The security headers of every /ui response, set in one place (a pure ASGI middleware), so
no page, error or static file goes without them.

The Content-Security-Policy allows scripts, styles and everything else from the farm itself
only, and no inline script or style at all (no 'unsafe-inline'): were an escape ever
missed, a `<script>` in a job's log could still not run. Pages pass data to portal.js in
`data-*` attributes. Pages are `no-store` (they hold a tenant's jobs); static files may be
cached briefly.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
       "form-action 'self'; base-uri 'none'")  # fmt: skip
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
STATIC = "/ui/static/"


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != "/ui" and not path.startswith("/ui/"):
            await self.app(scope, receive, send)
            return
        cache = "public, max-age=300" if path.startswith(STATIC) else "no-store"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                headers["Cache-Control"] = cache
            await send(message)

        await self.app(scope, receive, with_headers)
