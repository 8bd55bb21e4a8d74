"""/healthz and /metrics: unauthenticated, as Prometheus and load balancers expect.

/healthz runs on the event loop with the asyncio client and a short timeout: it answers
(200, or 503 when Redis is away) even when every worker thread is busy."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from farm.api.errors import UNAVAILABLE
from farm.api.public import HealthPublic
from farm.errors import StoreUnavailable
from farm.store.jobs import translated

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic, responses=UNAVAILABLE)
async def healthz(request: Request) -> dict[str, str]:
    try:
        with translated():
            await asyncio.wait_for(request.app.state.store.aclient.ping(), timeout=2.0)
    except TimeoutError as e:
        raise StoreUnavailable("redis did not answer within 2s") from e
    return {"status": "ok"}


@router.get("/metrics", response_class=PlainTextResponse, responses=UNAVAILABLE)
def metrics(request: Request) -> Response:
    with translated():
        body = generate_latest(request.app.state.metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
