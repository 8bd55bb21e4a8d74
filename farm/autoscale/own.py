"""farm's own policies' sizing rules (reactive, scheduled, predictive), and each one's memory
as a document. Pure.

Each rule is raw: `rule(snapshot, policy, now, own) -> (desired, reason, own)`, its own
memory in and out; farm.autoscale.policy.decide() applies the shared steps (bounds, the
scale-up rate, the scale-down delay) to whatever a rule wants. The peers' rules are in
farm.autoscale.peers; farm.autoscale.registry finds both by kind. A `*_still` says, for a
pool whose counts stand, until when the rule would do nothing (see policy.still_until); a
`*_to_doc` / `*_from_doc` pair writes and reads the kind's own memory, inside the document
described in farm.autoscale.document.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from farm.autoscale.document import MemoryDocError, UnkeepableMemory, doc_number, read_list, read_number, read_object, show
from farm.autoscale.forecast import Forecaster
from farm.autoscale.kinds import PredictivePolicy, ReactivePolicy, ScheduledPolicy, Snapshot, Window

# -- reactive --------------------------------------------------------------------------------


def reactive(snap: Snapshot, policy: ReactivePolicy, now: float, own: Any) -> tuple[int, str, Any]:
    return snap.queued + snap.running + policy.buffer, f"queued {snap.queued} + running {snap.running} + buffer {policy.buffer}", own


def reactive_to_doc(own: Any) -> Any:
    raise UnkeepableMemory(f"a reactive policy learns nothing, yet its memory holds {show(own)}")


def reactive_from_doc(doc: Any) -> Any:
    raise MemoryDocError(f"memory.own: a reactive policy learns nothing, not {show(doc)}")


# -- scheduled -------------------------------------------------------------------------------


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


def scheduled(snap: Snapshot, policy: ScheduledPolicy, now: float, own: Any) -> tuple[int, str, Any]:
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


def scheduled_still(snap: Snapshot, policy: ScheduledPolicy, now: float, own: Any) -> float:
    """The next time a window opens or closes (when its state is computed again)."""
    if own is None or len(own) != len(policy.windows):
        return now
    return min((min(s.next_open, s.open_until if s.open_until > s.checked else math.inf) for s in own), default=math.inf)


_WINDOW_FIELDS = ("open_until", "next_open", "checked")


def scheduled_to_doc(own: Any) -> list[dict[str, Any] | None]:
    return [None if s is None else {f: doc_number(getattr(s, f)) for f in _WINDOW_FIELDS} for s in own]


def scheduled_from_doc(doc: Any) -> tuple[_WindowState | None, ...]:
    states: list[_WindowState | None] = []
    for i, s in enumerate(read_list(doc, "memory.own")):
        if s is None:
            states.append(None)
            continue
        what = f"memory.own[{i}]"
        s = read_object(s, what, _WINDOW_FIELDS)
        states.append(_WindowState(**{f: read_number(s[f], f"{what}.{f}") for f in _WINDOW_FIELDS}))
    return tuple(states)


# -- predictive ------------------------------------------------------------------------------


def predictive(snap: Snapshot, policy: PredictivePolicy, now: float, own: Any) -> tuple[int, str, Any]:
    # A new version of the policy with another target or budget starts learning afresh (its
    # min and max alone keep what was learned).
    fc: Forecaster = own if own is not None and own.follows(policy) else Forecaster.new(policy, snap.lead_s)
    fc = fc.observe(snap.arrivals, now, snap.queued + snap.running, snap.waits)
    buffer, why = fc.buffer(now)
    return snap.queued + snap.running + buffer, f"queued {snap.queued} + running {snap.running} + {why}", fc


def predictive_still(snap: Snapshot, policy: PredictivePolicy, now: float, own: Any) -> float:
    return now if own is None else own.still_until(now)


def predictive_to_doc(own: Any) -> dict[str, Any]:
    return own.to_doc()


def predictive_from_doc(doc: Any) -> Any:
    return Forecaster.from_doc(doc)
