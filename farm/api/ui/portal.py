"""What every portal route shares: the templates (Jinja2, autoescaping every value), how a
page is rendered, and how an error becomes a page.

A portal route raises the API's own errors (the handlers it calls do): `PortalRoute` answers
them as the API would, with the same status, but as a page for a browser that asked for
one (a 401 is the login form) and as JSON `{"detail": ...}` for portal.js's requests.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from farm.api.errors import status_of
from farm.api.ui import present
from farm.api.ui.session import Visitor
from farm.errors import Ambiguous, FarmError

HERE = Path(__file__).resolve().parent
STATIC = {  # the files under /ui/static/, read once: name -> (bytes, media type)
    "portal.js": ((HERE / "static" / "portal.js").read_bytes(), "text/javascript; charset=utf-8"),
    "portal.css": ((HERE / "static" / "portal.css").read_bytes(), "text/css; charset=utf-8"),
}
# A page names the static files with a digest of their content, so a browser's cached copy
# is never an older farm's.
STATIC_VERSION = hashlib.sha256(b"".join(content for content, _ in STATIC.values())).hexdigest()[:12]

ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every template, whatever its name: a job's output is text, always
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(duration=present.duration, iso=present.iso, size=present.size, short=present.short,
                   visible=present.visible, value=present.value, path=lambda s: quote(str(s), safe="/"))  # fmt: skip
ENV.globals.update(static_version=STATIC_VERSION)


def render(request: Request, template: str, visitor: Visitor | None, *, status: int = 200, **context: Any) -> HTMLResponse:
    html = ENV.get_template(template).render(visitor=visitor, here=request.url.path, **context)
    return HTMLResponse(html, status_code=status)


def json_answer(value: object, status: int = 200) -> Response:
    """JSON for portal.js, with no markup character in any byte (present.safe_json)."""
    return Response(present.safe_json(value), status_code=status, media_type="application/json")


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def refusal(request: Request, status: int, message: str, matches: list[tuple[str, str]] | None = None) -> Response:
    """An error as the portal answers it: the login form for a browser not logged in, a page
    for a browser, JSON for portal.js."""
    if not wants_html(request):
        return json_answer({"detail": message}, status)
    if status == 401:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "") if request.method == "GET" else "/ui"
        return RedirectResponse(f"/ui/login?next={quote(back, safe='')}", status_code=303)
    return render(request, "error.html", None, status=status, status_code=status, message=message, matches=matches or [])


class PortalRoute(APIRoute):
    """A route whose domain errors (and invalid parameters) are answered by `refusal`."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except FarmError as e:
                matches = list(e.matches) if isinstance(e, Ambiguous) else None
                return refusal(request, status_of(e), str(e.args[0]) if e.args else type(e).__name__, matches)
            except RequestValidationError as e:
                what = "; ".join(f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg', '')}" for err in e.errors())
                return refusal(request, 422, what[:500])

        return handle
