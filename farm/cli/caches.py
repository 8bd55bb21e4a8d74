"""Your tenant's dependency cache entries from the command line."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from farm.cli.jobs import Json
from farm.cli.output import Command, Group, out, print_json
from farm.cli.root import app
from farm.client import FarmClient

cache_app = typer.Typer(cls=Group, help="Your dependency cache entries.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("ls", cls=Command)
def cache_ls(
    key_prefix: Annotated[str, typer.Argument(help="only keys starting with this")] = "",
    as_json: Json = False,
) -> None:
    """List your tenant's cache entries, most recently used first."""
    data = FarmClient().caches(key_prefix)
    if as_json:
        print_json(data)
        return
    table = Table("key", "tier", "ref", "MB", "used")
    for e in data["entries"]:
        table.add_row(e["key"], e["tier"], e["ref"], f"{e['bytes'] / 1e6:.1f}", str(e["used_at"])[:19])
    out.print(table)
    used = sum(data["bytes"].values())
    out.print(f"{used / 1e6:.1f} MB of {data['quota_bytes'] / 1e6:.0f} MB ({data['protected_reserve_bytes'] / 1e6:.0f} MB kept for protected refs)")


@cache_app.command("rm", cls=Command)
def cache_rm(key: str, ref: Annotated[Optional[str], typer.Option(help="only this ref's entry")] = None, as_json: Json = False) -> None:
    """Delete cache entries by key."""
    got = FarmClient().delete_cache(key, ref)
    if as_json:
        print_json(got)
    else:
        out.print(f"deleted {len(got['deleted'])} entr{'y' if len(got['deleted']) == 1 else 'ies'}")
