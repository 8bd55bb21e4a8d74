"""What portal.js reads besides the pages, and the files a page names: the queue's live
counts, a queued job's wait, windows of a log, its live events, artifacts and the static
files. JSON answers carry text already written for people (portal.js only sets
`textContent`); a log's text is `present.visible`'s, as the page's is.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from farm.api import jobs as jobs_api
from farm.api.gate import FollowerStream
from farm.api.queue import queue
from farm.api.ui import logpage
from farm.api.ui.pages import job_id, queue_cells, wait_of
from farm.api.ui.parts import parts
from farm.api.ui.portal import STATIC, PortalRoute, json_answer
from farm.api.ui.session import Visitor, visitor
from farm.errors import NotFound

router = APIRouter(prefix="/ui", route_class=PortalRoute)
Seen = Annotated[Visitor, Depends(visitor)]


@router.get("/queue.json")
def queue_feed(request: Request, seen: Seen) -> Response:
    p = parts(request)
    answer = queue(p.config, p.jobs, p.registry)
    cells = {f"{pool}|{field}": text for pool, row in queue_cells(answer).items() for field, text in row.items()}
    return json_answer({"cells": cells})


@router.get("/jobs/{typed}/wait.json")
def wait_feed(request: Request, seen: Seen, typed: str) -> Response:
    p = parts(request)
    return json_answer(wait_of(p, seen.who, job_id(p, seen.who, typed)))


@router.get("/jobs/{typed}/log.json")
def log_window(request: Request, seen: Seen, typed: str, before: Annotated[str, Query(max_length=60)] = "") -> Response:
    """The window of the log before `before` (a cursor from the page or an earlier window)."""
    p = parts(request)
    job = jobs_api.get_job(job_id(p, seen.who, typed), seen.who, p.jobs)
    found = logpage.read_window(p.jobs, job.id, before or None)
    return json_answer({"text": found.text, "earlier": found.earlier})


@router.get("/jobs/{typed}/log/events")
async def log_events(
    request: Request,
    seen: Seen,
    typed: str,
    after: Annotated[str, Query(pattern=r"^(-|[0-9]{1,20}-[0-9]{1,20})$")] = "-",
    last_event_id: Annotated[str | None, Header(pattern=r"^[0-9]{1,20}-[0-9]{1,20}$")] = None,
) -> Response:
    """The log after entry `after` as it is written, as server-sent events (a reconnecting
    EventSource's Last-Event-ID wins: it goes on where it was). Bounded as the API's log
    followers are: per tenant, and in time. A job that ended meanwhile gets the rest of its
    log, then `end`."""
    p, who = parts(request), seen.who
    job = await run_in_threadpool(lambda: jobs_api.get_job(job_id(p, who, typed), who, p.jobs))
    p.followers.admit(who.tenant)
    stream = logpage.follow(p.jobs, job.id, last_event_id or after, max_s=p.followers.max_s, stopping=p.stopping)
    return FollowerStream(stream, on_close=lambda: p.followers.leave(who.tenant), media_type="text/event-stream",
                          headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip


@router.get("/jobs/{typed}/artifacts/{name:path}")
def artifact(request: Request, seen: Seen, typed: str, name: str) -> Response:
    """An artifact's bytes, as GET /v1/jobs/{id}/artifacts/{name} serves them (an attachment:
    the browser saves it, never renders it here)."""
    p = parts(request)
    return jobs_api.get_artifact(job_id(p, seen.who, typed), name, seen.who, p.jobs, p.artifacts)


@router.get("/static/{name}")
def static(name: str) -> Response:
    found = STATIC.get(name)
    if found is None:
        raise NotFound(f"no file {name}")
    return Response(found[0], media_type=found[1])

