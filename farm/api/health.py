"""/healthz and /metrics: unauthenticated, as Prometheus and load balancers expect.

/healthz runs on the event loop with the asyncio client and a short timeout: it answers
(200, or 503 when Redis is away) even when every worker thread is busy."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from farm.api.deps import Jobs, MetricsRegistry
from farm.api.errors import UNAVAILABLE
from farm.api.public import HealthPublic
from farm.errors import StoreUnavailable
from farm.store.client import translated

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic, responses=UNAVAILABLE)
async def healthz(jobs: Jobs) -> dict[str, str]:
    try:
        await asyncio.wait_for(jobs.aping(), timeout=2.0)
    except TimeoutError as e:
        raise StoreUnavailable("redis did not answer within 2s") from e
    return {"status": "ok"}


@router.get("/metrics", response_class=PlainTextResponse, responses=UNAVAILABLE)
def metrics(registry: MetricsRegistry) -> Response:
    with translated():
        body = generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
