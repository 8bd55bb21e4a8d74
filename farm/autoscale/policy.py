"""Capacity policies: pure functions from a snapshot of a pool to a decision.

    decide(snapshot, policy, now=...) -> Decision

No I/O and no clock of its own: the live autoscaler and the simulator call this very
function, which is what makes `farm simulate` trustworthy for tuning. A policy that learns
(the predictive one, Jenkins' moving averages) carries what it learned in `Snapshot.memory`
and hands the next memory back in the `Decision`; the caller stores it and passes it in next
time.

Every policy computes a raw desired count; the shared steps then apply, in this order:
`_enforce_bounds` (min/max), `_limit_scale_up` (at most scale_up_per_min starts a minute)
and `_delay_scale_down` (desired may only fall after it has wanted to for
scale_down_delay_s). Scale-down only ever drains idle executors: a decision never names a
busy one, so no running job is killed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

# -- data in and out -------------------------------------------------------------------------


# The provisioning lead time (asking for an executor -> it taking a job) assumed until one is
# measured: the live autoscaler's start (settings.autoscaler.lead_s), a snapshot's default and
# `farm simulate --lead`. A minute is a cloud VM or a pod on a new node; a farm on warm Ray
# nodes measures seconds within its first starts.
DEFAULT_LEAD_S = 60.0


@dataclass(frozen=True)
class Snapshot:
    """What a pool looks like at one moment (times in seconds)."""

    queued: int
    running: int  # busy executors
    starting: int  # requested, not ready yet
    idle: int
    idle_ages_s: tuple[float, ...] = ()  # how long each idle executor has been idle, longest first
    arrivals: tuple[float, ...] = ()  # submission times since the previous decision
    waits: tuple[float, ...] = ()  # how long each job started since the previous decision waited
    lead_s: float = DEFAULT_LEAD_S  # measured provisioning lead time
    memory: Any = None  # what the policy learned so far (opaque to the caller)

    @property
    def current(self) -> int:
        return self.running + self.starting + self.idle


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    memory: Any = None
    to_start: int = 0
    to_drain: int = 0  # idle executors to stop (the longest idle first)


# -- policy configurations -------------------------------------------------------------------


# A policy's `max` when it names none. farm's own kinds (what a pool runs live) stop at
# LIVE_MAX: a policy follows the queue, so without a cap a flood of jobs (a retry storm, one
# tenant's backlog of api.max_queued_per_tenant) would start as many executors as the
# cluster holds; 50 bounds what such a mistake costs and is as many as a mid-size farm's pool
# runs at once (README, "Capacity policies"). The peers model other systems, whose own
# defaults set no cap (ARC's maxRunners, GitLab's limit 0, Jenkins' instance cap): NO_CAP.
LIVE_MAX = 50
NO_CAP = 10_000


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # JSON Schema cannot compare two fields: the rule is in both fields' descriptions, and a
    # policy that breaks it is a 422 (ValidationErrorBody) like any other invalid field.
    # Every field's description is its line in README.md's tables (tests/unit/policy_tables.py).
    min: Annotated[int, Field(ge=0, description="executors kept at least; must not exceed `max` (a 422 if it does)")] = 0
    max: Annotated[int, Field(ge=0, description="executors at most; must not be below `min` (a 422 if it is)")] = NO_CAP
    scale_up_per_min: Annotated[int | None, Field(ge=1, description="executors started in any minute at most (none: no limit)")] = None
    scale_down_delay_s: Annotated[float, Field(ge=0, description="seconds the pool must want fewer executors before idle ones "
                                               "are drained")] = 60.0
    one_shot: Annotated[bool, Field(description="`farm simulate` only: executors take one job and exit (ARC, KEDA)")] = False
    tick_s: Annotated[float, Field(gt=0, description="`farm simulate` only: seconds between decisions besides arrivals "
                                   "(live: `autoscaler.interval_s`)")] = 10.0
    on_arrival: Annotated[bool, Field(description="`farm simulate` only: decide on every arrival too")] = True
    uses_idle_ages: ClassVar[bool] = False  # its rule reads Snapshot.idle_ages_s

    @model_validator(mode="after")
    def _min_within_max(self) -> "_Policy":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is over max ({self.max})")
        return self

    def hold_s(self, lead_s: float) -> float:
        """How long desired must stay below current before idle executors are drained."""
        return self.scale_down_delay_s


class _LivePolicy(_Policy):
    """farm's own kinds, which a pool may run live: capped at LIVE_MAX unless told otherwise."""

    max: Annotated[int, Field(ge=0, description="executors at most; must not be below `min` (a 422 if it is)")] = LIVE_MAX


class ReactivePolicy(_LivePolicy):
    """queued + running + buffer."""

    kind: Literal["reactive"] = "reactive"
    buffer: Annotated[int, Field(ge=0, description="idle executors kept beyond queued + running")] = 0


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: Annotated[str, Field(description="when the window opens: cron, e.g. `0 8 * * 1-5`")]
    duration_s: Annotated[float, Field(gt=0, description="seconds it stays open")]
    timezone: Annotated[str, Field(description="the cron's time zone (an IANA name)")] = "UTC"
    idle: Annotated[int, Field(ge=0, description="idle executors kept while it is open")] = 0
    min: Annotated[int, Field(ge=0, description="executors kept at least while it is open")] = 0


class ScheduledPolicy(_LivePolicy):
    """queued + running + the idle target of the open window (or `idle` outside any)."""

    kind: Literal["scheduled"] = "scheduled"
    idle: Annotated[int, Field(ge=0, description="idle executors kept beyond queued + running while no window is open")] = 0
    windows: list[Window] = Field(default_factory=list, description="when to keep more: the largest `idle` and `min` of the "
                                  "open ones win")


class PredictivePolicy(_LivePolicy):
    """Sizes the idle buffer from the pool's own learned arrival pattern so that the share of
    jobs waiting longer than `target_p95_s` stays within `1 - quantile` (see forecast.py)."""

    kind: Literal["predictive"] = "predictive"
    target_p95_s: Annotated[float, Field(gt=0, description="the queue wait, in seconds, that at most 1 - `quantile` of jobs "
                                         "may exceed")] = 15.0
    quantile: Annotated[float, Field(gt=0.5, lt=1, description="the share of jobs that must start within `target_p95_s`")] = 0.95
    # Plan for this share of the late-job budget; the rest is kept for what no history shows
    # (a rebase starting 179 jobs in an hour, most of which wait a boot under any buffer).
    safety: Annotated[float, Field(gt=0, le=1, description="the share of the late-job budget it plans to spend; the rest is "
                                   "kept for bursts no history shows")] = 0.6
    replan_s: Annotated[float, Field(gt=0, description="seconds between plans of the coming week from what it learned")] = 3600.0
    active_s: Annotated[float, Field(gt=0, description="a job arrived within this many seconds: the pool counts as active "
                                     "(its hours are learned apart from quiet ones)")] = 900.0

    def hold_s(self, lead_s: float) -> float:
        """Keep a freed executor at least as long as a new one takes to boot (the break-even
        of ski rental: holding it longer costs more than booting anew, shorter risks paying
        for both). When a boot meets the wait target, hold none: no job needs it ready."""
        return 0.0 if self.target_p95_s >= lead_s else max(self.scale_down_delay_s, lead_s)


class JenkinsPolicy(_Policy):
    kind: Literal["jenkins"] = "jenkins"
    uses_idle_ages: ClassVar[bool] = True
    margin: Annotated[float, Field(ge=0, lt=1)] = 0.1
    margin0: Annotated[float, Field(ge=0, lt=1)] = 0.5
    margin_decay: Annotated[float, Field(gt=0, lt=1)] = 0.5
    decay: Annotated[float, Field(gt=0, lt=1)] = 0.9
    no_delay: bool = True  # kubernetes-plugin NoDelayProvisionerStrategy
    idle_minutes: Annotated[float, Field(ge=0)] = 0.0  # retention: 0 = one build per agent
    spare: Annotated[int, Field(ge=0)] = 0  # idle agents kept ready (the sweep knob)


class GitLabPeriod(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hours_of_week: list[int]  # 0 = Monday 00:00 UTC; the compiled form of cron `periods`
    idle_count: Annotated[int, Field(ge=0)] = 0
    idle_time_s: Annotated[float | None, Field(ge=0)] = None


class GitLabPolicy(_Policy):
    kind: Literal["gitlab"] = "gitlab"
    uses_idle_ages: ClassVar[bool] = True
    idle_count: Annotated[int, Field(ge=0)] = 0
    idle_time_s: Annotated[float, Field(ge=0)] = 300.0
    scale_factor: Annotated[float, Field(ge=0)] = 0.0
    scale_factor_limit: Annotated[int, Field(ge=0)] = 0
    periods: list[GitLabPeriod] = Field(default_factory=list)


class ArcPolicy(_Policy):
    kind: Literal["arc"] = "arc"
    min_runners: Annotated[int, Field(ge=0)] = 0
    one_shot: bool = True
    scale_down_delay_s: float = 0.0


class KedaPolicy(_Policy):
    kind: Literal["keda"] = "keda"
    min_replicas: Annotated[int, Field(ge=0)] = 0
    polling_interval_s: Annotated[float, Field(gt=0)] = 30.0
    target_queue_length: Annotated[int, Field(ge=1)] = 1
    one_shot: bool = True
    on_arrival: bool = False
    scale_down_delay_s: float = 0.0


CapacityPolicy = Annotated[
    Union[ReactivePolicy, ScheduledPolicy, PredictivePolicy, JenkinsPolicy, GitLabPolicy, ArcPolicy, KedaPolicy],
    Field(discriminator="kind"),
]
# What a pool may run live (the API, farm.yaml, the autoscaler): farm's own kinds. The peers
# (jenkins, gitlab, arc, keda) are models of other systems for `farm simulate` to compare
# against; ARC's and KEDA's one-shot executors are not something farm's executors do.
LivePolicy = Annotated[Union[ReactivePolicy, ScheduledPolicy, PredictivePolicy], Field(discriminator="kind")]
LIVE_KINDS = ("reactive", "scheduled", "predictive")


# -- the shared steps ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Limits:
    below_since: float | None = None  # when desired first fell below current
    window_start: float = 0.0  # scale-up rate window
    started_in_window: int = 0


@dataclass(frozen=True)
class Memory:
    limits: _Limits = field(default_factory=_Limits)
    own: Any = None  # the policy's own memory

    def to_doc(self, kind: str) -> dict[str, Any]:
        """This memory, of a policy of this kind, as a JSON-able document (see "what a policy
        learned, as a document" below)."""
        if kind not in _OWN_DOCS:
            raise ValueError(f"a {kind} policy's memory has no document (only {', '.join(_OWN_DOCS)})")
        lim = self.limits
        return {
            "schema": MEMORY_SCHEMA, "kind": kind,
            "limits": {"below_since": None if lim.below_since is None else doc_number(lim.below_since),
                       "window_start": doc_number(lim.window_start), "started_in_window": int(lim.started_in_window)},
            "own": None if self.own is None else _OWN_DOCS[kind][0](self.own),
        }  # fmt: skip

    @classmethod
    def from_doc(cls, doc: Any, kind: str) -> "Memory":
        """The memory a document holds, for a policy of this kind; MemoryDocError if it is of
        another schema version, another kind, or malformed."""
        d = read_object(doc, "memory", ("schema", "kind", "limits", "own"))
        if type(d["schema"]) is not int or d["schema"] != MEMORY_SCHEMA:
            raise MemoryDocError(f"memory: schema {_show(d['schema'])}, this farm reads schema {MEMORY_SCHEMA}")
        if d["kind"] != kind:
            raise MemoryDocError(f"memory: what a {_show(d['kind'])} policy learned, not a {kind} policy")
        if kind not in _OWN_DOCS:
            raise MemoryDocError(f"memory: a {kind} policy's memory has no document")
        lim = read_object(d["limits"], "memory.limits", ("below_since", "window_start", "started_in_window"))
        limits = _Limits(
            below_since=None if lim["below_since"] is None else read_number(lim["below_since"], "memory.limits.below_since"),
            window_start=read_number(lim["window_start"], "memory.limits.window_start"),
            started_in_window=read_int(lim["started_in_window"], "memory.limits.started_in_window", lo=0),
        )
        own = None if d["own"] is None else _OWN_DOCS[kind][1](d["own"])
        return cls(limits, own)


def _enforce_bounds(desired: int, policy: _Policy) -> int:
    return max(policy.min, min(policy.max, desired))


def _limit_scale_up(snap: Snapshot, desired: int, policy: _Policy, lim: _Limits, now: float) -> tuple[int, _Limits]:
    want = desired - snap.current
    if want <= 0 or policy.scale_up_per_min is None:
        return desired, lim
    if now - lim.window_start >= 60:
        lim = replace(lim, window_start=now, started_in_window=0)
    allowed = max(0, policy.scale_up_per_min - lim.started_in_window)
    start = min(want, allowed)
    return snap.current + start, replace(lim, started_in_window=lim.started_in_window + start)


def _delay_scale_down(snap: Snapshot, desired: int, policy: _Policy, lim: _Limits, now: float) -> tuple[int, _Limits]:
    if desired >= snap.current:
        return desired, (lim if lim.below_since is None else replace(lim, below_since=None))
    if lim.below_since is None:
        lim = replace(lim, below_since=now)
    if now - lim.below_since < policy.hold_s(snap.lead_s):  # type: ignore[operator]
        return snap.current, lim
    return desired, lim


RawDecide = Callable[[Snapshot, Any, float, Any], tuple[int, str, Any]]


@cache
def rules() -> dict[str, RawDecide]:
    """Every policy kind's raw sizing rule (its own memory in, its own memory out): the one
    registry of kinds, which `decide()`, the API (LivePolicy) and `farm simulate`
    (CapacityPolicy) all follow; a test holds it to the unions. The peers' rules live in
    farm.autoscale.peers, which needs this module's types, hence the import here."""
    from farm.autoscale import peers

    return {"reactive": _reactive, "scheduled": _scheduled, "predictive": _predictive,
            "jenkins": peers.jenkins, "gitlab": peers.gitlab, "arc": peers.arc, "keda": peers.keda}  # fmt: skip


# When a still pool (nothing queued, running or starting) will next see a decision that does
# something, or a memory that the ticks between would have changed otherwise than the next
# decision will: each kind's own part (see still_until).
RawStill = Callable[[Snapshot, Any, float, Any], float]


@cache
def stills() -> dict[str, RawStill]:
    from farm.autoscale import peers

    return {"reactive": _never, "arc": _never, "scheduled": _scheduled_still, "predictive": _predictive_still,
            "jenkins": peers.jenkins_still, "gitlab": peers.gitlab_still, "keda": peers.keda_still}  # fmt: skip


def still_until(snap: Snapshot, policy: _Policy, memory: Any, now: float) -> float:
    """For a still pool whose decision at `now` did nothing: the time before which every
    decision would do nothing too, while nothing arrives, and would leave the memory as the
    next decision after it will find it anyway. `farm simulate` skips those ticks (a quiet
    night is thousands of them); the figures are the same as deciding at each one (a test
    holds every kind to that). `now` when nothing can be said."""
    if snap.queued or snap.running or snap.starting or not isinstance(memory, Memory):
        return now
    lim, until = memory.limits, math.inf
    if lim.below_since is not None:  # fewer wanted: the drain comes after the hold
        until = lim.below_since + policy.hold_s(snap.lead_s)
    rate = policy.scale_up_per_min
    if rate is not None and lim.started_in_window >= rate and lim.window_start + 60 > now:  # more wanted, held by the rate
        until = min(until, lim.window_start + 60)
    return min(until, stills()[policy.kind](snap, policy, now, memory.own))  # type: ignore[attr-defined]


def _never(snap: Snapshot, policy: Any, now: float, own: Any) -> float:
    return math.inf


def decide(snap: Snapshot, policy: _Policy, *, now: float) -> Decision:
    memory: Memory = snap.memory if isinstance(snap.memory, Memory) else Memory()
    desired, reason, own = rules()[policy.kind](snap, policy, now, memory.own)  # type: ignore[attr-defined]
    desired = _enforce_bounds(desired, policy)
    desired, lim = _limit_scale_up(snap, desired, policy, memory.limits, now)
    desired, lim = _delay_scale_down(snap, desired, policy, lim, now)
    start = max(0, desired - snap.current)
    drain = min(snap.idle, max(0, snap.current - desired))
    return Decision(desired, reason, Memory(lim, own), start, drain)


# -- farm's own policies ---------------------------------------------------------------------


def _reactive(snap: Snapshot, policy: ReactivePolicy, now: float, own: Any) -> tuple[int, str, Any]:
    return snap.queued + snap.running + policy.buffer, f"queued {snap.queued} + running {snap.running} + buffer {policy.buffer}", own


@dataclass(frozen=True)
class _WindowState:
    open_until: float  # the window is open while now < open_until
    next_open: float  # the next opening at or after the last check
    checked: float


def _window_state(w: Window, now: float, prev: _WindowState | None) -> _WindowState:
    """Open/close times of a cron window, recomputed only when `now` passes a boundary
    (croniter is slow; a simulation decides hundreds of thousands of times)."""
    if prev is not None and now < prev.next_open and (now < prev.open_until or prev.open_until <= prev.checked):
        return prev
    import datetime as dt
    from zoneinfo import ZoneInfo

    from croniter import croniter

    tz = ZoneInfo(w.timezone)
    at = dt.datetime.fromtimestamp(now, tz)
    last_open = croniter(w.cron, at).get_prev(float)
    nxt = croniter(w.cron, at).get_next(float)
    return _WindowState(open_until=last_open + w.duration_s, next_open=nxt, checked=now)


def _scheduled(snap: Snapshot, policy: ScheduledPolicy, now: float, own: Any) -> tuple[int, str, Any]:
    # (a state per window, in order; a memory of other windows, e.g. kept from an older
    # version of the policy, is started afresh: the states only cache cron arithmetic)
    states = list(own) if own and len(own) == len(policy.windows) else [None] * len(policy.windows)
    idle, floor, why = policy.idle, 0, "no window open"
    for i, w in enumerate(policy.windows):
        states[i] = _window_state(w, now, states[i])
        if now < states[i].open_until:
            idle, floor, why = max(idle, w.idle), max(floor, w.min), f"window {w.cron!r} open"
    desired = max(floor, snap.queued + snap.running + idle)
    return desired, f"{why}: queued {snap.queued} + running {snap.running} + idle {idle}", tuple(states)


def _scheduled_still(snap: Snapshot, policy: ScheduledPolicy, now: float, own: Any) -> float:
    """The next time a window opens or closes (when its state is computed again)."""
    if own is None or len(own) != len(policy.windows):
        return now
    return min((min(s.next_open, s.open_until if s.open_until > s.checked else math.inf) for s in own), default=math.inf)


def _predictive_still(snap: Snapshot, policy: PredictivePolicy, now: float, own: Any) -> float:
    return now if own is None else own.still_until(now)


def _predictive(snap: Snapshot, policy: PredictivePolicy, now: float, own: Any) -> tuple[int, str, Any]:
    from farm.autoscale.forecast import Forecaster

    # A new version of the policy with another target or budget starts learning afresh (its
    # min and max alone keep what was learned).
    fc: Forecaster = own if own is not None and own.follows(policy) else Forecaster.new(policy, snap.lead_s)
    fc = fc.observe(snap.arrivals, now, snap.queued + snap.running, snap.waits)
    buffer, why = fc.buffer(now)
    return snap.queued + snap.running + buffer, f"queued {snap.queued} + running {snap.running} + {why}", fc


def ceil_div(a: float, b: float) -> int:
    return int(math.ceil(a / b)) if b else 0


# -- what a policy learned, as a document ----------------------------------------------------
#
# The autoscaler keeps each pool's Memory in Redis so a restarted one resumes (the store's
# farm.store.learned): as a plain JSON document, never pickle, so reading one runs no code.
# A document names its layout (`schema`) and the policy's kind:
#
#     {"schema": 1, "kind": "predictive",
#      "limits": {"below_since": null | t, "window_start": t, "started_in_window": n},
#      "own": null | the kind's own memory}
#
# where `own` is null for `reactive` (it learns nothing), a list of each window's
# {"open_until", "next_open", "checked"} (or null, not yet checked) for `scheduled`, and
# Forecaster.to_doc() for `predictive`. JSON has no infinities: "inf" and "-inf" stand for
# them where a field may hold one. Changing a layout means a new schema number; a document
# of another number, or one that does not read as its schema says (wrong types, lengths,
# shapes, values out of range), raises MemoryDocError, and the caller starts afresh.

MEMORY_SCHEMA = 1


class MemoryDocError(ValueError):
    """A document of learned memory this farm cannot take: another schema version, or malformed."""


def doc_number(x: float) -> int | float | str:
    """A number for a document: an int stays an int, a float a float (JSON gives both back
    exactly), an infinity becomes "inf" or "-inf"."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"not a number: {x!r}")
    if isinstance(x, numbers.Integral):
        return int(x)
    x = float(x)
    if math.isnan(x):
        raise ValueError("NaN in learned memory")
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


_INT64 = 2**63


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def read_number(v: Any, what: str, *, lo: float | None = None, infinite: bool = False) -> int | float:
    """A finite number (or, if `infinite`, "inf"/"-inf") from a document, at least `lo`."""
    if type(v) is int and -_INT64 <= v < _INT64 or type(v) is float and math.isfinite(v):
        out: int | float = v
    elif infinite and v in ("inf", "-inf"):
        out = float(v)
    else:
        raise MemoryDocError(f"{what}: {_show(v)} is not a {'' if infinite else 'finite '}number")
    if lo is not None and out < lo:
        raise MemoryDocError(f"{what}: {_show(v)} is below {lo:g}")
    return out


def read_int(v: Any, what: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """An integer from a document, in [lo, hi)."""
    if type(v) is not int or not -_INT64 <= v < _INT64:
        raise MemoryDocError(f"{what}: {_show(v)} is not an integer")
    if lo is not None and v < lo or hi is not None and v >= hi:
        raise MemoryDocError(f"{what}: {v} is out of range")
    return v


def read_bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise MemoryDocError(f"{what}: {_show(v)} is not true or false")
    return v


def read_list(v: Any, what: str, *, length: int | None = None, most: int | None = None) -> list[Any]:
    """A list from a document: of exactly `length` items, or at most `most`."""
    if type(v) is not list:
        raise MemoryDocError(f"{what}: {_show(v)} is not a list")
    if length is not None and len(v) != length or most is not None and len(v) > most:
        raise MemoryDocError(f"{what}: a list of {len(v)}, not {length if length is not None else f'at most {most}'}")
    return v


def read_object(v: Any, what: str, names: tuple[str, ...]) -> dict[str, Any]:
    """An object from a document with exactly these fields."""
    if type(v) is not dict:
        raise MemoryDocError(f"{what}: {_show(v)} is not an object")
    if set(v) != set(names):
        missing, extra = sorted(set(names) - set(v)), sorted(set(v) - set(names))
        raise MemoryDocError(f"{what}: " + "; ".join(
            ([f"lacks {', '.join(missing)}"] if missing else []) + ([f"has unknown {', '.join(map(_show, extra))}"] if extra else [])))  # fmt: skip
    return v


def _reactive_own_doc(own: Any) -> Any:
    raise ValueError(f"a reactive policy learns nothing, yet its memory holds {_show(own)}")


def _reactive_own(doc: Any) -> Any:
    raise MemoryDocError(f"memory.own: a reactive policy learns nothing, not {_show(doc)}")


_WINDOW_FIELDS = ("open_until", "next_open", "checked")


def _scheduled_own_doc(own: Any) -> list[dict[str, Any] | None]:
    return [None if s is None else {f: doc_number(getattr(s, f)) for f in _WINDOW_FIELDS} for s in own]


def _scheduled_own(doc: Any) -> tuple[_WindowState | None, ...]:
    states: list[_WindowState | None] = []
    for i, s in enumerate(read_list(doc, "memory.own")):
        if s is None:
            states.append(None)
            continue
        what = f"memory.own[{i}]"
        s = read_object(s, what, _WINDOW_FIELDS)
        states.append(_WindowState(**{f: read_number(s[f], f"{what}.{f}") for f in _WINDOW_FIELDS}))
    return tuple(states)


def _predictive_own_doc(own: Any) -> dict[str, Any]:
    return own.to_doc()


def _predictive_own(doc: Any) -> Any:
    from farm.autoscale.forecast import Forecaster

    return Forecaster.from_doc(doc)


# each live kind's own memory: (to a document, from one)
_OWN_DOCS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "reactive": (_reactive_own_doc, _reactive_own),
    "scheduled": (_scheduled_own_doc, _scheduled_own),
    "predictive": (_predictive_own_doc, _predictive_own),
}
