"""How errors leave the API: one body shape, one mapping from the error tree, and the
statuses each route documents in the OpenAPI spec.

Every error body is `{"detail": <message>}`, except validation errors (422), which are
`{"detail": [{"loc": [...], "msg": ..., "type": ...}]}` (FastAPI's shape, so clients parse
one format). A 422 never echoes the request back: at most a short prefix of the offending
value (`input`), so a 50 MB body is not answered with itself.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from farm.errors import (
    Ambiguous,
    Conflict,
    FarmError,
    Forbidden,
    InvalidInput,
    NotFound,
    StaleAttempt,
    StoreUnavailable,
    TooManyRequests,
    Unauthorized,
)
from farm.fieldnames import unknown_field
from farm.store.client import store_error
from farm.store.ids import SHOWN

log = logging.getLogger("farm.api")

INPUT_PREFIX = 64  # characters of an offending value a 422 may show

_STATUS: list[tuple[type[FarmError], int]] = [
    (InvalidInput, 422),
    (NotFound, 404),
    (Unauthorized, 401),
    (Forbidden, 403),
    (Conflict, 409),
    (StaleAttempt, 409),
    (TooManyRequests, 429),
    (StoreUnavailable, 503),
]


class ErrorBody(BaseModel):
    detail: str


class IdMatch(BaseModel):
    id: str
    state: str


class AmbiguousBody(ErrorBody):
    """A 409 of a route that takes an id: a prefix that begins more than one id lists them;
    any other conflict has `detail` only."""

    matches: list[IdMatch] = Field(default_factory=list, description=f"the ids it begins ({SHOWN} at most), with their states")


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    input: str | None = None


class ValidationErrorBody(BaseModel):
    detail: list[FieldError]


def _doc(description: str, model: type[BaseModel] = ErrorBody, headers: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"model": model, "description": description}
    if headers:
        doc["headers"] = {name: {"description": text, "required": True, "schema": {"type": "string"}}
                          for name, text in headers.items()}  # fmt: skip
    return doc


# What any authenticated /v1 route may answer besides its own success (the gate's 401, 408,
# 413 and 429, the store's 503), and the extras a route adds by name.
UNAVAILABLE = {503: _doc("Redis cannot be reached")}
COMMON: dict[int | str, dict[str, Any]] = {
    401: _doc("No bearer token, or one farm did not issue", headers={"WWW-Authenticate": "the scheme to use: Bearer"}),
    408: _doc("The request body did not arrive within api.body_timeout_s of the request's head"),
    413: _doc("The request body is over api.max_body_bytes"),
    422: _doc("A parameter or the body is invalid: one entry per field, with its path", ValidationErrorBody),
    429: _doc("The tenant is over a per-tenant cap (requests in progress, log followers); retry later",
              headers={"Retry-After": "seconds to wait"}),
    **UNAVAILABLE,
}
NOT_FOUND = {404: _doc("No such job (or one of another tenant), pool or entry")}
FORBIDDEN = {403: _doc("The token's role does not allow this (the route's x-farm-role says which it needs), or a tenant permission is missing")}
CONFLICT = {409: _doc("The resource's state or version does not allow this")}
_PREFIX = "The id given is a prefix of more than one of the caller's ids: `matches` lists them"
AMBIGUOUS = {409: _doc(_PREFIX, AmbiguousBody)}
AMBIGUOUS_OR_CONFLICT = {409: _doc(f"{_PREFIX}; or the resource's state does not allow this", AmbiguousBody)}


def errors_as_json(document: dict[str, Any]) -> dict[str, Any]:
    """Every error body is JSON. FastAPI documents a route's extra responses in the media
    type of its response class (text/plain for the log, for one): make them application/json."""
    for item in document.get("paths", {}).values():
        for operation in item.values():
            for code, response in operation.get("responses", {}).items():
                content = response.get("content")
                if code[:1] in ("4", "5") and content and set(content) != {"application/json"}:
                    schema = content.get("application/json", next(iter(content.values()))).get("schema", {})
                    response["content"] = {"application/json": {"schema": schema}}
    return document


def _short(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None  # a whole object or list is the request itself: never echoed
    text = value if isinstance(value, str) else repr(value)
    text = text if len(text) <= INPUT_PREFIX else text[:INPUT_PREFIX] + "…"
    return text.encode("utf-8", "backslashreplace").decode()  # a lone surrogate is shown escaped, not re-sent


def field_errors(errors: Any, body: Any = None) -> list[dict[str, Any]]:
    """Validation errors as shown: location, message and type, and a short prefix of a
    scalar input; nothing else of the request. A field the body's schema (`body`, a type)
    does not have is an "unknown field", with the known one it was probably meant to be."""
    out = []
    for e in errors:
        entry = {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))[:500], "type": str(e.get("type", ""))}
        if entry["type"] == "extra_forbidden" and body is not None and entry["loc"][:1] == ["body"]:
            entry["msg"] = unknown_field(body, entry["loc"][1:])
        if (shown := _short(e.get("input"))) is not None:
            entry["input"] = shown
        out.append(entry)
    return out


def _body_type(request: Request) -> Any:
    """The type the matched route reads its body as (FastAPI puts the route in the scope)."""
    field = getattr(request.scope.get("route"), "body_field", None)
    return getattr(getattr(field, "field_info", None), "annotation", None)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": field_errors(exc.errors(), _body_type(request))}, status_code=422)


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own HTTP errors as they are, except the 400 of a body that cannot be parsed
    (bytes that are not UTF-8, say): that is a 422 in the one validation shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:
        why = f": {str(exc.__cause__)[:200]}" if exc.__cause__ is not None else ""
        return JSONResponse({"detail": [{"loc": ["body"], "msg": f"the body cannot be parsed as JSON{why}", "type": "json_invalid"}]},
                            status_code=422)  # fmt: skip
    return await http_exception_handler(request, exc)


async def unstorable(request: Request, exc: Exception) -> JSONResponse:
    """Input that validated but cannot be serialised to be stored (text with a lone
    surrogate where no field check caught it): the caller's input, so a 422, not a 500."""
    return JSONResponse({"detail": [{"loc": ["body"], "msg": "the body holds text that is not valid Unicode (a lone surrogate)",
                                     "type": "value_error"}]}, status_code=422)  # fmt: skip


async def store_failure(request: Request, exc: Exception) -> JSONResponse:
    """A redis-py error no store method translated: the store away or refusing (a full
    disk's MISCONF) is a 503 with the reason like any StoreUnavailable; anything else is a
    bug, a 500 logged once here."""
    mapped = store_error(exc)
    if mapped is not None:
        return await farm_error(request, mapped)
    log.error("store error in %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def status_of(exc: FarmError) -> int:
    """The HTTP status of a domain error (the portal's pages answer with the same ones)."""
    return next((c for cls, c in _STATUS if isinstance(exc, cls)), 500)


async def farm_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FarmError)
    code = status_of(exc)
    message = str(exc.args[0]) if exc.args else exc.__class__.__name__
    if isinstance(exc, InvalidInput):
        loc = list(exc.args[1]) if len(exc.args) > 1 else []
        return JSONResponse({"detail": [{"loc": loc, "msg": message, "type": "value_error"}]}, status_code=422)
    retry = str(getattr(exc, "retry_after_s", 5))
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else {"Retry-After": retry} if code == 429 else None
    body: dict[str, Any] = {"detail": message}
    if isinstance(exc, Ambiguous):
        body["matches"] = [{"id": i, "state": state} for i, state in exc.matches]
    return JSONResponse(body, status_code=code, headers=headers)
