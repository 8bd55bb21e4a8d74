"""/v1/pools: pools, their capacity policies (admin-only changes, versioned, audited) and
the autoscaler's decisions."""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from farm.api.deps import Config, History, Jobs, Policies, Registry, Who
from farm.api.errors import COMMON, CONFLICT, FORBIDDEN, NOT_FOUND
from farm.api.public import DecisionsPublic, HistoryPublic, PolicyHistoryPublic, PolicyPublic, PoolPublic, PoolsPublic, SeedPublic
from farm.autoscale.demand import HOUR_S, MAX_BIN, MAX_HOUR, MAX_PER_BIN, MAX_PER_SECOND, WEEK_HOURS, Hour, jobs, shift_into
from farm.autoscale.kinds import LivePolicy
from farm.errors import Conflict, Forbidden, InvalidInput, NotFound
from farm.models import rfc3339
from farm.roles import Role, needs
from farm.settings import Settings
from farm.store.summary import summarize

router = APIRouter(prefix="/v1/pools", tags=["pools"], responses=COMMON)
_POLICY: TypeAdapter = TypeAdapter(LivePolicy)


def _pool(config: Settings, name: str) -> str:
    if name not in config.pools:
        raise NotFound(f"no pool {name}")
    return name


# Every number of a seed is strictly a JSON integer: lax validation took `false` as 0 and
# "12" as 12, and `"last_hour": false` as hour 0 (1970), which means no last_hour at all.
Count = Annotated[int, Field(strict=True, ge=1)]
Second = Annotated[int, Field(strict=True, ge=0, le=HOUR_S - 1)]
Bin = Annotated[int, Field(strict=True, ge=0, le=MAX_BIN)]


class SeedHour(BaseModel):
    """One hour of demand (farm.sim.history's form; `farm policy seed` builds it from a trace)."""

    model_config = ConfigDict(extra="forbid")

    hour: int = Field(strict=True, ge=0, le=MAX_HOUR, description="hours since 1970-01-01 00:00 UTC")
    arrivals: list[tuple[Second, Annotated[Count, Field(le=MAX_PER_SECOND)]]] = Field(
        max_length=HOUR_S, description="[second of the hour, jobs that arrived then], each second once")
    durations: list[tuple[Bin, Annotated[Count, Field(le=MAX_PER_BIN)]]] = Field(
        max_length=MAX_BIN + 1, description="[bin, jobs], each bin once; bin b holds durations near 1.05**b - 1 s")  # fmt: skip

    @field_validator("arrivals", "durations")
    @classmethod
    def _once(cls, v: list[tuple[int, int]]) -> list[tuple[int, int]]:
        keys = [k for k, _ in v]
        if len(set(keys)) != len(keys):
            raise ValueError("a second or bin is given more than once")
        return v


class SeedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hours: list[SeedHour] = Field(min_length=1, max_length=52 * WEEK_HOURS)
    last_hour: int | None = Field(None, strict=True, ge=0, le=MAX_HOUR, description="the last hour of a seed sent in parts"
                                  " (each part moves as the whole does); by default this body's last")  # fmt: skip
    more: bool = Field(False, strict=True, description="more parts of this seed follow (each naming its `last_hour`): it is"
                       " counted and audited once, with its last part")  # fmt: skip


def _shown(stored: Any, response: Response | None = None, policy: Any = None) -> PolicyPublic:
    """A stored policy as answered; `policy`: the model it was validated as already (a PUT's
    body), so that it is not validated again from the stored JSON."""
    if response is not None:
        response.headers["ETag"] = f'"{stored.version}"'
    return PolicyPublic(version=stored.version, policy=policy if policy is not None else stored.policy, updated_by=stored.by,
                        updated_at=stored.at)  # fmt: skip


# A policy's entity tag is its version, quoted as RFC 9110 writes one ("3"). If-Match takes
# that, the bare version a client may hold (3), a weak tag (W/"3": the version is all a tag
# says, so weak and strong compare alike here), a list of them, or * (any existing policy).
_TAG = re.compile(r'\s*(?:W/)?("?)([0-9]{1,18})\1\s*')
_IF_MATCH_HELP = 'the version being replaced: "3" (as ETag gives it), 3, W/"3", a list of them, or * (any existing policy)'
_ETAG = {"ETag": {"description": 'the policy\'s version, quoted ("3"): give it as If-Match to refuse a stale change',
                  "schema": {"type": "string"}}}  # fmt: skip


def _versions(if_match: str) -> list[int] | None:
    """The versions an If-Match header names; None for *."""
    if if_match.strip() == "*":
        return None
    matches = [_TAG.fullmatch(item) for item in if_match.split(",")]
    if not all(matches):
        raise InvalidInput(f"If-Match is {_IF_MATCH_HELP}", ("header", "if-match"))
    return [int(m[2]) for m in matches if m]


def _expected(policies: Any, pool: str, if_match: str | None) -> int | None:
    """The version a change must find (the store refuses it with 409 otherwise); None: any."""
    if if_match is None:
        return None
    versions = _versions(if_match)
    if versions is not None and len(versions) == 1:
        return versions[0]  # the store compares, in the step that writes
    current = policies.get(pool).version
    if versions is None and current == 0:
        raise Conflict(f"pool {pool} has no policy: If-Match: * matches an existing one only")
    return current if versions is None or current in versions else versions[0]


@router.get("", openapi_extra=needs(Role.VIEWER), response_model=PoolsPublic)
def list_pools(who: Who, config: Config, jobs: Jobs, registry: Registry, policies: Policies) -> PoolsPublic:
    summaries = summarize(jobs, registry, config.pools)
    return PoolsPublic(pools=[PoolPublic(**asdict(s), policy=_shown(policies.get(s.name))) for s in summaries])


@router.get("/{name}/policy", openapi_extra=needs(Role.VIEWER), response_model=PolicyPublic, responses={200: {"headers": _ETAG}, **NOT_FOUND})
def get_policy(name: str, who: Who, config: Config, policies: Policies, response: Response) -> PolicyPublic:
    """The pool's policy; its ETag is its version, for If-Match."""
    return _shown(policies.get(_pool(config, name)), response)


@router.put(
    "/{name}/policy", openapi_extra=needs(Role.ADMIN, "policy.put"),
    response_model=PolicyPublic,
    responses={200: {"headers": _ETAG}, **NOT_FOUND, **FORBIDDEN, **CONFLICT},
)
def put_policy(
    name: str,
    body: LivePolicy,
    who: Who,
    config: Config,
    policies: Policies,
    response: Response,
    if_match: Annotated[str | None, Header(description=_IF_MATCH_HELP)] = None,
) -> PolicyPublic:
    """Replace the pool's policy (admin token only). With If-Match (the ETag of a GET), a
    change based on a stale version is refused with 409. A policy whose `min` exceeds its
    `max` is refused with 422, as an invalid field is (a rule across two fields, which the
    schema can only say in words)."""
    if not who.admin:
        raise Forbidden("changing a capacity policy needs the admin token")
    pool = _pool(config, name)
    policy = _POLICY.dump_python(body, mode="json")
    return _shown(policies.put(pool, policy, by=who.tenant, expected_version=_expected(policies, pool, if_match)), response, body)


@router.get("/{name}/policy/history", openapi_extra=needs(Role.VIEWER), response_model=PolicyHistoryPublic, responses=NOT_FOUND)
def policy_history(name: str, who: Who, config: Config, policies: Policies, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> PolicyHistoryPublic:
    return PolicyHistoryPublic(changes=policies.audit_trail(_pool(config, name), limit))


@router.get("/{name}/decisions", openapi_extra=needs(Role.VIEWER), response_model=DecisionsPublic, responses=NOT_FOUND)
def decisions(name: str, who: Who, config: Config, policies: Policies, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> DecisionsPublic:
    return DecisionsPublic(decisions=policies.decisions(_pool(config, name), limit))


@router.post(
    "/{name}/policy/seed", openapi_extra=needs(Role.ADMIN, "policy.seed"),
    response_model=SeedPublic,
    responses={**NOT_FOUND, **FORBIDDEN},
)
def seed_policy(name: str, body: SeedBody, who: Who, config: Config, history: History) -> SeedPublic:
    """Seed the pool's demand history with a trace's hours (admin token only): a farm moving
    from Jenkins or Actions gives its predictive policy the weeks it already knows. The hours
    move by whole weeks (each keeps its hour of the week) to end in the week before now; those
    then older than autoscaler.history_weeks are left out; each one written replaces the
    pool's history for that hour. Audited in the policy's history; the autoscaler learns again
    from the history on its next turn if the pool's policy is predictive (or when it becomes
    so). Bodies over api.max_body_bytes: send the hours in parts (the CLI does), each with
    the seed's `last_hour` and all but the last with `more`: the seed is one entry in the
    history, counted once. The summary answered is this part's."""
    if not who.admin:
        raise Forbidden("seeding a pool's demand history needs the admin token")
    pool = _pool(config, name)
    if body.more and body.last_hour is None:
        raise InvalidInput("a part with more to come names the seed's last hour", ("body", "last_hour"))
    hours: dict[int, Hour] = {}
    for i, h in enumerate(body.hours):
        if h.hour in hours:
            raise InvalidInput(f"hour {h.hour} is given twice", ("body", "hours", i, "hour"))
        hours[h.hour] = Hour(dict(h.arrivals), dict(h.durations))
    now = time.time()
    kept, weeks, left_out = shift_into(hours, now, config.autoscaler.history_weeks * WEEK_HOURS, body.last_hour)
    summary = {
        "jobs": jobs(kept.values()), "hours": len(kept), "first": _hour_at(min(kept)) if kept else None,
        "last": _hour_at(max(kept)) if kept else None, "weeks_moved": weeks, "hours_left_out": left_out,
    }  # fmt: skip
    seeded = history.seed(
        pool, kept, by=who.tenant, at_ms=int(now * 1000), summary=summary, part_of=body.last_hour, more=body.more
    )
    return SeedPublic(pool=pool, seeded=seeded, **summary)


@router.get("/{name}/history", openapi_extra=needs(Role.VIEWER), response_model=HistoryPublic, responses=NOT_FOUND)
def demand_history(name: str, who: Who, config: Config, history: History, policies: Policies) -> HistoryPublic:
    """What the pool's demand history holds (hours kept, jobs in them): what a predictive
    policy learns from when it is switched on or seeded."""
    pool = _pool(config, name)
    counts = history.jobs_by_hour(pool)  # parses only the hours that changed since the last call
    with_jobs = [h for h, n in counts.items() if n]
    return HistoryPublic(
        pool=pool, jobs=sum(counts.values()), hours=len(with_jobs),
        first=_hour_at(min(with_jobs)) if with_jobs else None, last=_hour_at(max(with_jobs)) if with_jobs else None,
        keep_weeks=config.autoscaler.history_weeks, seeded=policies.get(pool).seeded,
    )  # fmt: skip


def _hour_at(hour: int) -> str:
    return rfc3339(hour * HOUR_S * 1000)
