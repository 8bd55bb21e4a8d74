"""Roles: what a token may do. Each role includes the ones below it.

    viewer      reads its tenant's jobs, runs, logs, artifacts, queue and pools
    submitter   a CI system: also submits, cancels and reruns jobs and runs
    maintainer  a team's lead: also its tenant's tokens, notifications, cache entries and audit trail
    admin       the platform team: every tenant, tenants themselves, capacity policies, the whole trail

Every /v1 route declares the role it needs with `needs(...)` in its `openapi_extra`: the gate
(farm.api.gate) refuses a lesser token before the body is read, the OpenAPI document shows
the role (`x-farm-role`), and a route that changes something names its audit action
(`x-farm-action`, farm.store.audit). Pure: no I/O.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

ROLE_KEY = "x-farm-role"  # openapi_extra: the least role a route needs
ACTION_KEY = "x-farm-action"  # openapi_extra: the audit action of a route that changes something


class Role(StrEnum):
    VIEWER = "viewer"
    SUBMITTER = "submitter"
    MAINTAINER = "maintainer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {role: i for i, role in enumerate(Role)}

WHAT = {
    Role.VIEWER: "read its tenant's jobs, runs, logs, artifacts, queue, pools and wait reasons",
    Role.SUBMITTER: "what a viewer may, and submit, cancel and rerun jobs and runs",
    Role.MAINTAINER: "what a submitter may, and manage its tenant's tokens, notifications and cache entries, and read its audit trail",
    Role.ADMIN: "everything: every tenant's work, tenants and their tokens, capacity policies, demand history, the whole audit trail",
}


def needs(role: Role, action: str | None = None) -> dict[str, Any]:
    """A route's `openapi_extra`: the least role it needs and, for a route that changes
    something, its audit action (e.g. "job.cancel")."""
    extra: dict[str, Any] = {ROLE_KEY: role.value}
    if action is not None:
        extra[ACTION_KEY] = action
    return extra


def declared(openapi_extra: dict[str, Any] | None) -> tuple[Role | None, str | None]:
    """(role, action) a route declares; (None, None) when it declares nothing."""
    extra = openapi_extra or {}
    role = extra.get(ROLE_KEY)
    return (Role(role) if role else None), extra.get(ACTION_KEY)
