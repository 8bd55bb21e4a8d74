"""The portal's router: every route under /ui, out of the API's schema (`/openapi.json`
documents the API, not the pages), with the middleware that sets their security headers.
`farm.api.app` includes the router and adds the middleware; nothing else of the app knows
the portal."""

from __future__ import annotations

from fastapi import APIRouter

from farm.api.ui import actions, feeds, pages
from farm.api.ui.headers import SecurityHeaders

router = APIRouter(include_in_schema=False)
for module in (actions, feeds, pages):
    router.include_router(module.router)

__all__ = ["router", "SecurityHeaders"]
