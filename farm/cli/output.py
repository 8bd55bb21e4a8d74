"""What the CLI prints, and the one place errors become words and exit codes.

Exit codes (README "Exit codes"):

    0    ok (a job: succeeded)
    1    the job failed (its own exit code is in `farm get` and on stderr)
    124  the job timed out (as timeout(1) says)
    125  the job was cancelled or expired
    2    usage or API error: a bad file, a 4xx/5xx from farm, a Ray cluster's token auth refusing farm
    3    farm (or the Ray cluster it is to join) cannot be reached

`Group.invoke` catches every error below the commands and renders it in one line a person
can act on; `--debug` (or FARM_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import json
import os
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from farm.client import ApiError, Unreachable
from farm.errors import FarmError

out = Console()
err = Console(stderr=True)

OK, FAILED, USAGE, UNREACHABLE, TIMED_OUT, CANCELLED = 0, 1, 2, 3, 124, 125
_JOB_CODES = {"succeeded": OK, "timed_out": TIMED_OUT, "cancelled": CANCELLED, "expired": CANCELLED}


def job_exit_code(job: dict[str, Any]) -> int:
    """The exit code a command that waited for a job ends with."""
    return _JOB_CODES.get(job["state"], FAILED)


class SpecError(FarmError):
    """A job or policy file that cannot be read: the message names file:line:column."""


def flag(*names: str, help: str) -> Any:  # noqa: A002 - typer's word
    """A boolean option, shown in help without a `<bool>` metavar."""
    return typer.Option(*names, help=help, metavar="")


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data))


def field_path(loc: list[Any]) -> str:
    """["body", "steps", 0, "timout_s"] -> "steps[0].timout_s"."""
    text = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(the request)"


def _unknown_field(e: dict[str, Any], loc: list[Any]) -> str:
    """The server's words for a field it does not know (with its "did you mean"); an older
    farm's plain message gets one made here, against the job spec."""
    msg = str(e.get("msg", ""))
    if msg.startswith("unknown field"):
        return msg
    from farm.fieldnames import unknown_field
    from farm.models import JobSpec

    return unknown_field(JobSpec, loc[1:] if loc and loc[0] == "body" else loc)


def field_errors(detail: list[dict[str, Any]]) -> list[str]:
    lines = []
    for e in detail:
        loc = list(e.get("loc", []))
        msg = _unknown_field(e, loc) if e.get("type") == "extra_forbidden" else e.get("msg", "invalid")
        lines.append(f"{field_path(loc)}: {msg}")
    return lines


def render(e: BaseException) -> tuple[int, str]:
    """(exit code, what to print) for an error a command raised."""
    if isinstance(e, Unreachable):
        return UNREACHABLE, f"cannot reach farm at {e.url}: {e.reason}\n{e.hint}"
    if isinstance(e, ApiError):
        if e.status == 422 and isinstance(e.detail, list):
            return USAGE, "farm refused the request:\n" + "\n".join(f"  {line}" for line in field_errors(e.detail))
        if e.status == 401:
            return USAGE, f"farm at {e.url} refused the token ({e.detail}).\n{e.hint}"
        return USAGE, f"farm answered {e.status}: {e.detail}"
    if isinstance(e, SpecError):
        return USAGE, str(e)
    if isinstance(e, FarmError):
        from farm.embedded import RayUnavailable  # here, not above: it imports redis, and every command imports this module

        if isinstance(e, RayUnavailable):
            return (USAGE if e.auth else UNREACHABLE), str(e)
        return USAGE, f"error: {e}"
    return USAGE, f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)"


def debugging() -> bool:
    return os.environ.get("FARM_DEBUG", "") not in ("", "0")


def _no_bool_metavar(option: Any) -> Any:
    if option is not None:
        option.metavar = ""
    return option


class Command(TyperCommand):
    """A command whose `--help` shows no `<bool>` metavar, like the other flags."""

    def get_help_option(self, ctx):  # type: ignore[no-untyped-def]
        return _no_bool_metavar(super().get_help_option(ctx))


class Group(TyperGroup):
    """Every command's errors go through `render`, unless --debug."""

    def get_help_option(self, ctx):  # type: ignore[no-untyped-def]
        return _no_bool_metavar(super().get_help_option(ctx))

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - the one place errors become words
            import click

            # typer raises usage errors of its own copy of click: they are click's to print
            if isinstance(e, click.exceptions.ClickException | typer.TyperException) or debugging():
                raise
            code, text = render(e)
            err.print(text, style="red" if code != OK else None, highlight=False, soft_wrap=True)
            raise typer.Exit(code) from e
