"""The `farm` command: run the farm (`up`, `api`) and talk to it (`submit`, `logs`, `queue`,
`cancel`, `get`)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from farm.client import FarmClient
from farm.errors import FarmError

app = typer.Typer(help="farm: an elastic build farm.", no_args_is_help=True, add_completion=False)
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="farm.yaml (FARM_* env wins over it).")]


def _settings(config: Path | None, **overrides: Any):  # type: ignore[no-untyped-def]
    from farm.settings import Settings

    try:
        return Settings.load(config, **{k: v for k, v in overrides.items() if v is not None})
    except (ValidationError, FileNotFoundError) as e:
        err.print(f"[red]invalid configuration:[/red] {e}")
        raise typer.Exit(2) from e


def _serve(settings, on_ready) -> None:  # type: ignore[no-untyped-def]
    from farm.api import create_app
    from farm.api.server import Server, config

    app = create_app(settings)
    server = Server(config(app, settings), app)

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        if server.started:
            on_ready()

    threading.Thread(target=announce, daemon=True).start()
    server.run()
    if not server.started:
        raise FarmError(f"could not serve on {settings.api.host}:{settings.api.port}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@app.command()
def up(
    config: ConfigOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Address to serve on.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to serve on.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Where farm keeps its data (default ~/.farm).")] = None,
    executors: Annotated[Optional[int], typer.Option(help="Executor slots to start.")] = None,
    runtime: Annotated[Optional[str], typer.Option(help="local | docker (DooD) | dind | noop")] = None,
    drain_timeout: Annotated[float, typer.Option(help="Seconds running jobs get to finish on stop; then they are killed and run again on the next start.")] = 5.0,
) -> None:
    """Run the whole farm on this machine: embedded Redis, Ray, executors and the API."""
    from farm.embedded import EmbeddedFarm
    from farm.settings import ExecutorSettings

    base = _settings(config, data_dir=data_dir)
    api = base.api.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v is not None})
    ex = base.executors.model_copy(update={k: v for k, v in {"count": executors, "runtime": runtime}.items() if v is not None})
    runtimes = get_args(ExecutorSettings.model_fields["runtime"].annotation)
    if ex.runtime not in runtimes:
        err.print(f"[red]unknown runtime {ex.runtime!r}[/red]: use {', '.join(runtimes)}")
        raise typer.Exit(2)
    settings = base.model_copy(update={"api": api, "executors": ex})
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    farm = EmbeddedFarm(settings)
    signal.signal(signal.SIGTERM, _interrupt)  # stop as cleanly on SIGTERM as on Ctrl-C
    try:
        with out.status("starting farm…"):
            resolved = farm.start()
        signal.signal(signal.SIGTERM, _interrupt)  # again: ray.init installed its own (exit code 15)
        if farm.token_created:
            out.print(f"admin token (shown once, kept in {settings.data_dir / 'admin-token'}): [bold]{farm.admin_token}[/bold]", soft_wrap=True)
        url = f"http://{api.host}:{api.port}"

        def ready() -> None:
            sized = (f"pool {ex.pool!r} sized by its {settings.policies[ex.pool].kind} policy" if ex.pool in settings.policies
                     else f"{ex.count} {ex.runtime} executor(s) in pool {ex.pool!r}")  # fmt: skip
            out.print(
                f"farm ready at {url} — {sized}, data in {settings.data_dir}",
                highlight=False,
                soft_wrap=True,
            )

        _serve(resolved, ready)
    except KeyboardInterrupt:
        pass  # uvicorn hands the signal back once it has shut down; we stop the rest below
    except FarmError as e:
        err.print(f"[red]farm up failed:[/red] {e}")
        raise typer.Exit(1) from e
    finally:
        with out.status("stopping farm…"):
            farm.stop(drain_timeout)
        out.print("farm stopped")


@app.command()
def autoscaler(
    config: ConfigOpt = None,
    ray_address: Annotated[str, typer.Option(help="The Ray cluster's GCS address (the Helm chart runs this beside the head).")] = "auto",
) -> None:
    """Run the autoscaler actor on an existing Ray cluster until stopped (SIGTERM or Ctrl-C)."""
    settings = _settings(config)
    if not settings.redis_url:
        err.print("[red]FARM_REDIS_URL is required for `farm autoscaler`[/red]")
        raise typer.Exit(2)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    from agents.executor import actor_settings
    from farm.autoscale.live import NAMESPACE, autoscaler_actor

    ray.init(address=ray_address, namespace=NAMESPACE, _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
    handle = autoscaler_actor().options(name="autoscaler", namespace=NAMESPACE, lifetime="detached", get_if_exists=True)
    actor = handle.remote(actor_settings(settings))
    signal.signal(signal.SIGTERM, _interrupt)
    out.print(f"farm autoscaler running on Ray at {ray_address}", highlight=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        ray.get(actor.stop.remote(), timeout=30)
        ray.kill(actor)


@app.command()
def api(
    config: ConfigOpt = None,
    workers: Annotated[int, typer.Option(help="Server processes (each also runs a reaper and a webhook deliverer).")] = 1,
) -> None:
    """Serve only the API (and reaper) against FARM_REDIS_URL: one replica of many."""
    settings = _settings(config)
    if not settings.redis_url:
        err.print("[red]FARM_REDIS_URL is required for `farm api`[/red]")
        raise typer.Exit(2)
    ready = f"farm api ready at http://{settings.api.host}:{settings.api.port}"
    if workers == 1:
        _serve(settings, lambda: out.print(ready, highlight=False))
        return
    import os

    from uvicorn.supervisors import Multiprocess

    from farm.api.server import config as server_config

    if config is not None:
        os.environ["FARM_CONFIG"] = str(config)
    out.print(f"farm api starting {workers} workers on http://{settings.api.host}:{settings.api.port}", highlight=False)
    served = server_config("farm.api.app:from_environment", settings, factory=True, workers=workers)
    Multiprocess(served, sockets=[served.bind_socket()]).run()


def _client() -> FarmClient:
    return FarmClient()


def _fail(e: FarmError) -> typer.Exit:
    err.print(f"[red]error:[/red] {e}")
    return typer.Exit(2)


def _load_spec(path: Path) -> dict[str, Any]:
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise typer.BadParameter("a job file holds one mapping (YAML or JSON)")
    return data


def job_exit_code(job: dict[str, Any]) -> int:
    """The exit code `farm submit --wait` ends with: 0 on success, the failing step's code,
    else 1."""
    if job["state"] == "succeeded":
        return 0
    code = job.get("exit_code")
    return code if isinstance(code, int) and 0 < code < 256 else 1


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    file: Annotated[Optional[str], typer.Argument(help="Job spec (YAML/JSON), '-' for stdin; or `-- CMD...`.")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for the end; exit with the job's code.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream the log while waiting.")] = False,
    pool: Annotated[Optional[str], typer.Option(help="Pool (for `-- CMD`).")] = None,
    image: Annotated[Optional[str], typer.Option(help="Step image (for `-- CMD`, docker runtime).")] = None,
    timeout: Annotated[Optional[int], typer.Option(help="timeout_s (for `-- CMD`).")] = None,
) -> None:
    """Submit a job from a file, or a one-step job from a command: `farm submit -- make test`."""
    command = list(ctx.args)
    if file is not None and (command or "--" in sys.argv):
        command = [file, *command]
        file = None
    if file is None and not command:
        raise typer.BadParameter("give a job file or `-- COMMAND...`")
    if file is not None:
        spec = _load_spec(Path(file))
    else:
        step: dict[str, Any] = {"name": "run", "run": shlex.join(command) if len(command) > 1 else command[0]}
        if image:
            step["image"] = image
        spec = {"steps": [step]}
        if pool:
            spec["pool"] = pool
        if timeout:
            spec["timeout_s"] = timeout
    client = _client()
    try:
        job = client.submit(spec)
        if not (wait or follow):
            out.print(job["id"])
            return
        err.print(f"submitted {job['id']}", highlight=False)
        if follow:
            for text in client.follow(job["id"]):
                out.out(text, end="", highlight=False)
            job = client.get(job["id"])
        else:
            job = _wait(client, job)
    except FarmError as e:
        raise _fail(e) from e
    err.print(f"job {job['id']} {job['state']}" + (f" ({job['error']})" if job.get("error") else ""), highlight=False)
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


@app.command()
def logs(job_id: str, follow: Annotated[bool, typer.Option("--follow", "-f")] = False) -> None:
    """Print a job's log (`-f` follows it until the job ends)."""
    client = _client()
    try:
        if follow:
            for text in client.follow(job_id):
                out.out(text, end="", highlight=False)
        else:
            out.out(client.log(job_id), end="", highlight=False)
    except FarmError as e:
        raise _fail(e) from e


@app.command()
def get(job_id: str) -> None:
    """Print a job as JSON."""
    try:
        out.print_json(json.dumps(_client().get(job_id)))
    except FarmError as e:
        raise _fail(e) from e


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    try:
        job = _client().cancel(job_id)
    except FarmError as e:
        raise _fail(e) from e
    out.print(f"{job['id']} {job['state']}")


FAILURE_SHOWN_S = 3600  # `farm queue` mentions an executor start failure for an hour


@app.command()
def queue(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show each pool's queue and executors."""
    try:
        data = _client().queue()
    except FarmError as e:
        raise _fail(e) from e
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table("pool", "queued", "running", "oldest wait", "starting", "idle", "busy", "draining")
    for p in data["pools"]:
        e = p["executors"]
        table.add_row(p["name"], str(p["queued"]), str(p["running"]), f"{p['oldest_wait_s']:.1f}s",
                      str(e["starting"]), str(e["idle"]), str(e["busy"]), str(e["draining"]))  # fmt: skip
    out.print(table)
    for p in data["pools"]:
        failure = p.get("last_start_failure")
        if failure and time.time() - failure["at_ms"] / 1000 < FAILURE_SHOWN_S:
            ago = max(0, int(time.time() - failure["at_ms"] / 1000))
            err.print(f"[yellow]pool {p['name']}: executor {failure['executor']} could not start {ago}s ago:[/yellow] {failure['reason']}",
                      highlight=False, soft_wrap=True)  # fmt: skip
    if restarts := data.get("restarts"):
        out.print("restarted so far: " + ", ".join(f"{name} {n}×" for name, n in sorted(restarts.items())), highlight=False)


cache_app = typer.Typer(help="Your dependency cache entries.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("ls")
def cache_ls(
    key_prefix: Annotated[str, typer.Argument(help="only keys starting with this")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List your tenant's cache entries, most recently used first."""
    try:
        data = _client().caches(key_prefix)
    except FarmError as e:
        raise _fail(e) from e
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table("key", "tier", "ref", "repo", "MB", "used")
    for e in data["entries"]:
        table.add_row(e["key"], e["tier"], e["ref"], e["repo"], f"{e['bytes'] / 1e6:.1f}", e["used_at"])
    out.print(table)
    used = sum(data["bytes"].values())
    out.print(f"{used / 1e6:.1f} MB of {data['quota_bytes'] / 1e6:.0f} MB ({data['protected_reserve_bytes'] / 1e6:.0f} MB kept for protected refs)")


@cache_app.command("rm")
def cache_rm(
    key: str, ref: Annotated[Optional[str], typer.Option(help="only this ref's entry")] = None,
) -> None:
    """Delete cache entries by key."""
    try:
        got = _client().delete_cache(key, ref)
    except FarmError as e:
        raise _fail(e) from e
    out.print(f"deleted {len(got['deleted'])} entr{'y' if len(got['deleted']) == 1 else 'ies'}")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@app.command()
def simulate(
    trace: Annotated[Path, typer.Option("--trace", help="CSV: submitted_ts,duration_s,pool,tenant")],
    policy: Annotated[str, typer.Option(help="reactive|scheduled|predictive|jenkins|gitlab|arc|keda|all")] = "predictive",
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="policy parameter k=v (JSON values)")] = None,
    sweep: Annotated[Optional[str], typer.Option(help="k=a:b:step: run each value, report the cheapest meeting the target")] = None,
    lead: Annotated[float, typer.Option(help="provisioning lead time, seconds")] = 60.0,
    target_p95: Annotated[float, typer.Option(help="p95 wait target, seconds")] = 15.0,
    split_pools: Annotated[bool, typer.Option(help="one replay per pool instead of all rows as one")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON array of results")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="PNG: demand against capacity over the trace's second week")] = None,
) -> None:
    """Replay a recorded trace through a capacity policy (or all of them, peers tuned with hindsight)."""
    from farm.sim import tune
    from farm.sim.trace import TraceError, parse

    try:
        with trace.open() as f:
            traces = parse(f, split_pools=split_pools)
    except (OSError, TraceError) as e:
        err.print(f"[red]cannot read trace:[/red] {e}")
        raise typer.Exit(2) from e
    if policy != "all" and policy not in tune.POLICIES:
        err.print(f"[red]unknown policy {policy!r}[/red]; use one of {', '.join([*tune.POLICIES, 'all'])}")
        raise typer.Exit(2)
    params: dict[str, Any] = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set takes k=v, not {item!r}")
        params[key] = _parse_value(value)
    if policy == "predictive":
        params.setdefault("target_p95_s", target_p95)
    results = []
    with err.status("simulating…") as status:
        def progress(msg: str) -> None:
            status.update(msg)

        for tr in traces:
            try:
                if policy == "all":
                    results += tune.everything(tr, target_p95, lead, progress=progress)
                elif sweep:
                    key, _, rng = sweep.partition("=")
                    a, b, step = (float(x) for x in rng.split(":"))
                    n = int(round((b - a) / step)) + 1
                    runs = [tune.run(tr, policy, {**params, key: _int_if_whole(a + i * step)}, lead) for i in range(n)]
                    for r in runs:
                        progress(f"{key}={r.params[key]}: p95 {r.wait_p95_s:.0f}s")
                    results += runs
                else:
                    results.append(tune.run(tr, policy, params, lead))
            except (ValidationError, ValueError) as e:
                err.print(f"[red]invalid policy:[/red] {e}")
                raise typer.Exit(2) from e
        if plot is not None:
            from farm.sim.plot import week_plot
            from farm.sim.simulator import simulate as replay

            progress("plotting…")
            chosen = results if len(results) <= 8 else results[:8]
            rerun = [replay(next(t for t in traces if t.pool == r.pool), tune.build(r.policy, r.params), lead_s=lead,
                            name=r.policy, params=r.params, record=True) for r in chosen]  # fmt: skip
            week_plot(rerun, plot)
    if as_json:
        print(json.dumps([r.row() for r in results]))
        return
    table = Table("pool", "policy", "params", "executor-h", "busy-h", "efficiency", "wait p50", "p95", "p99",
                  "killed", "reversals/h", "clairvoyant-h")  # fmt: skip
    for r in results:
        ok = "" if r.wait_p95_s <= target_p95 else " [red](misses target)[/red]"
        table.add_row(r.pool, r.policy + ok, json.dumps(r.params) if r.params else "", f"{r.executor_hours:,.0f}",
                      f"{r.busy_hours:,.0f}", f"{r.efficiency:.1%}", f"{r.wait_p50_s:.0f}s", f"{r.wait_p95_s:.0f}s",
                      f"{r.wait_p99_s:.0f}s", str(r.killed_jobs), f"{r.reversals_per_hour:.2f}", f"{r.clairvoyant_hours:,.0f}")  # fmt: skip
    out.print(table)
    if sweep:
        meeting = [r for r in results if r.wait_p95_s <= target_p95]
        if meeting:
            best = min(meeting, key=lambda r: r.executor_hours)
            out.print(f"cheapest meeting p95 ≤ {target_p95:g}s: {json.dumps(best.params)} ({best.executor_hours:,.0f} executor-hours)")
        else:
            out.print(f"no setting in the sweep meets p95 ≤ {target_p95:g}s")


def _int_if_whole(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(v, 6)


if __name__ == "__main__":
    app()
