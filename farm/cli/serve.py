"""Running farm: the whole farm on one machine (`up`), the API alone (`api`), the
autoscaler on an existing Ray cluster (`autoscaler`)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import typer
from pydantic import ValidationError

from farm.cli.output import Command, err, out, render
from farm.cli.root import app
from farm.errors import FarmError

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="farm.yaml (FARM_* env wins over it).")]


def _settings(config: Path | None, **overrides: Any):  # type: ignore[no-untyped-def]
    from farm.settings import Settings

    try:
        return Settings.load(config, **{k: v for k, v in overrides.items() if v is not None})
    except FileNotFoundError as e:
        err.print(f"[red]invalid configuration:[/red] {e}")
        raise typer.Exit(2) from e
    except ValidationError as e:
        from farm.fieldnames import unknown_field

        lines = [f"  {'.'.join(map(str, x['loc'])) or '(the settings)'}: "
                 + (unknown_field(Settings, x["loc"]) if x["type"] == "extra_forbidden" else x["msg"]) for x in e.errors()]  # fmt: skip
        err.print("invalid configuration:", style="red", highlight=False)
        err.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
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


def _remember(url: str, token_file: Path) -> None:
    """Make this farm the current context, so later commands find it whatever --port and
    --data-dir were (farm/contexts.py); the token stays in its file, named not copied."""
    from farm.contexts import Context, Contexts

    host = "127.0.0.1" if url.startswith("http://0.0.0.0") else None
    context = Context("local", url.replace("0.0.0.0", host) if host else url, token_file=str(token_file) if token_file.exists() else None)
    try:
        Contexts().put(context)
    except OSError as e:
        err.print(f"[yellow]could not keep the 'local' context:[/yellow] {e}", highlight=False)
        return
    out.print(f"context 'local' is current: farm commands here talk to {context.url}", highlight=False, soft_wrap=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@app.command(cls=Command)
def up(
    config: ConfigOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Address to serve on.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to serve on.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Where farm keeps its data (default ~/.farm).")] = None,
    executors: Annotated[Optional[int], typer.Option(help="Executor slots to start.")] = None,
    runtime: Annotated[Optional[str], typer.Option(help="local | docker (DooD) | dind | sandbox (gVisor) | noop")] = None,
    drain_timeout: Annotated[float, typer.Option(help="Seconds running jobs get to finish on stop; then they are killed and run again on the next start.")] = 5.0,
    ray_address: Annotated[Optional[str], typer.Option(help="Join this Ray cluster (GCS host:port, from one of its nodes) "
                                                            "instead of starting one.")] = None,  # fmt: skip
) -> None:
    """Run the whole farm on this machine: embedded Redis, Ray, executors and the API."""
    from farm.embedded import EmbeddedFarm, RayUnavailable
    from farm.settings import ExecutorSettings

    base = _settings(config, data_dir=data_dir)
    api = base.api.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v is not None})
    ex = base.executors.model_copy(update={k: v for k, v in {"count": executors, "runtime": runtime}.items() if v is not None})
    runtimes = get_args(ExecutorSettings.model_fields["runtime"].annotation)
    if ex.runtime not in runtimes:
        err.print(f"[red]unknown runtime {ex.runtime!r}[/red]: use {', '.join(runtimes)}")
        raise typer.Exit(2)
    settings = base.model_copy(update={"api": api, "executors": ex,
                                       "ray": base.ray.model_copy(update={"address": ray_address or base.ray.address})})  # fmt: skip
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
            _remember(url, settings.data_dir / "admin-token")

        _serve(resolved, ready)
    except KeyboardInterrupt:
        pass  # uvicorn hands the signal back once it has shut down; we stop the rest below
    except RayUnavailable as e:  # a setting to fix (2) or a cluster out of reach (3): not a failed job's 1
        code, text = render(e)
        err.print(f"[red]farm up failed:[/red] {text}", highlight=False, soft_wrap=True)
        raise typer.Exit(code) from e
    except FarmError as e:
        err.print(f"[red]farm up failed:[/red] {e}")
        raise typer.Exit(1) from e
    finally:
        with out.status("stopping farm…"):
            farm.stop(drain_timeout)
        out.print("farm stopped")


@app.command(cls=Command)
def autoscaler(
    config: ConfigOpt = None,
    ray_address: Annotated[str, typer.Option(help="The Ray cluster's GCS address (the Helm chart runs this beside the head).")] = "auto",
) -> None:
    """Run the autoscaler actor on an existing Ray cluster until stopped (SIGTERM or Ctrl-C).

    Stopping it leaves the executors it started serving (an upgrade of the autoscaler must
    not take running jobs down); the next autoscaler adopts them. `farm up` drains its own."""
    settings = _settings(config)
    if not settings.redis_url:
        err.print("[red]FARM_REDIS_URL is required for `farm autoscaler`[/red]")
        raise typer.Exit(2)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from farm.autoscale.live import start_autoscaler
    from farm.embedded import join_ray
    from farm.ray_seam import stop_autoscaler
    from farm.settings import RAY_NAMESPACE

    join_ray(ray_address, namespace=RAY_NAMESPACE, _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
    actor = start_autoscaler(settings, detached=True)
    signal.signal(signal.SIGTERM, _interrupt)
    out.print(f"farm autoscaler running on Ray at {ray_address}", highlight=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop_autoscaler(actor, timeout_s=30)


@app.command(cls=Command)
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
