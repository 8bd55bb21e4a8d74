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
scale_down_delay_s). Each step that moves desired says so in the reason (`held to max 5:
9 → 5`), so a decision names every bound that shaped it. Scale-down only ever drains idle
executors: a decision never names a busy one, so no running job is killed.

The top of the capacity core, in layers with no cycle (pyproject.toml holds them):

    policy      decide, still_until, Memory (and every public name below, re-exported)
    registry    each kind's configuration class, rule, still part and memory codec
    own, peers  farm's own rules; the peers' (peers reads the forecaster's hour_of_week)
    forecast    what the predictive policy learns
    kinds, document, demand
                the kinds' configurations, Snapshot and Decision; the memory document's
                readers; a pool's demand history by hour

None of them imports `farm simulate` (farm.sim), which sits on top of this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from farm.autoscale.document import (
    MEMORY_SCHEMA,
    MemoryDocError,
    UnkeepableMemory,
    doc_number,
    read_bool,
    read_int,
    read_list,
    read_number,
    read_object,
    show,
)
from farm.autoscale.kinds import (
    DEFAULT_LEAD_S,
    LIVE_KINDS,
    LIVE_MAX,
    NO_CAP,
    ArcPolicy,
    CapacityPolicy,
    Decision,
    GitLabPeriod,
    GitLabPolicy,
    JenkinsPolicy,
    KedaPolicy,
    LivePolicy,
    PredictivePolicy,
    ReactivePolicy,
    ScheduledPolicy,
    Snapshot,
    Window,
    _Policy,
)
from farm.autoscale.registry import KINDS, OWN_DOCS, RawDecide, RawStill, rules, stills

# The names callers have always imported from here (the kinds, the document's readers, the
# registry), beside this module's own.
__all__ = [
    "DEFAULT_LEAD_S", "LIVE_KINDS", "LIVE_MAX", "NO_CAP", "KINDS", "MEMORY_SCHEMA",
    "ArcPolicy", "CapacityPolicy", "Decision", "GitLabPeriod", "GitLabPolicy", "JenkinsPolicy", "KedaPolicy", "LivePolicy",
    "PredictivePolicy", "ReactivePolicy", "ScheduledPolicy", "Snapshot", "Window",
    "MemoryDocError", "UnkeepableMemory", "doc_number", "read_bool", "read_int", "read_list", "read_number", "read_object",
    "RawDecide", "RawStill", "rules", "stills",
    "Memory", "decide", "still_until",
]  # fmt: skip


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
        """This memory, of a policy of this kind, as a JSON-able document (farm.autoscale.document
        describes it)."""
        if kind not in OWN_DOCS:
            raise UnkeepableMemory(f"a {kind} policy's memory has no document (only {', '.join(OWN_DOCS)})")
        lim = self.limits
        return {
            "schema": MEMORY_SCHEMA, "kind": kind,
            "limits": {"below_since": None if lim.below_since is None else doc_number(lim.below_since),
                       "window_start": doc_number(lim.window_start), "started_in_window": int(lim.started_in_window)},
            "own": None if self.own is None else OWN_DOCS[kind][0](self.own),
        }  # fmt: skip

    @classmethod
    def from_doc(cls, doc: Any, kind: str) -> "Memory":
        """The memory a document holds, for a policy of this kind; MemoryDocError if it is of
        another schema version, another kind, or malformed."""
        d = read_object(doc, "memory", ("schema", "kind", "limits", "own"))
        if type(d["schema"]) is not int or d["schema"] != MEMORY_SCHEMA:
            raise MemoryDocError(f"memory: schema {show(d['schema'])}, this farm reads schema {MEMORY_SCHEMA}")
        if d["kind"] != kind:
            raise MemoryDocError(f"memory: what a {show(d['kind'])} policy learned, not a {kind} policy")
        if kind not in OWN_DOCS:
            raise MemoryDocError(f"memory: a {kind} policy's memory has no document")
        lim = read_object(d["limits"], "memory.limits", ("below_since", "window_start", "started_in_window"))
        limits = _Limits(
            below_since=None if lim["below_since"] is None else read_number(lim["below_since"], "memory.limits.below_since"),
            window_start=read_number(lim["window_start"], "memory.limits.window_start"),
            started_in_window=read_int(lim["started_in_window"], "memory.limits.started_in_window", lo=0),
        )
        own = None if d["own"] is None else OWN_DOCS[kind][1](d["own"])
        return cls(limits, own)


def _enforce_bounds(desired: int, policy: _Policy) -> int:
    return max(policy.min, min(policy.max, desired))


def _bounds(snap: Snapshot, policy: _Policy, steps: tuple[int, int, int, int]) -> str:
    """What a reason adds for each shared step that moved desired (`raw, bounded, limited,
    desired`), and for the queued jobs not counted as demand."""
    raw, bounded, limited, desired = steps
    why = [
        (raw, bounded, f"raised to min {policy.min}" if bounded > raw else f"held to max {policy.max}"),
        (bounded, limited, f"the scale-up budget ({policy.scale_up_per_min} a minute) allows {limited - snap.current} more now"),
        (limited, desired, f"held for the scale-down delay ({policy.hold_s(snap.lead_s):.0f} s)"),
    ]
    out = "".join(f"; {what}: {was} → {now}" for was, now, what in why if was != now)
    if snap.held:
        out += f"; {snap.held} queued not counted: their concurrency group is at its limit"
    return out


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


def still_until(snap: Snapshot, policy: _Policy, memory: Any, now: float) -> float:
    """For a pool whose decision at `now` did nothing: the time before which every decision
    would do nothing too, while no event comes (no arrival, no end, no executor ready), and
    would leave the memory as the next decision after it will find it anyway. The pool may
    be still or busy: between events its counts do not change, so only the policy's own
    clocks can (a drain's hold, a window's edge, a forecast cell's boundary, a poll).
    `farm simulate` skips those ticks (a quiet night, or a build of hours, is thousands of
    them); the figures are the same as deciding at each one (a test holds every kind to
    that). `now` when nothing can be said."""
    if not isinstance(memory, Memory):
        return now
    lim, until = memory.limits, math.inf
    hold_end = None if lim.below_since is None else lim.below_since + policy.hold_s(snap.lead_s)
    if hold_end is not None and hold_end > now:  # fewer wanted: the drain comes after the hold
        # (past the hold, nothing was drained: no executor is idle, and one becoming so is an event)
        until = hold_end
    rate = policy.scale_up_per_min
    if rate is not None and lim.started_in_window >= rate and lim.window_start + 60 > now:  # more wanted, held by the rate
        until = min(until, lim.window_start + 60)
    return min(until, stills()[policy.kind](snap, policy, now, memory.own))  # type: ignore[attr-defined]


def decide(snap: Snapshot, policy: _Policy, *, now: float) -> Decision:
    memory: Memory = snap.memory if isinstance(snap.memory, Memory) else Memory()
    raw, reason, own = rules()[policy.kind](snap, policy, now, memory.own)  # type: ignore[attr-defined]
    bounded = _enforce_bounds(raw, policy)
    limited, lim = _limit_scale_up(snap, bounded, policy, memory.limits, now)
    desired, lim = _delay_scale_down(snap, limited, policy, lim, now)
    if desired != raw or snap.held:  # (formatted only then: `farm simulate` decides millions of times)
        reason += _bounds(snap, policy, (raw, bounded, limited, desired))
    start = max(0, desired - snap.current)
    drain = min(snap.idle, max(0, snap.current - desired))
    return Decision(desired, reason, Memory(lim, own), start, drain)
