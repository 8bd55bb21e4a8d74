"""Jobs from the command line: submit, follow, list, inspect, rerun, cancel, and their logs
and artifacts. Every command that answers with data takes `--json` for scripts (submit and
rerun: the job, as it ended with --wait); tables fit 80 columns."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.table import Table
from rich.text import Text

from farm.cli.output import Command, Group, SpecError, err, flag, job_exit_code, out, print_json
from farm.cli.root import app
from farm.client import FarmClient

Json = Annotated[bool, flag("--json", help="Print JSON instead of a table.")]
Wait = Annotated[bool, flag("--wait", "-w", help="Wait for the end; exit 0, 1, 124 or 125 by how it ended.")]
Follow = Annotated[bool, flag("--follow", "-f", help="Stream the log while waiting.")]
jobs_app = typer.Typer(cls=Group, help="Jobs: list them.", no_args_is_help=True)
artifacts_app = typer.Typer(cls=Group, help="A job's artifacts: list them, download one.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(artifacts_app, name="artifacts")

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "timed_out", "expired")


def load_file(path: str, what: str = "a job file") -> dict[str, Any]:
    """A YAML or JSON mapping from a file ('-': stdin); SpecError names file:line:column."""
    name = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except FileNotFoundError:
        raise SpecError(f"{name}: no such file") from None
    except OSError as e:
        raise SpecError(f"{name}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise SpecError(f"{where}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{name}: {e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{name}: {what} holds one mapping (YAML or JSON), not {type(data).__name__}")
    return data


def _summary(job: dict[str, Any]) -> str:
    code = f", exit {job['exit_code']}" if job.get("exit_code") not in (None, 0) else ""
    why = f" ({job['error']}{code})" if job.get("error") else code
    return f"job {job['id']} {job['state']}{why}"


def _end(job: dict[str, Any]) -> None:
    err.print(_summary(job), highlight=False)
    raise typer.Exit(job_exit_code(job))


def _wait(client: FarmClient, job: dict[str, Any]) -> dict[str, Any]:
    t0 = time.monotonic()
    with err.status("") as status:
        while job["state"] in ("queued", "running"):
            where = f" on {job['executor']}" if job.get("executor") else ""
            status.update(f"{job['id'][:12]} {job['state']}{where} · {time.monotonic() - t0:.0f}s")
            time.sleep(0.25)
            job = client.get(job["id"])
    return job


def _follow(client: FarmClient, job_id: str, *, timestamps: bool = False, offset: int = 0) -> dict[str, Any]:
    """Print the log as it grows until the job ends (a follow the server ends early, at its
    time cap or when it stops, is picked up again where it ended)."""
    while True:
        for text in client.follow(job_id, offset=offset, timestamps=timestamps):
            out.out(text, end="", highlight=False)
            offset += len(text.encode())
        job = client.get(job_id)
        if job["state"] not in ("queued", "running"):
            return job
        job_id = job["id"]  # a prefix the user typed: follow on by the whole id, which a later job cannot share


Submitted = Annotated[bool, flag("--json", help="Print the job as JSON (when it ends, with --wait) instead of its id.")]


def _run_or_wait(client: FarmClient, job: dict[str, Any], wait: bool, follow: bool, as_json: bool) -> None:
    if not (wait or follow):
        if as_json:
            print_json(job)
        else:
            out.print(job["id"], highlight=False)
        return
    err.print(f"submitted {job['id']}", highlight=False)
    job = _follow(client, job["id"]) if follow else _wait(client, job)
    if as_json:
        print_json(job)
    _end(job)


def _json_or_log(as_json: bool, follow: bool) -> None:
    """Checked before anything is submitted: both would print on stdout."""
    if as_json and follow:
        raise typer.BadParameter("--json prints the job and --follow its log, both on stdout: give one (--wait --json waits without the log)")


@app.command(cls=Command, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    file: Annotated[Optional[str], typer.Argument(help="Job spec (YAML/JSON), '-' for stdin; or `-- CMD...`.")] = None,
    wait: Wait = False,
    follow: Follow = False,
    pool: Annotated[Optional[str], typer.Option(help="Pool (for `-- CMD`).")] = None,
    image: Annotated[Optional[str], typer.Option(help="Step image (for `-- CMD`, docker, dind and sandbox runtimes).")] = None,
    timeout: Annotated[Optional[int], typer.Option(help="timeout_s (for `-- CMD`).")] = None,
    as_json: Submitted = False,
) -> None:
    """Submit a job from a file, or a one-step job from a command: `farm submit -- make test`."""
    _json_or_log(as_json, follow)
    command = list(ctx.args)
    if file is not None and (command or "--" in sys.argv):
        command = [file, *command]
        file = None
    if file is None and not command:
        raise typer.BadParameter("give a job file or `-- COMMAND...`")
    if file is not None:
        spec = load_file(file)
    else:
        step: dict[str, Any] = {"name": "run", "run": shlex.join(command) if len(command) > 1 else command[0]}
        if image:
            step["image"] = image
        spec = {"steps": [step]}
        if pool:
            spec["pool"] = pool
        if timeout:
            spec["timeout_s"] = timeout
    client = FarmClient()
    _run_or_wait(client, client.submit(spec), wait, follow, as_json)


@app.command(cls=Command)
def rerun(
    job_id: str,
    wait: Wait = False,
    follow: Follow = False,
    as_json: Submitted = False,
) -> None:
    """Submit a job's spec again as a new job (its `rerun_of` names this one)."""
    _json_or_log(as_json, follow)
    client = FarmClient()
    _run_or_wait(client, client.rerun(job_id), wait, follow, as_json)


@app.command(cls=Command)
def logs(
    job_id: str,
    follow: Annotated[bool, flag("--follow", "-f", help="Follow the log until the job ends.")] = False,
    tail: Annotated[Optional[int], typer.Option("--tail", "-n", min=0, help="Only the last N lines (then follow, with -f).")] = None,
    timestamps: Annotated[bool, flag("--timestamps", "-t", help="Prefix each line with the time it was written.")] = False,
) -> None:
    """Print a job's log.

    A log over its cap keeps its head and its tail, with a line saying what was cut."""
    client = FarmClient()
    if not follow or tail is not None:
        text = client.log(job_id, timestamps=timestamps)
        if tail is not None:
            lines = text.splitlines(keepends=True)
            out.out("".join(lines[-tail:] if tail else []), end="", highlight=False)
        else:
            out.out(text, end="", highlight=False)
        if not follow:
            return
        job = _follow(client, job_id, timestamps=timestamps, offset=len(text.encode()))  # on from where that read ended
    else:
        job = _follow(client, job_id, timestamps=timestamps)
    if job["state"] not in ("queued", "running"):
        err.print(_summary(job), highlight=False)


@app.command(cls=Command)
def get(job_id: str, as_json: Json = False) -> None:
    """A job: state, times, steps, artifacts and caches."""
    job = FarmClient().get(job_id)
    if as_json:
        print_json(job)
        return
    out.print(_summary(job), highlight=False)
    spec = job["spec"]
    out.print(f"pool {spec['pool']} · tenant {job['tenant']} · attempt {job['attempt']}"
              + (f" · on {job['executor']}" if job.get("executor") else "")
              + (f" · rerun of {job['rerun_of']}" if job.get("rerun_of") else ""), highlight=False)  # fmt: skip
    out.print(f"queued {job['queued_at']}" + (f" · started {job['started_at']}" if job.get("started_at") else "")
              + (f" · finished {job['finished_at']}" if job.get("finished_at") else ""), highlight=False)  # fmt: skip
    if job.get("steps"):
        table = Table("step", "exit", "seconds")
        for s in job["steps"]:
            table.add_row(s["name"], "" if s["exit_code"] is None else str(s["exit_code"]), f"{s['duration_s']:.1f}")
        out.print(table)
    if job.get("caches"):
        _caches(job["caches"])
    for warning in job.get("warnings") or []:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if job.get("artifacts"):
        out.print(f"{len(job['artifacts'])} artifact(s): farm artifacts ls {job['id']}", highlight=False)
    if job.get("log_truncated"):
        out.print("the log was over its cap: its head and tail are kept", highlight=False)


@app.command(cls=Command)
def why(job_id: str, as_json: Json = False) -> None:
    """Why a job is still waiting and when it should start; for one that started, how long it
    waited."""
    got = FarmClient().wait_reason(job_id)
    if as_json:
        print_json(got)
        return
    out.print(f"{got['job']} · {got['summary']}", highlight=False)
    if got.get("position") is not None:
        capped = "at least " if got.get("ahead_capped") else ""
        out.print(f"{capped}{got['position']} job(s) ahead in pool {got['pool']}, {got['position_in_tenant']} of them "
                  f"{got['tenant']}'s", highlight=False)  # fmt: skip
    for reason in got.get("reasons") or []:
        out.print(f"- {reason['text']} [dim]({reason['code']})[/dim]", highlight=False)
    if got.get("estimate"):
        est = got["estimate"]
        out.print(f"starts in about {est['start_in_s']:.0f} s (at {est['start_at']}): {est['method']}", highlight=False)
    if got.get("queue_timeout_left_s") is not None:
        out.print(f"its queue timeout ends it in {got['queue_timeout_left_s']:.0f} s if it has not started", highlight=False)


def _caches(caches: list[dict[str, Any]]) -> None:
    """How each of the job's caches restored and saved, as its result has them."""
    table = Table("cache", "restore", "bytes", "seconds", "save")
    for c in caches:
        restore = c["restore"] + (f" from {c['matched_key']}" if c.get("matched_key") and c["matched_key"] != c["key"] else "")
        restore += " (warm)" if c.get("warm") else ""
        save = c.get("save") or "-"
        save += f" {c['save_bytes']:,} B in {c['save_s']:.1f} s" if c.get("save") == "saved" else ""
        table.add_row(Text(c["key"]), Text(restore), f"{c.get('restore_bytes', 0):,}", f"{c.get('restore_s', 0):.1f}", save)
    out.print(table, highlight=False)
    for c in caches:
        if c.get("error"):
            err.print(f"cache {c['key']}: {c['error']}", style="yellow", markup=False, highlight=False)


@app.command(cls=Command)
def cancel(job_id: str, as_json: Json = False) -> None:
    """Cancel a queued or running job (a running step is killed within 2 s)."""
    job = FarmClient().cancel(job_id)
    if as_json:
        print_json(job)
    else:
        out.print(f"{job['id']} {job['state']}", highlight=False)


@jobs_app.command("ls", cls=Command)
def jobs_ls(
    state: Annotated[Optional[str], typer.Option(help=f"Only jobs in this state: {', '.join(STATES)}.")] = None,
    pool: Annotated[Optional[str], typer.Option(help="Only jobs of this pool.")] = None,
    tenant: Annotated[Optional[str], typer.Option(help="Only this tenant's jobs (admin token).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
    as_json: Json = False,
) -> None:
    """List jobs, newest first."""
    if state is not None and state not in STATES:
        raise typer.BadParameter(f"{state!r} is not a state; use one of {', '.join(STATES)}", param_hint="--state")
    page = FarmClient().jobs(state=state, pool=pool, tenant=tenant, limit=limit)
    if as_json:
        print_json(page)
        return
    table = Table("job", "state", "pool", "tenant", "queued", "took")
    for j in page["jobs"]:
        took = ""
        if j.get("started_at") and j.get("finished_at"):
            from farm.models import parse_rfc3339

            took = f"{(parse_rfc3339(j['finished_at']) - parse_rfc3339(j['started_at'])).total_seconds():.1f}s"
        table.add_row(j["id"][:12], j["state"], j["spec"]["pool"], j["tenant"], j["queued_at"][5:19].replace("T", " "), took)
    out.print(table)
    if page.get("next_cursor"):
        err.print(f"more: --limit, or GET /v1/jobs?cursor={page['next_cursor']}", highlight=False)


@artifacts_app.command("ls", cls=Command)
def artifacts_ls(job_id: str, as_json: Json = False) -> None:
    """A job's artifacts: name, size, sha256."""
    items = FarmClient().artifacts(job_id)
    if as_json:
        print_json(items)
        return
    table = Table("artifact", "bytes", "sha256")
    for a in items:
        table.add_row(a["name"], f"{a['size']:,}", a["sha256"][:16])
    out.print(table)


@artifacts_app.command("get", cls=Command)
def artifacts_get(
    job_id: str,
    name: str,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write it (default: its file name here; '-': stdout).")] = None,
) -> None:
    """Download one artifact."""
    client = FarmClient()
    if output is not None and str(output) == "-":
        client.artifact(job_id, name, sys.stdout.buffer)
        return
    target = output or Path(name.rsplit("/", 1)[-1])
    tmp = target.with_name(target.name + ".part")
    with open(tmp, "wb") as f:
        n = client.artifact(job_id, name, f)
    tmp.replace(target)
    err.print(f"{target}: {n:,} bytes", highlight=False)
