"""`farm audit`: who changed what, and who was refused (a maintainer's token: its tenant's;
the admin's: all). A table, newest first; `--json` a page as the API gives it; `--jsonl`
the whole matching trail as JSON lines, oldest first, for a SIEM."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from farm.cli.jobs import Json
from farm.cli.output import Command, err, flag, out, print_json
from farm.cli.root import app
from farm.client import FarmClient

PAGES_MAX = 20  # requests one listing may make to fill --limit (a filtered page can come back short)


def _row(r: dict[str, Any]) -> list[str]:
    who = r["name"] or r["actor"][:12] or "-"
    what = ", ".join(r["targets"])
    if r["count"] > 1:
        what = f"{r['count']} refusals" + (f", {what}" if what else "")
    return [
        r["time"][5:19].replace("T", " "),
        who,
        (r["tenant"] or "-") + (f" → {r['on_tenant']}" if r.get("on_tenant") else ""),  # the admin acting on a tenant's job
        r["action"],
        what,
        str(r["status"] or "-"),
        r["client"],
    ]


@app.command(cls=Command)
def audit(
    actor: Annotated[Optional[str], typer.Option(help="Only this token's records (its id or name).")] = None,
    action: Annotated[Optional[str], typer.Option(help="Only this action (job.cancel), or an area's (job.).")] = None,
    since: Annotated[Optional[str], typer.Option(help="Only since then: 30m, 1h, 7d, or an ISO 8601 time.")] = None,
    tenant: Annotated[Optional[str], typer.Option(help="Only this tenant's records (admin token).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
    cursor: Annotated[Optional[str], typer.Option(help="Go on from where a listing ended (it says the cursor).")] = None,
    as_json: Json = False,
    jsonl: Annotated[bool, flag("--jsonl", help="Every matching record as JSON lines, oldest first (for a SIEM).")] = False,
) -> None:
    """The audit trail: requests that changed something, and refused ones."""
    if as_json and jsonl:
        raise typer.BadParameter("--json or --jsonl, not both", param_hint="--jsonl")
    client = FarmClient()
    filters = {"actor": actor, "action": action, "since": since, "tenant": tenant}
    if jsonl:
        for line in client.audit_export(**filters):
            sys.stdout.write(line + "\n")
        return
    records: list[dict[str, Any]] = []
    for _ in range(PAGES_MAX):
        page = client.audit(**filters, limit=limit - len(records), cursor=cursor)
        records += page["records"]
        cursor = page["next_cursor"]
        if len(records) >= limit or cursor is None:
            break
    if as_json:
        print_json({"records": records, "next_cursor": cursor})
        return
    table = Table("time", "who", "tenant", "action", "targets", "status", "from")
    for r in records:
        table.add_row(*_row(r))
    out.print(table)
    if cursor:
        err.print(f"more: --cursor {cursor}", highlight=False)
