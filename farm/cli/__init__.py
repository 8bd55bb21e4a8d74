"""The `farm` command: run the farm (`up`, `api`, `autoscaler`) and talk to it (jobs, logs,
artifacts, pools and policies, caches, contexts), and try capacity policies (`simulate`).

One module per area; errors and exit codes are rendered in one place (`farm.cli.output`).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from farm.cli.output import Group, flag, job_exit_code

app = typer.Typer(cls=Group, help="farm: an elastic build farm.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)  # fmt: skip


@app.callback()
def main(debug: Annotated[bool, flag("--debug", help="On an error, show the traceback (or set FARM_DEBUG=1).")] = False) -> None:
    """farm: an elastic build farm.

    Exit codes: 0 ok, 1 the job failed, 124 it timed out, 125 it was cancelled or expired,
    2 a usage or API error, 3 farm cannot be reached."""
    if debug:
        os.environ["FARM_DEBUG"] = "1"


from farm.cli import caches, contexts, jobs, pools, runs, serve, simulate  # noqa: E402,F401 - each adds its commands

__all__ = ["app", "job_exit_code"]
