"""The `farm` command itself: the typer app that each area's module (jobs, runs, pools, ...)
adds its commands to, and its one option. Its own module so that those modules import it
from here, not from the package that imports them (which would be an import cycle)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from farm.cli.output import Group, flag

app = typer.Typer(cls=Group, help="farm: an elastic build farm.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)  # fmt: skip


@app.callback()
def main(debug: Annotated[bool, flag("--debug", help="On an error, show the traceback (or set FARM_DEBUG=1).")] = False) -> None:
    """farm: an elastic build farm.

    Exit codes: 0 ok, 1 the job failed, 124 it timed out, 125 it was cancelled or expired,
    2 a usage or API error, 3 farm cannot be reached."""
    if debug:
        os.environ["FARM_DEBUG"] = "1"
