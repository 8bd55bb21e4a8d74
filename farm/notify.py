"""Notifications: which subscriptions hear of a job's or a run's end, and what they read (pure).

A tenant's subscription names the ends it wants, and one channel (`farm notify add`):

    failed   a job failed, timed out or expired; a run failed
    fixed    a success after a failure of the same thing: a job with the same labels.branch
             (and name), a run with the same name
    always   every end, a cancel's too

and, optionally, a `branch` (labels.branch) it is limited to. Channels: `chat`, an incoming
webhook taking `{"text": ...}` (Slack's and Mattermost's do); `webhook`, farm's signed JSON
(as result webhooks are signed, farm.webhooks); `email`, addresses farm mails over SMTP.

Invariants:
- "fixed" is decided where the end happens, not here: lib.lua `notify_end` reads and
  replaces the thing's last outcome in the step that ends it, so ends are judged in the
  order they happened whichever API replica sends. An `Event` carries that previous outcome.
- A job of a run is not reported on its own: its run's end names the jobs that did not succeed.
- User text (names, labels) reaches a chat inside code spans, with what would break out of
  one (or make a mention or a link) replaced: a branch named `@channel` pings no one.
- Pure: no I/O. farm.store.notify keeps subscriptions and deliveries; farm.notifier sends.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from farm.models import Name, Text, Timestamp

EMAILS_MAX = 20  # addresses of one subscription
# An address as farm will put it in a To: header: no space, comma, quote or line break, a
# dotted domain. Stricter than RFC 5322 on purpose (no quoted local parts, no comments).
EMAIL_PATTERN = (r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                 r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")  # fmt: skip
URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s]*)?$"  # as a job's callback_url

Url = Annotated[Text, Field(max_length=2000, pattern=URL_PATTERN)]
Email = Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN)]
Outcome = Literal["failed", "ok", ""]  # a thing's last outcome before this end ("": none known)

FAILURES = frozenset({"failed", "timed_out", "expired"})  # a job's states, and a run's "failed"


class Trigger(StrEnum):
    FAILED = "failed"
    FIXED = "fixed"
    ALWAYS = "always"


class SubscriptionSpec(BaseModel):
    """What a tenant asks for: the ends (`on`), a branch or any, and exactly one channel."""

    model_config = ConfigDict(extra="forbid")

    on: Annotated[list[Trigger], Field(min_length=1, max_length=3, description="failed, fixed, always (each once)")]
    branch: Annotated[Name, Field(min_length=1, max_length=200, description=(
        "only ends of jobs and runs with this labels.branch"))] | None = None  # fmt: skip
    chat: Annotated[Url | None, Field(description="an incoming webhook taking {\"text\": ...} (Slack, Mattermost); its host "
                                                  "on the tenant's webhook_hosts")] = None  # fmt: skip
    webhook: Annotated[Url | None, Field(description="farm's signed JSON (X-Farm-Signature), as result webhooks; needs the "
                                                     "tenant's webhook_secret and its host on webhook_hosts")] = None  # fmt: skip
    email: Annotated[list[Email], Field(min_length=1, max_length=EMAILS_MAX, description="addresses farm mails")] | None = None

    @field_validator("on")
    @classmethod
    def _once(cls, v: list[Trigger]) -> list[Trigger]:
        return list(dict.fromkeys(v))

    @field_validator("email")
    @classmethod
    def _each_once(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len({a.lower() for a in v}) != len(v):
            raise ValueError("an address is given twice")
        return v

    @model_validator(mode="after")
    def _one_channel(self) -> SubscriptionSpec:
        named = [c for c in ("chat", "webhook", "email") if getattr(self, c) is not None]
        if len(named) != 1:
            raise ValueError(f"name exactly one channel: chat, webhook or email (got {', '.join(named) or 'none'})")
        return self

    @property
    def channel(self) -> Literal["chat", "webhook", "email"]:
        return "chat" if self.chat is not None else "webhook" if self.webhook is not None else "email"


class Subscription(SubscriptionSpec):
    """A subscription as kept and shown."""

    id: str
    tenant: str
    created_at: Timestamp
    created_by: str


@dataclass(frozen=True)
class Event:
    """One end, as a delivery keeps it (so a message can be sent after the job is purged)."""

    kind: Literal["job", "run"]
    id: str
    tenant: str
    state: str  # the job's terminal state, or the run's outcome (succeeded, failed, cancelled)
    prev: Outcome = ""  # what the same thing's last end was (lib.lua notify_end)
    branch: str | None = None  # labels.branch
    name: str | None = None  # the run's name, or the job's
    error: str | None = None
    finished_at: str | None = None
    failed_jobs: tuple[str, ...] = field(default_factory=tuple)  # a run's jobs that did not succeed: "name (state)"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Event:
        doc = json.loads(text)
        return cls(**{**doc, "failed_jobs": tuple(doc.get("failed_jobs", ()))})


class DeadLetter(BaseModel):
    """A delivery given up after its attempts, as the tenant lists it."""

    model_config = ConfigDict(extra="forbid")

    id: str  # the delivery: "<kind>:<id>/<subscription>"
    subscription: str
    channel: Literal["chat", "webhook", "email"]
    kind: Literal["job", "run"]
    target: str = Field(description="the job's or run's id")
    what: str = Field(description="what it told of: fixed, failed, succeeded, cancelled...")
    error: str
    attempts: int
    at: Timestamp


def triggered(event: Event) -> frozenset[Trigger]:
    """The triggers an end sets off."""
    got = {Trigger.ALWAYS}
    if event.state in FAILURES:
        got.add(Trigger.FAILED)
    if event.state == "succeeded" and event.prev == "failed":
        got.add(Trigger.FIXED)
    return frozenset(got)


def matches(sub: SubscriptionSpec, event: Event) -> bool:
    return (sub.branch is None or sub.branch == event.branch) and bool(triggered(event) & set(sub.on))


def subscribers(subs: list[Subscription], event: Event) -> list[Subscription]:
    """The subscriptions of the event's tenant that hear of it: each once, whatever number
    of its triggers the end sets off."""
    return [s for s in subs if s.tenant == event.tenant and matches(s, event)]


def what(event: Event) -> str:
    """The word a message leads with: "fixed" for a fix, else the state."""
    return "fixed" if Trigger.FIXED in triggered(event) else event.state


def retry_delay(attempts: int, base_s: float, max_s: float) -> float:
    """Seconds before the next try after `attempts` failed ones: doubling from base_s, capped."""
    return min(base_s * 2 ** max(0, min(attempts - 1, 30)), max_s)


# -- messages ------------------------------------------------------------------------------

_VERB = {"fixed": "is fixed", "failed": "failed", "timed_out": "timed out", "expired": "expired (never started)",
         "succeeded": "succeeded", "cancelled": "was cancelled"}  # fmt: skip


def _thing(event: Event) -> str:
    if event.kind == "run":
        return f"run {event.name or event.id[:12]}"
    return f"job {event.name} ({event.id[:12]})" if event.name else f"job {event.id[:12]}"


def subject(event: Event) -> str:
    """One line: a mail's subject, a chat message's lead."""
    where = f" on {event.branch}" if event.branch else ""
    return f"[farm] {_thing(event)}{where} {_VERB.get(what(event), event.state)}"


def link(event: Event, portal_url: str | None) -> str:
    """Where to look: the portal's page, or the command that shows it."""
    if portal_url:
        return f"{portal_url.rstrip('/')}/ui/{event.kind}s/{event.id}"
    return f"farm run get {event.id}" if event.kind == "run" else f"farm get {event.id}"


def mail_body(event: Event, portal_url: str | None) -> str:
    lines = [subject(event).removeprefix("[farm] ") + "."]
    if what(event) == "fixed":
        same = "name" if event.kind == "run" else "branch and name"
        lines.append(f"It succeeded after the last {event.kind} with the same {same} failed.")
    lines.append("")
    rows = [(event.kind, event.id), ("tenant", event.tenant), ("state", event.state), ("error", event.error),
            ("branch", event.branch), ("name", event.name), ("ended", event.finished_at)]  # fmt: skip
    lines += [f"{k + ':':<9} {v}" for k, v in rows if v]
    if event.failed_jobs:
        lines += ["", "jobs that did not succeed:", *(f"  {j}" for j in event.failed_jobs)]
    lines += ["", f"see: {link(event, portal_url)}", ""]
    return "\n".join(lines)


def _code(text: str) -> str:
    """User text as a chat code span: nothing in it makes a mention, a link or formatting."""
    return "`" + text.replace("`", "'").replace("<", "‹").replace(">", "›").replace("\n", " ") + "`"


def chat_body(event: Event, portal_url: str | None) -> dict[str, Any]:
    """The JSON an incoming webhook takes (Slack's and Mattermost's both read `text`)."""
    thing = f"{event.kind} {_code(event.name)}" if event.name else f"{event.kind} {_code(event.id[:12])}"
    where = f" on {_code(event.branch)}" if event.branch else ""
    text = f"farm: {thing}{where} {_VERB.get(what(event), event.state)}"
    if event.error:
        text += f" ({_code(event.error)})"
    if event.failed_jobs:
        text += "; did not succeed: " + ", ".join(_code(j) for j in event.failed_jobs[:10])
        text += f" and {len(event.failed_jobs) - 10} more" if len(event.failed_jobs) > 10 else ""
    see = link(event, portal_url) if portal_url else _code(link(event, portal_url))  # a URL stays a link
    return {"text": f"{text}. {see}"}


def webhook_body(event: Event, subscription_id: str) -> bytes:
    """farm's own JSON for a `webhook` channel (signed by the sender as result webhooks are)."""
    return json.dumps({"event": f"{event.kind}.{what(event)}", "subscription": subscription_id, **asdict(event)}).encode()
