"""/healthz and /metrics: unauthenticated, as Prometheus and load balancers expect.

/healthz runs on the event loop with the asyncio client and a short timeout: it answers
(200, `degraded` while the store refuses writes, or 503 when Redis is away) even when every
worker thread is busy."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from farm.api.deps import Jobs, MetricsRegistry
from farm.api.errors import UNAVAILABLE
from farm.api.public import HealthPublic
from farm.errors import StoreUnavailable
from farm.store.client import translated
from farm.store.health import adegraded

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic, responses=UNAVAILABLE)
async def healthz(jobs: Jobs) -> dict[str, Any]:
    """200 while the store answers: `degraded` (with reasons) when it refuses writes, as a
    full disk makes it. Still 200 then: reads work, and a probe must not take every replica
    out of service for what no replica can fix."""
    assert jobs.aclient is not None
    try:
        why = await asyncio.wait_for(adegraded(jobs.aclient), timeout=2.0)
    except TimeoutError as e:
        raise StoreUnavailable("redis did not answer within 2s") from e
    return {"status": "degraded" if why else "ok", "reasons": why}


@router.get("/metrics", response_class=PlainTextResponse, responses=UNAVAILABLE)
def metrics(registry: MetricsRegistry) -> Response:
    with translated():
        body = generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
