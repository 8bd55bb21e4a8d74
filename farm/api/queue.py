"""/v1/queue: each pool's queue and executors, and the parts of the farm restarted so far."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request

from farm.api.auth import principal
from farm.api.errors import COMMON
from farm.api.public import QueuePublic
from farm.queue import summarize
from farm.store.nodes import NodeBook

router = APIRouter(prefix="/v1", tags=["queue"], dependencies=[Depends(principal)], responses=COMMON)


@router.get("/queue", response_model=QueuePublic)
def queue(request: Request) -> dict[str, Any]:
    st = request.app.state
    pools = [asdict(p) for p in summarize(st.store, st.registry, st.settings.pools)]
    return {"pools": pools, "restarts": NodeBook(st.store.client, st.store.keys).restarts()}
