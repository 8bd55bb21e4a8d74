"""Accounts from the command line: `farm whoami`, `farm tenant` (the admin's) and `farm
token` (a tenant's maintainers', the admin's for every tenant). A token's secret is printed
once, when it is made or rotated: farm keeps only its hash."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Optional

import typer
from rich.table import Column, Table
from rich.text import Text

from farm.cli.jobs import Json
from farm.cli.output import Command, Group, err, flag, out, print_json
from farm.cli.root import app
from farm.client import FarmClient
from farm.roles import Role

tenant_app = typer.Typer(cls=Group, help="Tenants (the admin's): create, list, disable, enable.", no_args_is_help=True)
token_app = typer.Typer(cls=Group, help="API tokens: create, list, revoke, rotate.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(token_app, name="token")


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M") if ms else "-"


@app.command(cls=Command)
def whoami(as_json: Json = False) -> None:
    """The token this CLI talks with: its tenant, role and what the role may do."""
    me = FarmClient().whoami()
    if as_json:
        print_json(me)
        return
    out.print(f"{me['token_name'] or me['token_id']} ({me['token_id']}): {me['role']} of {me['tenant']}, {me['tier']} tier", highlight=False)
    out.print(f"may {me['may']}", highlight=False)


def _tenants(rows: list[dict[str, Any]]) -> None:
    table = Table("tenant", "weight", "state", "tokens", "created", "by")
    for t in rows:
        table.add_row(Text(t["name"]), f"{t['weight']:g}", "disabled" if t["disabled"] else "active", str(t["tokens"]),
                      _when(t["created_at_ms"]), Text(t["created_by"]))  # fmt: skip
    out.print(table)


@tenant_app.command("create", cls=Command)
def tenant_create(name: str, weight: Annotated[float, typer.Option(help="its share of a busy pool")] = 1.0, as_json: Json = False) -> None:
    """Make a tenant (then give it a token: `farm token create --tenant NAME --role maintainer --name lead`)."""
    got = FarmClient().create_tenant(name, weight)
    print_json(got) if as_json else _tenants([got])


@tenant_app.command("ls", cls=Command)
def tenant_ls(as_json: Json = False) -> None:
    """Every tenant."""
    got = FarmClient().tenants()
    print_json(got) if as_json else _tenants(got["tenants"])


@tenant_app.command("disable", cls=Command)
def tenant_disable(name: str, as_json: Json = False) -> None:
    """Refuse the tenant's tokens from their next request (its jobs are left as they are)."""
    got = FarmClient().set_tenant_disabled(name, True)
    print_json(got) if as_json else _tenants([got])


@tenant_app.command("enable", cls=Command)
def tenant_enable(name: str, as_json: Json = False) -> None:
    """Take a disabled tenant's tokens back."""
    got = FarmClient().set_tenant_disabled(name, False)
    print_json(got) if as_json else _tenants([got])


def _tokens(rows: list[dict[str, Any]]) -> None:
    # the id whole, at any width: it is what revoke and rotate take
    table = Table(Column("id", no_wrap=True, min_width=16), "tenant", "role", "name", "tier", "created", "expires", "last used", "state")
    now_ms = time.time() * 1000
    for t in rows:
        expired = t["expires_at_ms"] is not None and t["expires_at_ms"] <= now_ms
        state = "revoked" if t["revoked_at_ms"] else "expired" if expired else "active"
        table.add_row(t["id"], Text(t["tenant"]), t["role"], Text(t["name"]), t["tier"], _when(t["created_at_ms"]),
                      _when(t["expires_at_ms"]), _when(t["last_used_at_ms"]), state)  # fmt: skip
    out.print(table)


def _secret(got: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(got)
        return
    _tokens([got])
    err.print("the token, shown this once (farm keeps only its hash):", highlight=False)
    print(got["token"])  # alone on stdout's last line, for a script to take


@token_app.command("create", cls=Command)
def token_create(
    role: Annotated[Role, typer.Option(help="viewer, submitter, maintainer or admin")],
    name: Annotated[str, typer.Option(help="what it is for, e.g. ci-main or grafana")],
    tenant: Annotated[Optional[str], typer.Option(help="default: your own tenant")] = None,
    expires: Annotated[Optional[str], typer.Option(help="e.g. 12h, 30d (default: never)")] = None,
    protected: Annotated[bool, flag("--protected", help="the protected cache tier (default and release branches)")] = False,
    as_json: Json = False,
) -> None:
    """Make a token; its secret is printed once."""
    got = FarmClient().create_token(tenant=tenant, role=role.value, name=name, expires_in=expires, protected=protected)
    _secret(got, as_json)


@token_app.command("ls", cls=Command)
def token_ls(tenant: Annotated[Optional[str], typer.Option(help="the admin: one tenant's only")] = None, as_json: Json = False) -> None:
    """Your tenant's tokens (the admin: every tenant's). Secrets are never shown."""
    got = FarmClient().tokens(tenant)
    print_json(got) if as_json else _tokens(got["tokens"])


@token_app.command("revoke", cls=Command)
def token_revoke(token_id: str, as_json: Json = False) -> None:
    """Refuse the token from its next request on."""
    got = FarmClient().revoke_token(token_id)
    print_json(got) if as_json else _tokens([got])


@token_app.command("rotate", cls=Command)
def token_rotate(token_id: str, as_json: Json = False) -> None:
    """A new secret for the token (same id, name, role); the old one is refused from now on."""
    _secret(FarmClient().rotate_token(token_id), as_json)
