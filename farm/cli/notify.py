"""Notifications from the command line (a maintainer's token; the admin's names a tenant
with --tenant):

    farm notify add --on fixed --on failed --email team@example.com,lead@example.com --branch main
    farm notify add --on fixed --chat https://chat.example.com/hooks/T0/B0/x
    farm notify ls
    farm notify rm 3f9a0c1d2e4b
    farm notify dead-letters

`add` prints the new subscription's id (and, on stderr, what it listens to). Tables show a
chat or webhook URL's host only: such a URL is a credential; `--json` shows it whole.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional
from urllib.parse import urlsplit

import typer
from rich.table import Table

from farm.cli.jobs import Json
from farm.cli.output import Command, Group, err, out, print_json
from farm.cli.root import app
from farm.client import FarmClient
from farm.notify import Trigger

notify_app = typer.Typer(cls=Group, help="Notifications: mail, chat or a signed webhook when jobs and runs fail or are fixed.",
                         no_args_is_help=True)  # fmt: skip
app.add_typer(notify_app, name="notify")

Tenant = Annotated[Optional[str], typer.Option(help="The tenant's (admin token); a tenant's token reaches its own.")]


def _where(sub: dict[str, Any]) -> str:
    """Where a subscription sends, as a table shows it: a URL's host only."""
    if sub.get("email"):
        return ", ".join(sub["email"])
    url = sub.get("chat") or sub.get("webhook") or ""
    return f"{urlsplit(url).netloc}/…"


def _channel(sub: dict[str, Any]) -> str:
    return next(c for c in ("chat", "webhook", "email") if sub.get(c))


@notify_app.command("add", cls=Command)
def notify_add(
    on: Annotated[list[Trigger], typer.Option("--on", help="failed, fixed or always; repeat it for more than one.")],
    chat: Annotated[
        Optional[str], typer.Option(help="An incoming webhook (Slack, Mattermost) on the tenant's webhook_hosts.")
    ] = None,
    webhook: Annotated[
        Optional[str], typer.Option(help="A URL that gets farm's signed JSON (the tenant's webhook_secret).")
    ] = None,
    email: Annotated[Optional[str], typer.Option(help="Addresses to mail, separated by commas.")] = None,
    branch: Annotated[Optional[str], typer.Option(help="Only jobs and runs with this labels.branch.")] = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Subscribe to ends of jobs and runs: on one channel, --chat, --webhook or --email."""
    addresses = [a.strip() for a in email.split(",") if a.strip()] if email is not None else None
    spec = {"on": [t.value for t in on], "branch": branch, "chat": chat, "webhook": webhook, "email": addresses}
    sub = FarmClient().add_notification({k: v for k, v in spec.items() if v is not None}, tenant)
    if as_json:
        print_json(sub)
        return
    out.print(sub["id"], highlight=False)
    where = f" on branch {sub['branch']}" if sub.get("branch") else ""
    err.print(f"{', '.join(sub['on'])}{where} -> {_channel(sub)} {_where(sub)}", highlight=False)


@notify_app.command("ls", cls=Command)
def notify_ls(tenant: Tenant = None, as_json: Json = False) -> None:
    """The tenant's subscriptions, oldest first."""
    data = FarmClient().notifications(tenant)
    if as_json:
        print_json(data)
        return
    table = Table("id", "on", "branch", "channel", "to")
    for s in data["subscriptions"]:
        table.add_row(s["id"], ",".join(s["on"]), s.get("branch") or "any", _channel(s), _where(s))
    out.print(table)


@notify_app.command("rm", cls=Command)
def notify_rm(sub_id: Annotated[str, typer.Argument(metavar="ID", help="The subscription's id (farm notify ls).")],
              tenant: Tenant = None, as_json: Json = False) -> None:  # fmt: skip
    """Remove a subscription; what it has not sent yet is dropped."""
    sub = FarmClient().remove_notification(sub_id, tenant)
    if as_json:
        print_json(sub)
    else:
        out.print(f"removed {sub['id']}", highlight=False)


@notify_app.command("dead-letters", cls=Command)
def notify_dead_letters(
    tenant: Tenant = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
    as_json: Json = False,
) -> None:
    """Notifications given up after their retries, newest first, with the last error."""
    data = FarmClient().dead_letters(tenant, limit)
    if as_json:
        print_json(data)
        return
    table = Table("at", "subscription", "channel", "what", "of", "tries", "error")
    for d in data["dead_letters"]:
        table.add_row(d["at"][5:19].replace("T", " "), d["subscription"], d["channel"], d["what"], f"{d['kind']} {d['target'][:12]}",
                      str(d["attempts"]), d["error"])  # fmt: skip
    out.print(table)
