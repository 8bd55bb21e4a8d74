"""Who is looking at the portal: a session cookie, and what a form must carry to act.

- **Login** takes a token in a form and makes a session (farm.store.sessions); the cookie
  holds only the session's random id, `HttpOnly` (no script reads it), `SameSite=Strict`
  (no other site's page sends it), `Path=/ui`, and `Secure` over https.
- **Every request** finds the principal again from the token's digest the session keeps
  (TokenBook.resolve_digest): a revoked or expired token ends its sessions, and the
  portal's tenant scoping is the API's, with the same Principal.
- **Every form that acts** (cancel, rerun, log out) carries the session's CSRF token in a
  hidden field, compared in constant time; and a POST whose Origin (or Sec-Fetch-Site) says
  it came from another site is refused before anything else, the login form's included.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from fastapi import Request
from starlette.responses import Response

from farm.api.auth import Principal
from farm.api.ui.parts import parts
from farm.errors import Forbidden, InvalidInput, Unauthorized
from farm.roles import Role
from farm.store.sessions import Session

COOKIE = "farm_session"
FORM_MAX_BYTES = 16 * 1024  # a login or a button: a few fields


@dataclass(frozen=True)
class Visitor:
    who: Principal
    session: Session

    @property
    def csrf(self) -> str:
        return self.session.csrf

    def may(self, role: Role) -> None:
        """The portal's buttons need the role the API's routes do (farm.roles)."""
        if not self.who.role.allows(role):
            raise Forbidden(f"this needs the {role} role (this token's is {self.who.role})")


def visitor(request: Request) -> Visitor:
    """FastAPI dependency: the logged-in visitor, or Unauthorized (a page answers it with the
    login form). Sync: it reads the store, in a worker thread."""
    p = parts(request)
    session_id = request.cookies.get(COOKIE, "")
    session = p.sessions.get(session_id) if session_id else None
    if session is None:
        raise Unauthorized("log in to see this page")
    try:
        who = p.tokens.resolve_digest(session.token_sha256)
    except Unauthorized:
        p.sessions.delete(session_id)
        raise Unauthorized("the token this session was opened with is no longer valid: log in again") from None
    return Visitor(who, session)


def same_site(request: Request) -> None:
    """Refuse a POST another site's page sent: an Origin that is not this farm's (a browser
    sends it with every form POST), or Sec-Fetch-Site saying so."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise Forbidden("a form sent from another site is refused")
    origin = request.headers.get("origin")
    if origin is not None and (origin == "null" or urlsplit(origin).netloc != request.headers.get("host", "")):
        raise Forbidden("a form sent from another site is refused")


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a urlencoded form (the first value of each), read up to FORM_MAX_BYTES."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX_BYTES:
            raise InvalidInput(f"a form over {FORM_MAX_BYTES} bytes", ("body",))
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=20)
    return {k: v[0] for k, v in fields.items()}


async def checked_form(request: Request, visitor: Visitor) -> dict[str, str]:
    """A form that acts: from this site, with this session's CSRF token."""
    same_site(request)
    form = await read_form(request)
    if not hmac.compare_digest(form.get("csrf", "").encode(), visitor.csrf.encode()):
        raise Forbidden("the form's CSRF token is not this session's: reload the page and try again")
    return form


def set_cookie(response: Response, request: Request, session: Session, max_age_s: int) -> None:
    response.set_cookie(COOKIE, session.id, max_age=max_age_s, path="/ui", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")  # fmt: skip


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict", secure=request.url.scheme == "https")


def next_page(value: str | None) -> str:
    """Where to go after logging in: a portal path only (never another site: `//host`, `/\\host`)."""
    if value and (value == "/ui" or value.startswith(("/ui/", "/ui?"))) and not any(c in value for c in "\\\r\n"):
        return value
    return "/ui"
