"""The audit trail's record, and how it is stored, filtered and read back (pure, no I/O).

One `AuditRecord` per request that changed something or was refused (farm.store.audit keeps
them): when, who (token id, name, tenant, role), from where (client address), what (action,
target ids, the body's sha256) and the outcome (HTTP status). Invariants:
- `id` and `at` are the trail's: the stream id Redis gave the entry (the cursor of a page)
  and its milliseconds (server time). A record built to be appended leaves both unset.
- A record never refuses to be written: overlong text and target lists are cut to bounds
  (`MAX_TEXT`, `MAX_TARGETS`), not rejected, so what a caller sends cannot keep it out of
  the trail nor make an entry large.
- Stored as a stream entry of its non-default fields (`to_fields`/`from_fields`): the Lua
  script that writes refusal summaries (scripts/audit_refused.lua) writes the same shape.
- `REFUSED_SUMMARY` records stand for `count` refusals of one client counted but not
  recorded in the minute that began at `window_ms` (farm.store.audit's rate limit).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, computed_field, model_validator

from farm.durations import parse_duration
from farm.errors import InvalidInput
from farm.models import Timestamp, rfc3339

MAX_TARGETS = 20  # target ids kept per record
MAX_TEXT = 256  # characters kept of a name, address, action or id
MAX_PATH = 1024

REFUSED = "auth.refused"
REFUSED_SUMMARY = "auth.refused.suppressed"

ID_PATTERN = r"^[0-9]{1,15}-[0-9]{1,10}$"  # a stream id: the cursor of a page


def printable(text: str) -> str:
    """`text` with every character that is not printable (escape sequences, newlines, bidi
    overrides) written as an escape: what a caller put in a path must not drive the terminal
    of whoever reads the trail, nor forge a line of it."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cut(limit: int) -> BeforeValidator:
    return BeforeValidator(lambda v: printable(v[:limit]) if isinstance(v, str) else v)


def _targets(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [printable(str(t)[:MAX_TEXT]) for t in value[:MAX_TARGETS]]
    return value


Text = Annotated[str, _cut(MAX_TEXT)]


class AuditRecord(BaseModel):
    """One entry of the audit trail."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field("", description="the trail's id of the entry: a page's cursor")
    at: int = Field(0, description="when, ms since the epoch (the server's clock)")
    actor: Text = Field("", description="the token's id; empty for a token farm did not issue")
    name: Text = Field("", description="the token's name")
    tenant: Text = ""
    role: Text = ""
    on_tenant: Text = Field("", description="the tenant of what was acted on, when not the actor's (the admin cancelling a tenant's job); "
                            "that tenant's maintainer reads the record too")  # fmt: skip
    client: Text = Field("", description="the client's address")
    action: Text = Field(description='what was done, "area.verb" (job.submit, job.cancel, auth.refused...)')
    targets: Annotated[list[str], BeforeValidator(_targets)] = Field(default_factory=list, description="the ids acted on")
    body_sha256: Text = Field("", description="sha256 of the request body; empty without one")
    status: int = Field(description="the HTTP status answered")
    method: Text = ""
    path: Annotated[str, _cut(MAX_PATH)] = ""
    count: int = Field(1, description=f"the requests this entry stands for: more than 1 for {REFUSED_SUMMARY}")
    window_ms: int = Field(0, description=f"{REFUSED_SUMMARY}: the start of the minute its refusals were counted in")

    @model_validator(mode="before")
    @classmethod
    def _acted_on_another(cls, data: Any) -> Any:
        """`on_tenant` only when it is not the actor's own tenant (every writer may pass it)."""
        if isinstance(data, dict) and data.get("on_tenant") and data.get("on_tenant") == data.get("tenant", ""):
            return {**data, "on_tenant": ""}
        return data

    @computed_field(description="`at` in RFC 3339 UTC")  # type: ignore[prop-decorator]
    @property
    def time(self) -> Timestamp:
        return rfc3339(self.at) or ""


def body_digest(body: bytes) -> str:
    """What a record keeps of a request body: its sha256, or "" when there was none."""
    return hashlib.sha256(body).hexdigest() if body else ""


def to_fields(record: AuditRecord) -> dict[str, str]:
    """A record as a stream entry: its non-default fields as strings (id and at are the
    entry's own), targets as a JSON list."""
    data = record.model_dump(exclude_defaults=True, exclude={"id", "at", "time"})
    if "targets" in data:
        data["targets"] = json.dumps(data["targets"], separators=(",", ":"))
    return {k: str(v) for k, v in data.items()}


def from_fields(entry_id: str, fields: dict[str, str]) -> AuditRecord:
    """A stream entry back as a record: `at` is its id's milliseconds."""
    data: dict[str, Any] = dict(fields)
    if "targets" in data:
        try:
            data["targets"] = json.loads(data["targets"])
        except ValueError:
            data["targets"] = [data["targets"]]
    data.setdefault("action", "")
    data.setdefault("status", 0)
    return AuditRecord.model_validate({**data, "id": entry_id, "at": int(entry_id.partition("-")[0])})


def action_matches(pattern: str, action: str) -> bool:
    """An action filter: "job.submit" is that action; "job." (or "job.*") every job action."""
    if pattern.endswith(".*"):
        pattern = pattern[:-1]
    return action.startswith(pattern) if pattern.endswith(".") else action == pattern


@dataclass(frozen=True)
class AuditFilter:
    """Which records a reader gets: `tenant` is who may see them (None: the admin, all):
    its own and those of acts on it; the rest is what was asked for. `actor` is a token's
    id or name."""

    tenant: str | None = None
    actor: str | None = None
    action: str | None = None
    since_ms: int | None = None

    def keep(self, record: AuditRecord) -> bool:
        return (
            (self.tenant is None or record.tenant == self.tenant or (record.on_tenant != "" and record.on_tenant == self.tenant))
            and (self.actor is None or self.actor in (record.actor, record.name))
            and (self.action is None or action_matches(self.action, record.action))
            and (self.since_ms is None or record.at >= self.since_ms)
        )

    @property
    def narrows(self) -> bool:
        """Whether some records between the bounds may be left out (a page scans past them)."""
        return self.tenant is not None or self.actor is not None or self.action is not None


def parse_since(text: str, *, now_ms: int, loc: tuple[str, ...] = ("query", "since")) -> int:
    """`since` as ms: a time ago (a duration as farm.durations reads it: "30m", "1h", "7d")
    or an ISO 8601 time (UTC unless it says otherwise). InvalidInput names `loc`."""
    text = text.strip()
    try:
        return now_ms - parse_duration(text) * 1000
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{text[:40]!r} is neither a time ago (30m, 1h, 7d) nor an ISO 8601 time", loc) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)
