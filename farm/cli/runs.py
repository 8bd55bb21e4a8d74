"""Runs from the command line: `farm run submit run.yaml [-w|-f]`, `farm run get/ls/cancel`.

A run file holds `name`, `jobs` (job specs, as `farm submit` takes one), and optionally
`labels`, `supersede: {group: ...}` and `callback_url`; a job may have a `name` and `needs`
(names of the run's jobs it waits for). With `-f`, every job's log is followed, each line
prefixed with the job's index and name (or first step), those that can start first."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from farm.cli.jobs import Json, load_file
from farm.cli.output import CANCELLED, FAILED, OK, Command, Group, err, flag, out, print_json
from farm.cli.root import app
from farm.client import ApiError, FarmClient
from farm.models import run_order

run_app = typer.Typer(cls=Group, help="Runs: a pipeline's jobs submitted, followed and cancelled as one.", no_args_is_help=True)
app.add_typer(run_app, name="run")

RUN_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
_RUN_CODES = {"succeeded": OK, "failed": FAILED, "cancelled": CANCELLED}
ENDED = ("succeeded", "failed", "cancelled", "timed_out", "expired")


def _counts(run: dict[str, Any]) -> str:
    return ", ".join(f"{n} {state}" for state, n in run["counts"].items() if n) or "no jobs"


def _summary(run: dict[str, Any]) -> str:
    by = f", superseded by {run['superseded_by']}" if run.get("superseded_by") else ""
    return f"run {run['id']} {run['state']} ({_counts(run)}{by})"


def _end(run: dict[str, Any]) -> None:
    err.print(_summary(run), highlight=False)
    raise typer.Exit(_RUN_CODES.get(run["state"], FAILED))


def _wait(client: FarmClient, run: dict[str, Any]) -> dict[str, Any]:
    t0 = time.monotonic()
    with err.status("") as status:
        while run["finished_at"] is None:
            status.update(f"{run['id'][:12]} {run['state']}: {_counts(run)} · {time.monotonic() - t0:.0f}s")
            time.sleep(0.5)
            run = client.run(run["id"])
    return run


def _label(i: int, spec: dict[str, Any], width: int) -> str:
    """A job's prefix: its index and its name in the run, else its first step's."""
    steps = spec.get("steps") or []
    name = spec.get("name") or (steps[0].get("name", "") if steps and isinstance(steps[0], dict) else spec.get("kind", ""))
    return f"{i:>{width}} {name}"[:24]


def _in_order(run: dict[str, Any]) -> list[int]:
    """The run's jobs in the order they can start (what they need first): a pipeline's
    followers wait on the jobs that run now, not on those that wait for them."""
    graph = run.get("graph")
    if not graph:
        return list(range(len(run["jobs"])))
    order = run_order([(node.get("name"), node.get("needs") or []) for node in graph])
    return order + [i for i in range(len(graph)) if i not in set(order)]


FOLLOW_AT_ONCE = 8  # logs followed at once (a tenant may hold api.max_followers_per_tenant, 20 by default)
LINE_MAX = 64 * 1024  # a line longer than this without its newline is printed in pieces


def _follow_all(client: FarmClient, run: dict[str, Any], specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every job's log, each whole line prefixed with its job, until the run ends. At most
    FOLLOW_AT_ONCE are followed at a time (the rest wait their turn, and print their log
    from its start), so a big run stays under the server's cap on open followers."""
    lock = threading.Lock()
    width = len(str(len(run["jobs"]) - 1))
    labels = [_label(i, specs[i] if i < len(specs) else {}, width) for i in range(len(run["jobs"]))]
    pad = max(len(label) for label in labels)

    def follow(i: int, job_id: str) -> None:
        prefix, pieces, held, offset = f"[{labels[i]:<{pad}}] ", [], 0, 0

        def emit(lines: list[str]) -> None:
            with lock:
                for line in lines:
                    out.out(prefix + line, highlight=False)

        own = FarmClient(client.url, client.token)  # a connection of its own: one stream each
        try:
            while True:
                try:
                    for text in own.follow(job_id, offset=offset):
                        offset += len(text.encode())
                        *whole, last = text.split("\n")
                        if whole:
                            emit(["".join(pieces) + whole[0], *whole[1:]])
                            pieces, held = [], 0
                        if last:
                            pieces.append(last)
                            held += len(last)
                            if held > LINE_MAX:
                                emit(["".join(pieces)])
                                pieces, held = [], 0
                except ApiError as e:
                    if e.status != 429:
                        raise
                    time.sleep(1.0)  # the server's cap on followers: try again shortly
                    continue
                if own.get(job_id)["state"] in ENDED:
                    break
            if pieces:
                emit(["".join(pieces)])
        finally:
            own.close()

    order = _in_order(run)
    with ThreadPoolExecutor(FOLLOW_AT_ONCE, thread_name_prefix="follow") as pool:
        list(pool.map(follow, order, [run["jobs"][i] for i in order]))  # a follow's error is raised here
    while (run := client.run(run["id"]))["finished_at"] is None:  # the last job's end is written with the run's
        time.sleep(0.2)
    return run


@run_app.command("submit", cls=Command)
def run_submit(
    file: Annotated[str, typer.Argument(help="Run file (YAML/JSON): name, jobs, labels, supersede; '-' for stdin.")],
    wait: Annotated[bool, flag("--wait", "-w", help="Wait for the end; exit 0 (succeeded), 1 (failed) or 125 (cancelled).")] = False,
    follow: Annotated[bool, flag("--follow", "-f", help="Stream every job's log while waiting, a prefix per job.")] = False,
    key: Annotated[Optional[str], typer.Option("--idempotency-key", help="Submit at most once per key (24 h).")] = None,
    as_json: Json = False,
) -> None:
    """Submit a run: all its jobs queued at once, or none (a bad job is named by its index)."""
    spec = load_file(file, "a run file")
    client = FarmClient()
    run = client.submit_run(spec, idempotency_key=key)
    if not (wait or follow):
        if as_json:
            print_json(run)
        else:
            out.print(run["id"], highlight=False)
        return
    err.print(f"submitted run {run['id']}: {len(run['jobs'])} jobs", highlight=False)
    jobs = spec.get("jobs") if isinstance(spec.get("jobs"), list) else []
    _end(_follow_all(client, run, jobs) if follow else _wait(client, run))


@run_app.command("get", cls=Command)
def run_get(run_id: str, as_json: Json = False) -> None:
    """A run: its state, and each job's."""
    client = FarmClient()
    run = client.run(run_id)
    if as_json:
        print_json(run)
        return
    out.print(_summary(run), highlight=False)
    out.print(f"{run['name']} · tenant {run['tenant']} · created {run['created_at']}"
              + (f" · finished {run['finished_at']}" if run.get("finished_at") else ""), highlight=False)  # fmt: skip
    graph = run.get("graph")
    if graph:  # a pipeline: each job's needs, and what it still waits on
        table = Table("#", "job", "name", "needs", "state")
        for i, node in enumerate(graph):
            state = node["state"] or "purged"
            if node.get("error") and state != "succeeded":
                state += f" ({node['error']})"
            if node.get("waiting_on"):
                state += f", waiting on {', '.join(node['waiting_on'])}"
            table.add_row(str(i), node["id"][:12], node.get("name") or "", ", ".join(node.get("needs") or []), state)
        out.print(table)
        return
    table = Table("#", "job", "state", "pool", "first step")
    for i, job_id in enumerate(run["jobs"]):
        job = client.get(job_id)
        steps = job["spec"].get("steps") or []
        table.add_row(str(i), job_id[:12], job["state"], job["spec"]["pool"], steps[0]["name"][:20] if steps else job["spec"]["kind"])
    out.print(table)


@run_app.command("ls", cls=Command)
def run_ls(
    state: Annotated[Optional[str], typer.Option(help=f"Only runs in this state: {', '.join(RUN_STATES)}.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Only runs of this name.")] = None,
    tenant: Annotated[Optional[str], typer.Option(help="Only this tenant's runs (admin token).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
    as_json: Json = False,
) -> None:
    """List runs, newest first."""
    if state is not None and state not in RUN_STATES:
        raise typer.BadParameter(f"{state!r} is not a run state; use one of {', '.join(RUN_STATES)}", param_hint="--state")
    page = FarmClient().runs(state=state, name=name, tenant=tenant, limit=limit)
    if as_json:
        print_json(page)
        return
    table = Table("run", "state", "name", "jobs", "created")
    for r in page["runs"]:
        table.add_row(r["id"][:12], r["state"], r["name"][:28], str(len(r["jobs"])), r["created_at"][5:19].replace("T", " "))
    out.print(table)
    if page.get("next_cursor"):
        err.print(f"more: --limit, or GET /v1/runs?cursor={page['next_cursor']}", highlight=False)


@run_app.command("cancel", cls=Command)
def run_cancel(run_id: str, as_json: Json = False) -> None:
    """Cancel every job of a run that has not ended (running steps are killed within 2 s)."""
    run = FarmClient().cancel_run(run_id)
    if as_json:
        print_json(run)
    else:
        out.print(_summary(run), highlight=False)
