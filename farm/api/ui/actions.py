"""The portal's forms: log in, log out, cancel a job or a run, re-run a job.

Every form that acts carries the session's CSRF token and must come from this farm's own
pages (session.checked_form); the login form, which has no session yet, must come from
them too (session.same_site). An action calls the API's handler (farm.api.jobs.cancel_job,
rerun_job, farm.api.runs.cancel_run) with the visitor's Principal: the API's rules, and its
errors, hold here as they are. Each answers with a redirect (303), so a reload never posts
the form again.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from farm.api import jobs as jobs_api
from farm.api import runs as runs_api
from farm.api.auth import Principal
from farm.api.gate import ACTED_ON
from farm.api.ui.pages import job_id, run_id
from farm.api.ui.parts import parts
from farm.api.ui.portal import PortalRoute, render
from farm.api.ui.session import Visitor, checked_form, clear_cookie, next_page, read_form, same_site, set_cookie, visitor
from farm.audit import AuditRecord
from farm.errors import Unauthorized
from farm.roles import Role
from farm.settings import hash_token

router = APIRouter(prefix="/ui", route_class=PortalRoute)
Seen = Annotated[Visitor, Depends(visitor)]


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


async def _audited(request: Request, who: Principal | None, action: str, targets: list[str], status: int, on_tenant: str = "") -> None:
    """A portal action into the audit trail, as the gate writes the API's (the portal's
    forms do not pass the gate); `on_tenant`: whose job or run it acted on."""
    record = AuditRecord(actor=who.token_id if who else "", name=who.token_name if who else "", tenant=who.tenant if who else "",
                         role=who.role.value if who else "", on_tenant=on_tenant,
                         client=request.client.host if request.client else "", action=action, targets=targets, status=status,
                         method=request.method, path=request.url.path)  # fmt: skip
    trail = parts(request).audit
    await (trail.refused(record) if status in (401, 403) else trail.append(record))


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: Annotated[str, Query(max_length=2000)] = "/ui") -> Response:  # noqa: A002
    return render(request, "login.html", None, next=next_page(next), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """A token typed into the form opens a session: the cookie names the session, the session
    the token's digest. A token farm does not know is the form again, with why (401)."""
    same_site(request)
    form = await read_form(request)
    token, goto = form.get("token", "").strip(), next_page(form.get("next"))
    p = parts(request)
    try:
        if not token:
            raise Unauthorized("no token")
        who = await p.tokens.aresolve_digest(hash_token(token))
    except Unauthorized as e:
        await _audited(request, getattr(e, "who", None), "portal.login", [], 401)  # a known token refused: under its name
        return render(request, "login.html", None, status=401, next=goto, error="farm does not know this token")
    session = await run_in_threadpool(p.sessions.create, hash_token(token))
    await _audited(request, who, "portal.login", [], 303)
    response = _back(goto)
    set_cookie(response, request, session, p.sessions.ttl_s)
    return response


@router.post("/logout")
async def logout(request: Request, seen: Seen) -> Response:
    await checked_form(request, seen)
    await run_in_threadpool(parts(request).sessions.delete, seen.session.id)
    response = _back("/ui/login")
    clear_cookie(response, request)
    return response


@router.post("/jobs/{typed}/cancel")
async def cancel_job(request: Request, seen: Seen, typed: str) -> Response:
    await checked_form(request, seen)
    seen.may(Role.SUBMITTER)
    p = parts(request)
    job = await run_in_threadpool(lambda: jobs_api.cancel_job(job_id(p, seen.who, typed), seen.who, p.jobs))
    await _audited(request, seen.who, "job.cancel", [job.id], 303, job.tenant)
    return _back(f"/ui/jobs/{job.id}")


@router.post("/jobs/{typed}/rerun")
async def rerun_job(request: Request, seen: Seen, typed: str) -> Response:
    await checked_form(request, seen)
    seen.may(Role.SUBMITTER)
    p = parts(request)
    found = await run_in_threadpool(job_id, p, seen.who, typed)
    job = await jobs_api.rerun_job(request, found, seen.who, p.jobs, p.config, p.tenants.get(seen.who.tenant), p.resolve)
    await _audited(request, seen.who, "job.rerun", [found, job.id], 303, request.scope["state"][ACTED_ON])  # the rerun job's tenant
    return _back(f"/ui/jobs/{job.id}")


@router.post("/runs/{typed}/cancel")
async def cancel_run(request: Request, seen: Seen, typed: str) -> Response:
    await checked_form(request, seen)
    seen.may(Role.SUBMITTER)
    p = parts(request)
    found = await run_in_threadpool(run_id, p, seen.who, typed)
    run = await runs_api.cancel_run(found, seen.who, p.runs)
    await _audited(request, seen.who, "run.cancel", [run.id], 303, run.tenant)
    return _back(f"/ui/runs/{run.id}")
