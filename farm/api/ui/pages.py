"""The portal's pages: the queue, jobs, a job, runs, a run, pools, a pool.

Each page calls the API's own handlers as functions (farm.api.jobs.get_job, list_jobs,
farm.api.runs.get_run, ...), with the caller's Principal, so what a tenant sees here is what
the API shows it: its own jobs and runs (another tenant's is a 404), any pool. The routes
are sync: the handlers read the store, in a worker thread. A listing is a page of the API's
listing, never the whole index: 10,000 jobs cost the jobs page its 50.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from farm.api import jobs as jobs_api
from farm.api import pools as pools_api
from farm.api import runs as runs_api
from farm.api.auth import Principal
from farm.api.queue import queue
from farm.api.ui import logpage, present
from farm.api.ui.parts import Parts, parts
from farm.api.ui.portal import PortalRoute, render
from farm.api.ui.session import Visitor, visitor
from farm.api.wait import job_wait
from farm.errors import Forbidden, InvalidInput, NotFound
from farm.models import Job, JobState, RunState
from farm.store.ids import is_whole
from farm.wait import JobWait

router = APIRouter(prefix="/ui", route_class=PortalRoute)
Seen = Annotated[Visitor, Depends(visitor)]
PAGE = 50  # rows of a listing
RUN_PAGE = 20
LABEL_SCAN_RUNS = 200  # runs a label filter looks through per page
FILTER_SCAN = 2_000  # jobs a state or pool filter looks through per page
ROWS_MAX = 500  # jobs one page shows at most (a page of runs of 500 jobs each)
QUEUE_FIELDS = ("queued", "running", "oldest_wait", "idle", "busy", "starting", "draining", "start_failure")
COUNTS = ("queued", "running", "idle", "busy", "starting", "draining")


def job_id(p: Parts, who: Principal, typed: str) -> str:
    """The job an id or prefix names among the caller's (as the API's JobId does)."""
    return typed if is_whole(typed) else p.jobs.resolve(typed, tenant=who.scope)


def run_id(p: Parts, who: Principal, typed: str) -> str:
    return typed if is_whole(typed) else p.runs.resolve(typed, tenant=who.scope)


def queue_cells(answer: dict[str, Any]) -> dict[str, dict[str, str]]:
    """/v1/queue's answer as the queue page's cells: pool -> field -> text (the page, and the
    poll that keeps it live, show the same)."""
    out = {}
    for pool in answer["pools"]:
        ex = pool["executors"]
        failure = pool.get("last_start_failure")
        out[pool["name"]] = {
            "queued": str(pool["queued"]), "running": str(pool["running"]),
            "oldest_wait": present.duration(pool["oldest_wait_s"]) if pool["queued"] else "",
            "idle": str(ex.get("idle", 0)), "busy": str(ex.get("busy", 0)), "starting": str(ex.get("starting", 0)),
            "draining": str(ex.get("draining", 0)), "start_failure": failure["reason"][:200] if failure else "",
        }  # fmt: skip
    return out


@router.get("", response_class=HTMLResponse)
def home(request: Request, seen: Seen) -> Response:
    p = parts(request)
    answer = queue(p.config, p.jobs, p.registry)
    return render(request, "queue.html", seen, section="queue", cells=queue_cells(answer), fields=QUEUE_FIELDS, numeric=COUNTS,
                  degraded=answer["degraded"], restarts=answer["restarts"])  # fmt: skip


def _row(job: Job, now: dt.datetime) -> dict[str, Any]:
    """A job as a listing's row."""
    waited = present.between(job.queued_at, job.started_at or job.finished_at, now)
    ran = present.between(job.started_at, job.finished_at, now)
    name = job.spec.name or (job.spec.steps[0].name if job.spec.steps else job.spec.kind)
    return {"job": job, "name": name, "waited": waited, "ran": ran}


def _keep(state: JobState | None, pool: str | None) -> Any:
    return lambda j: (state is None or j.state == state) and (pool is None or j.spec.pool == pool)


def _of_run(p: Parts, who: Principal, typed: str, state: JobState | None, pool: str | None, label: tuple[str, str] | None,
            offset: int) -> tuple[list[Job], str | None]:  # fmt: skip
    """A page of a run's jobs (in the order submitted) from `offset`, and the next offset."""
    run = runs_api.get_run(run_id(p, who, typed), who, p.runs)
    if label is not None and run.labels.get(label[0]) != label[1]:
        return [], None
    keep, found, i = _keep(state, pool), [], offset
    while i < len(run.jobs) and len(found) < PAGE:
        batch = run.jobs[i : i + 100]
        by_id = {j.id: j for j in p.jobs.get_many(batch)}
        for k, jid in enumerate(batch):
            job = by_id.get(jid)
            if job is not None and keep(job):
                found.append(job)
                if len(found) == PAGE:
                    i += k + 1
                    break
        else:
            i += len(batch)
    return found, str(i) if i < len(run.jobs) else None


def _of_label(p: Parts, who: Principal, label: tuple[str, str], state: JobState | None, pool: str | None,
              cursor: str | None) -> tuple[list[Job], str | None]:  # fmt: skip
    """Jobs of the caller's runs labelled `label`, newest run first: the runs of up to
    LABEL_SCAN_RUNS looked through (pages of the API's run listing), until PAGE jobs are found."""
    keep, found, scanned = _keep(state, pool), [], 0
    while scanned < LABEL_SCAN_RUNS and len(found) < PAGE:
        page = runs_api.list_runs(who, p.runs, state=None, name=None, tenant=None, limit=10, cursor=cursor)
        scanned += len(page.runs)
        ids = [jid for r in page.runs if r.labels.get(label[0]) == label[1] for jid in r.jobs][: ROWS_MAX - len(found)]
        found += [j for j in p.jobs.get_many(ids) if keep(j)]
        cursor = page.next_cursor
        if cursor is None:
            break
    return found, cursor


def _filtered(p: Parts, who: Principal, state: JobState | None, pool: str | None, tenant: str | None,
              cursor: str | None) -> tuple[list[Job], str | None]:  # fmt: skip
    """A page of the jobs in `state` and `pool`: the API's listing (its scoping, as
    list_jobs applies it), looking through FILTER_SCAN jobs at most. A rare state among 10,000
    jobs would have the API's listing read all of them for one page; the portal pages the
    search instead, and "Older" goes on from where it stopped."""
    if tenant is not None and not who.admin and tenant != who.tenant:
        raise Forbidden("a tenant lists its own jobs only")
    scope = tenant if who.admin else who.tenant
    return _cursor(p.jobs.list(tenant=scope, state=state, pool=pool, limit=PAGE, cursor=int(cursor) if cursor else None,
                               scan_max=FILTER_SCAN))  # fmt: skip


def _cursor(page: tuple[list[Job], int | None]) -> tuple[list[Job], str | None]:
    return page[0], None if page[1] is None else str(page[1])


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    seen: Seen,
    state: Annotated[str, Query(max_length=20)] = "",
    pool: Annotated[str, Query(max_length=63)] = "",
    run: Annotated[str, Query(max_length=32)] = "",
    label: Annotated[str, Query(max_length=400)] = "",
    tenant: Annotated[str, Query(max_length=63)] = "",
    cursor: Annotated[str, Query(pattern=r"^[0-9]{0,18}$")] = "",
) -> Response:
    p, who = parts(request), seen.who
    wanted = _state(state, JobState)
    by_label = present.label(label) if label else None
    if label and by_label is None:
        raise InvalidInput("a label filter is key=value", ("query", "label"))
    if run:
        found, nxt = _of_run(p, who, run.strip(), wanted, pool or None, by_label, int(cursor or 0))
    elif by_label is not None:
        found, nxt = _of_label(p, who, by_label, wanted, pool or None, cursor or None)
    elif wanted is None and not pool:
        page = jobs_api.list_jobs(who, p.jobs, tenant=tenant or None, limit=PAGE, cursor=cursor or None)
        found, nxt = page.jobs, page.next_cursor
    else:
        found, nxt = _filtered(p, who, wanted, pool or None, tenant or None, cursor or None)
    now = dt.datetime.now(dt.timezone.utc)
    filters = {"state": state, "pool": pool, "run": run, "label": label, "tenant": tenant}
    partial = bool(nxt) and len(found) < PAGE  # the search stopped before a full page: "Older" searches on
    return render(request, "jobs.html", seen, section="jobs", rows=[_row(j, now) for j in found], next_cursor=nxt,
                  filters=filters, states=[s.value for s in JobState], pools=p.config.pools, graph=False, actions=False,
                  partial=partial)  # fmt: skip


def _state(text: str, kind: Any) -> Any:
    if not text:
        return None
    if text not in {s.value for s in kind}:
        raise InvalidInput(f"no state {text!r}; states are: {', '.join(s.value for s in kind)}", ("query", "state"))
    return kind(text)


@router.get("/jobs/{typed}", response_class=HTMLResponse)
def job_page(request: Request, seen: Seen, typed: str, before: Annotated[str, Query(max_length=60)] = "") -> Response:
    p, who = parts(request), seen.who
    job = jobs_api.get_job(job_id(p, who, typed), who, p.jobs)
    window = logpage.read_window(p.jobs, job.id, before or None)
    now = dt.datetime.now(dt.timezone.utc)
    wait = None
    if job.state is JobState.QUEUED:
        wait = wait_of(p, who, job.id)
    live = job.state is JobState.RUNNING and not before
    return render(request, "job.html", seen, section="jobs", job=job, row=_row(job, now), window=window, live=live,
                  paged=bool(before), wait=wait, ended=job.state.terminal)  # fmt: skip


def wait_of(p: Parts, who: Principal, job_id: str) -> dict[str, Any]:
    """Why the job waits (GET /v1/jobs/{id}/wait's answer), as the job page's box shows it,
    and its poll (the same text, so the box reads alike before and after a refresh)."""
    return wait_box(job_wait(job_id, who, p.jobs, p.registry, p.policies, p.config))


def wait_box(w: JobWait) -> dict[str, Any]:
    place = "" if w.position is None else f"{w.position} job{'' if w.position == 1 else 's'} ahead" + (
        f" ({w.position_in_tenant} of them this tenant's)" if w.position_in_tenant else "") + (" or more" if w.ahead_capped else "")
    estimate = "" if w.estimate is None else f"in about {present.duration(w.estimate.start_in_s)} ({w.estimate.method})"
    return {
        "state": w.state.value, "waiting": w.waiting, "summary": w.summary, "waited": present.duration(w.waited_s),
        "reasons": [{"code": r.code, "text": r.text} for r in w.reasons], "place": place, "estimate": estimate,
        "timeout": "" if w.queue_timeout_left_s is None else present.duration(w.queue_timeout_left_s),
    }  # fmt: skip


@router.get("/runs", response_class=HTMLResponse)
def runs_page(
    request: Request,
    seen: Seen,
    state: Annotated[str, Query(max_length=20)] = "",
    name: Annotated[str, Query(max_length=200)] = "",
    cursor: Annotated[str, Query(pattern=r"^[0-9]{0,18}$")] = "",
) -> Response:
    p = parts(request)
    page = runs_api.list_runs(seen.who, p.runs, state=_state(state, RunState), name=name or None, tenant=None, limit=RUN_PAGE,
                              cursor=cursor or None)  # fmt: skip
    now = dt.datetime.now(dt.timezone.utc)
    rows = [{"run": r, "took": present.between(r.created_at, r.finished_at, now)} for r in page.runs]
    return render(request, "runs.html", seen, section="runs", rows=rows, next_cursor=page.next_cursor,
                  filters={"state": state, "name": name}, states=[s.value for s in RunState])  # fmt: skip


@router.get("/runs/{typed}", response_class=HTMLResponse)
def run_page(request: Request, seen: Seen, typed: str) -> Response:
    p, who = parts(request), seen.who
    run = runs_api.get_run(run_id(p, who, typed), who, p.runs)
    now = dt.datetime.now(dt.timezone.utc)
    by_id = {j.id: j for j in p.jobs.get_many(run.jobs[:ROWS_MAX])}
    graph = {g.id: g for g in run.graph or []}
    rows = [{**_row(by_id[jid], now), "node": graph.get(jid)} for jid in run.jobs[:ROWS_MAX] if jid in by_id]
    ended = run.state not in (RunState.QUEUED, RunState.RUNNING)
    return render(request, "run.html", seen, section="runs", run=run, rows=rows, ended=ended, more=max(0, len(run.jobs) - ROWS_MAX),
                  took=present.between(run.created_at, run.finished_at, now), graph=bool(run.graph), actions=True)  # fmt: skip


@router.get("/pools", response_class=HTMLResponse)
def pools_page(request: Request, seen: Seen) -> Response:
    p = parts(request)
    answer = pools_api.list_pools(seen.who, p.config, p.jobs, p.registry, p.policies)
    return render(request, "pools.html", seen, section="pools", pools=answer.pools)


def changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """A policy change as the fields it changed: (field, before, after)."""
    before, after = before or {}, after or {}
    return [(k, before.get(k), after.get(k)) for k in sorted({*before, *after}) if before.get(k) != after.get(k)]


@router.get("/pools/{name}", response_class=HTMLResponse)
def pool_page(request: Request, seen: Seen, name: str) -> Response:
    p, who = parts(request), seen.who
    policy = pools_api.get_policy(name, who, p.config, p.policies, Response())
    history = pools_api.policy_history(name, who, p.config, p.policies, limit=20).changes
    decided = pools_api.decisions(name, who, p.config, p.policies, limit=30).decisions
    summary = next((s for s in pools_api.list_pools(who, p.config, p.jobs, p.registry, p.policies).pools if s.name == name), None)
    if summary is None:
        raise NotFound(f"no pool {name}")
    fields = policy.policy.model_dump(mode="json") if policy.policy is not None else {}
    fields = {"kind": fields.pop("kind"), **fields} if "kind" in fields else fields
    return render(request, "pool.html", seen, section="pools", name=name, summary=summary, policy=policy, fields=fields,
                  history=[{"change": c, "fields": changes(c.before, c.after)} for c in history], decisions=decided)  # fmt: skip
