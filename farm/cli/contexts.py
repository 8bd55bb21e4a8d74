"""Which farm the CLI talks to: `farm login URL` keeps a remote farm's token, `farm context
ls` and `use` show and switch (farm/contexts.py has the file and the order things are
looked up in)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional
from urllib.parse import urlsplit

import typer
from rich.table import Table

from farm.cli.jobs import Json
from farm.cli.output import Command, Group, out, print_json
from farm.cli.root import app
from farm.client import ApiError, FarmClient
from farm.contexts import Context, Contexts
from farm.errors import FarmError

context_app = typer.Typer(cls=Group, help="Contexts: the farms this CLI knows, and which one it talks to.", no_args_is_help=True)
app.add_typer(context_app, name="context")


@app.command(cls=Command)
def login(
    url: str,
    name: Annotated[Optional[str], typer.Option(help="The context's name (default: the URL's host).")] = None,
) -> None:
    """Keep a farm's URL and token as a context, and make it current.

    The token is read from FARM_TOKEN or standard input, never an argument (it would be in
    your shell history)."""
    token = os.environ.get("FARM_TOKEN") or (sys.stdin.readline().strip() if not sys.stdin.isatty() else
                                             typer.prompt("token", hide_input=True).strip())  # fmt: skip
    if not token:
        raise typer.BadParameter("no token: pipe it on stdin or set FARM_TOKEN")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise typer.BadParameter(f"{url!r} is not an http(s) URL", param_hint="URL")
    client = FarmClient(url, token)
    try:
        me = client.login()  # the token works there (or the user hears it now), and the farm's audit trail says so
    except ApiError as e:
        if e.status == 401:
            raise FarmError(f"farm at {url} refused that token ({e.detail})") from None
        raise
    name = name or parts.hostname
    Contexts().put(Context(name, url.rstrip("/"), token=token))
    out.print(f"context {name!r} is current: farm commands talk to {url} as {me['role']} of {me['tenant']}", highlight=False)


@context_app.command("ls", cls=Command)
def context_ls(as_json: Json = False) -> None:
    """The contexts this CLI knows; * marks the current one."""
    contexts = Contexts()
    current = contexts.current()
    rows = [{"name": c.name, "url": c.url, "current": bool(current and c.name == current.name),
             "token": "in its file " + c.token_file if c.token_file else ("kept" if c.token else "none")} for c in contexts.all()]  # fmt: skip
    if as_json:
        print_json(rows)
        return
    table = Table("", "context", "url", "token")
    for r in rows:
        table.add_row("*" if r["current"] else "", r["name"], r["url"], r["token"])
    out.print(table)
    if os.environ.get("FARM_URL") or os.environ.get("FARM_TOKEN"):
        out.print("FARM_URL/FARM_TOKEN are set: they win over the current context", highlight=False)


@context_app.command("use", cls=Command)
def context_use(name: str) -> None:
    """Make a context the current one."""
    try:
        c = Contexts().use(name)
    except KeyError as e:
        raise FarmError(str(e.args[0])) from None
    out.print(f"context {c.name!r} is current: farm commands talk to {c.url}", highlight=False)
