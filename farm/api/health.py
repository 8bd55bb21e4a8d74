"""/healthz and /metrics: unauthenticated, as Prometheus and load balancers expect."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from farm.store.jobs import translated

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(request: Request) -> dict[str, str]:
    with translated():
        request.app.state.store.client.ping()
    return {"status": "ok"}


@router.get("/metrics")
def metrics(request: Request) -> Response:
    with translated():
        body = generate_latest(request.app.state.metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
