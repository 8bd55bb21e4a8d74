"""What the predictive policy learns, and how it turns that into an idle buffer. Pure.

The question a buffer answers: when a job arrives, is an executor ready for it within the
wait target T? A new one takes the lead time L to boot, longer than T (the interesting case;
when T >= L, executors started on demand already meet it: no buffer, and a freed executor
is not held). Capacity asked for by t - W (W = L - T) is ready by t + T; an executor that
was there at t - W is still there at t + T unless it was drained in between, and a drain
waits until the pool has not needed it for the hold. So with an idle buffer b, the job
arriving at t is late iff its deficit k > b, where

    k = its place in the pool at t (queued + running, itself included)
        - the jobs in the pool that finished by t + T (each frees an executor)
        - the least, over u in [t - W, t + T], of the most jobs in the pool over (u - hold, u]

i.e. the executors it needs beyond those surely there in time. A job's deficit is counted T
after it arrives, once the pool's path to t + T is seen. CI demand arrives in fan-out bursts
(one push starts ~19 jobs at once), so k is what matters, not an arrival rate as Erlang-C
would assume. Replayed job by job on the shared trace under a constant buffer of 17 at
L = 60 s, T = 15 s, the deficits call 757 jobs late and 795 are (the first form, which
counted neither finished jobs nor drains, called 1,259).

The forecaster keeps, online and only from what it has seen, a histogram of k for each hour
of the week (UTC, Monday 00:00 = 0), split by the recent level: "active" when a job arrived
within `active_s` (lagged by L, so the state at t is known in time to boot its buffer by t),
else "quiet". Every `replan_s` it plans a coming week: each cell's expected histogram is
its own rate shrunk toward its parent's (the same hour of the day and state, over weekdays
or over weekend days) and the parent's toward the state's over the whole week (gamma-Poisson
posterior means, PRIOR_S seconds of weight), so a new week borrows from the day before and
an hour seen quiet for a few weeks is not yet taken to be quiet. `plan` then chooses a
buffer per cell minimising executor-hours subject to the expected late jobs staying within
(1 - quantile) * safety of all jobs, spending that budget where a buffer costs most per late
job saved. The budget is divided by how the plans so far fared (jobs that really waited
longer than T, against the late jobs those plans expected): a plan picks the hours that
looked quiet, and some of them were only lucky. When the last RECENT jobs fared worse than
all of them, it is divided by that instead, so a surge (the shared trace's last full week
has a fifth more jobs than the weeks before, and under the cumulative ratio alone twice the
late jobs its plans expected) is answered within the week.

Until it has a day of history it plans nothing by the hour: the buffer is the largest
deficit seen so far (the widest fan-out, for all hours), and those jobs do not calibrate the
plans that follow. (Calibrating against its first hour, when no plan exists and a burst
finds no buffer, made the plans of the next days keep 23-33 executors everywhere.)

Two guards: the buffer for the next L seconds is the larger of this hour's and the next's
(capacity asked for now is ready at now + L), and when the recent jobs the plan made late
run well above what it expected for them (the week is not like the weeks before), it falls
back to the pooled, all-hours buffer until that passes.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np

from farm.autoscale.document import (
    MemoryDocError,
    UnkeepableMemory,
    doc_number,
    read_bool,
    read_int,
    read_list,
    read_number,
    read_object,
)

HOURS = 168
CELLS = 2 * HOURS  # each hour of the week, quiet or active
K_MAX = 128  # deficits above this count as K_MAX
RECENT = 400  # arrivals the fallback guard looks back over
PRIOR_S = 36000.0  # how much a parent's rate weighs in a cell, in seconds of the cell's own
WARMUP_S = 86400.0  # history before plans by the hour are used (and checked against the waits)
CALIBRATION_PRIOR = 50.0  # late jobs: how much the forecast is trusted before it is checked
_ARRIVED, _SEEN = itemgetter(0), itemgetter(1)  # of a pending arrival
_LATE, _EXPECTED = itemgetter(0), itemgetter(1)  # of an outcome


# -- the forecaster as a document: its fields by kind (see Forecaster.to_doc) ------------------
FORECASTER_SCHEMA = 1
# finite numbers, each with the least it may be
_SCALARS = {"window_s": 0.0, "lead_s": 0.0, "budget_share": 0.0, "replan_s": 0.0, "active_s": 0.0, "target_s": 0.0,
            "hold_s": 0.0, "forecast": 0.0}  # fmt: skip
_FLAGS = ("on_demand", "fallback")
_OPTIONAL = ("seen_until", "first_seen")  # a finite number or None
_COUNTS = ("pooled", "started", "late", "called_late")
# the arrays: shape, dtype, and whether they hold whole numbers (counts)
_ARRAYS = {"hist": ((CELLS, K_MAX + 1), np.float64, True), "exposure": ((CELLS,), np.float64, False),
           "buffers": ((CELLS,), np.int64, True), "expected": ((CELLS,), np.float64, False)}  # fmt: skip
_DOC_FIELDS = ("schema", *_SCALARS, *_FLAGS, *_OPTIONAL, *_COUNTS, "planned_at", "calibrating_from", "samples", "pending",
               "history", "outcomes", *_ARRAYS)  # fmt: skip


def _read_array(v: Any, what: str, shape: tuple[int, ...], dtype: type, whole: bool) -> np.ndarray:
    """An array of this shape and dtype from a document: each value in [0, 2**53] (counts,
    seconds, shares), and a whole number if `whole`."""
    d = read_object(v, what, ("dtype", "shape", "data"))
    if d["dtype"] != np.dtype(dtype).name or d["shape"] != list(shape):
        raise MemoryDocError(f"{what}: {d['dtype']!r:.20} {d['shape']!r:.40}, not {np.dtype(dtype).name} {list(shape)}")
    data = read_list(d["data"], f"{what}.data", length=math.prod(shape))
    kinds = (int,) if np.issubdtype(dtype, np.integer) else (int, float)
    if not all(type(x) in kinds for x in data):
        raise MemoryDocError(f"{what}.data: not all {'integers' if kinds == (int,) else 'numbers'}")
    try:
        a = np.array(data, dtype=dtype).reshape(shape)
    except (OverflowError, ValueError) as e:
        raise MemoryDocError(f"{what}.data: {e}") from e
    if not (np.isfinite(a).all() and (a >= 0).all() and (a <= 2**53).all()):
        raise MemoryDocError(f"{what}.data: values not within [0, 2**53]")
    if whole and (a != np.floor(a)).any():
        raise MemoryDocError(f"{what}.data: values not whole numbers")
    return a


def hour_of_week(t: float) -> int:
    return (int(t // 3600) + 72) % HOURS  # 1970-01-01 was a Thursday


def cell(t: float, active: bool) -> int:
    return 2 * hour_of_week(t) + int(active)


def _late(hist: np.ndarray) -> np.ndarray:
    """late[..., b] = arrivals with k > b (suffix sums of the k histogram)."""
    tail = np.cumsum(hist[..., ::-1], axis=-1)[..., ::-1]
    return np.concatenate([tail[..., 1:], np.zeros(hist.shape[:-1] + (1,))], axis=-1)


def plan(hist: np.ndarray, exposure: np.ndarray, budget: float) -> np.ndarray:
    """Buffers b_c minimising executor-hours, sum(b_c * exposure_c), subject to
    sum(late_c(b_c)) <= budget, where exposure_c is the time the pool spends in cell c.

    Greedy on marginal steps: start where no job is late and take executors off, one step
    at a time, where a step adds the fewest late jobs per executor-hour saved (taking the
    b-th executor off cell c makes hist[c, b] more jobs late: those that were exactly b-th
    in their window). Within a cell the steps must go top down, so each step's price is
    raised to the dearest step above it; then all cells' steps sort into one order and the
    longest prefix within the budget is taken. (A single Lagrangian price cannot do this: a
    burst makes late_c(b) linear in b, so whole cells flip together at one price.)"""
    late = _late(hist)
    top = np.argmax(late <= 0, axis=-1)  # the smallest zero-late buffer of each cell
    b = np.arange(hist.shape[1])
    valid = (b[None, :] >= 1) & (b[None, :] <= top[:, None])
    price = hist / np.maximum(exposure, 1e-9)[:, None]
    above = np.maximum.accumulate(np.where(valid, price, -np.inf)[:, ::-1], axis=1)[:, ::-1]
    cells, steps = np.nonzero(valid)
    order = np.lexsort((-steps, above[cells, steps]))
    taken = np.cumsum(hist[cells, steps][order]) <= budget
    n = int(np.argmin(taken)) if not taken.all() else len(taken)
    removed = np.bincount(cells[order][:n], minlength=hist.shape[0])
    return top - removed


def _parents() -> np.ndarray:
    """Each cell's parent: the same hour of the day and activity, on weekdays or at weekends."""
    how = np.arange(CELLS) // 2
    weekend = (how // 24) >= 5
    return (weekend * 24 + how % 24) * 2 + np.arange(CELLS) % 2


PARENT = _parents()
STATE = np.arange(CELLS) % 2


def expected_week(hist: np.ndarray, exposure: np.ndarray, prior_s: float) -> np.ndarray:
    """The k histogram each cell is expected to see in a coming week. A cell's rate is shrunk
    toward its parent's (the same hour of the day: weekdays pool five cells, weekends two),
    and the parent's toward its activity state's over the whole week, so an hour seen once
    or never borrows from its like, and an hour seen quiet for a few weeks is not yet
    known to be quiet."""
    n_parent = 2 * 48
    p_hist = np.zeros((n_parent, hist.shape[1]))
    np.add.at(p_hist, PARENT, hist)
    p_exp = np.bincount(PARENT, weights=exposure, minlength=n_parent)
    s_hist = np.stack([hist[STATE == 0].sum(axis=0), hist[STATE == 1].sum(axis=0)])
    s_exp = np.array([exposure[STATE == 0].sum(), exposure[STATE == 1].sum()])
    s_rate = s_hist / np.maximum(s_exp, 1.0)[:, None]
    p_rate = (p_hist + s_rate[np.arange(n_parent) % 2] * prior_s) / (p_exp + prior_s)[:, None]
    rate = (hist + p_rate[PARENT] * prior_s) / (exposure + prior_s)[:, None]
    return rate * week_exposure(exposure, prior_s)[:, None]


def week_exposure(exposure: np.ndarray, prior_s: float) -> np.ndarray:
    """Seconds a coming week spends in each cell: each hour's 3600 s split between quiet and
    active as seen, shrunk toward the share seen over the whole week."""
    q, a = exposure[0::2], exposure[1::2]
    share = a.sum() / max(q.sum() + a.sum(), 1.0)
    active = (a + share * prior_s) / (q + a + prior_s)
    out = np.empty(CELLS)
    out[0::2], out[1::2] = 3600 * (1 - active), 3600 * active
    return out


@dataclass
class Forecaster:
    """Online state of the predictive policy. The autoscaler owns one per pool and passes it
    back in through the snapshot's memory; it is updated in place."""

    window_s: float
    lead_s: float
    on_demand: bool  # the target is at least the lead time: executors started on demand meet it
    budget_share: float
    replan_s: float
    active_s: float
    target_s: float
    hold_s: float  # how long a freed executor stays before it is drained
    samples: deque = field(default_factory=deque)  # (time, jobs in the pool) as far back as the pending need
    # arrivals whose deficit is not yet known:
    # (time, when seen, cell, place in the pool when seen, buffer, expected late share)
    pending: deque = field(default_factory=deque)
    hist: np.ndarray = field(default_factory=lambda: np.zeros((CELLS, K_MAX + 1)))
    history: deque = field(default_factory=deque)  # arrival times within active_s
    # (late under the plan in force, the late share that plan expected for the cell)
    outcomes: deque = field(default_factory=lambda: deque(maxlen=RECENT))
    exposure: np.ndarray = field(default_factory=lambda: np.zeros(CELLS))  # seconds spent in each cell
    seen_until: float | None = None
    buffers: np.ndarray = field(default_factory=lambda: np.zeros(CELLS, dtype=int))
    expected: np.ndarray = field(default_factory=lambda: np.zeros(CELLS))
    pooled: int = 0
    first_seen: float | None = None
    planned_at: float = float("-inf")
    fallback: bool = False
    calibrating_from: float = float("inf")  # the first plan in force + L: jobs started since check the plans
    started: int = 0  # jobs started under a plan
    late: int = 0  # of which waited longer than the target
    forecast: float = 0.0  # late jobs the plans in force expected so far
    called_late: int = 0  # jobs whose deficit exceeded the buffer in force
    # Derived from the fields above, for speed (see _in_order); not fields, so what an older
    # farm kept still loads, and rebuilt when missing.
    _steps = None  # the samples by time: [times, the most jobs in the pool at each, the last]
    _k_seen = None  # the largest deficit counted so far (-1: none)
    _least = None  # _sure_steps' sliding least, for the steps it was made on

    @classmethod
    def new(cls, policy: Any, lead_s: float) -> "Forecaster":
        window = max(1.0, lead_s - policy.target_p95_s)
        on_demand = policy.target_p95_s >= lead_s
        return cls(window, lead_s, on_demand, (1 - policy.quantile) * policy.safety, policy.replan_s, policy.active_s,
                   policy.target_p95_s, policy.hold_s(lead_s))  # fmt: skip

    def follows(self, policy: Any) -> bool:
        """Whether this forecaster was made for the policy's wait target and budget: what it
        learned (deficits against the target's window) means nothing under other ones."""
        return (self.target_s, self.budget_share, self.replan_s, self.active_s) == (
            policy.target_p95_s, (1 - policy.quantile) * policy.safety, policy.replan_s, policy.active_s)  # fmt: skip

    # -- as a document (what the autoscaler keeps in Redis; see farm/autoscale/document.py) -

    def to_doc(self) -> dict[str, Any]:
        """What this forecaster learned as a JSON-able document: every field, the deques as
        lists, the arrays as {"dtype", "shape", "data"} (data flat, row-major). The derived
        `_steps` and `_k_seen` are left out: they are rebuilt from the fields."""
        n = doc_number
        doc: dict[str, Any] = {"schema": FORECASTER_SCHEMA}
        doc.update({name: n(getattr(self, name)) for name in _SCALARS})
        doc.update({name: bool(getattr(self, name)) for name in _FLAGS})
        doc.update({name: None if getattr(self, name) is None else n(getattr(self, name)) for name in _OPTIONAL})
        doc.update({name: int(getattr(self, name)) for name in _COUNTS})
        doc["planned_at"], doc["calibrating_from"] = n(self.planned_at), n(self.calibrating_from)
        doc["samples"] = [[n(t), n(k)] for t, k in self.samples]
        doc["pending"] = [[n(t), n(seen), int(c), int(place), int(planned), n(expected)]
                          for t, seen, c, place, planned, expected in self.pending]  # fmt: skip
        doc["history"] = [n(t) for t in self.history]
        doc["outcomes"] = [[int(late), n(expected)] for late, expected in self.outcomes]
        for name, (shape, dtype, _) in _ARRAYS.items():
            a = getattr(self, name)
            if a.shape != shape or not np.isfinite(a).all():
                raise UnkeepableMemory(f"forecaster.{name}: shape {a.shape} or values not finite")
            doc[name] = {"dtype": np.dtype(dtype).name, "shape": list(shape), "data": a.astype(dtype).ravel().tolist()}
        return doc

    @classmethod
    def from_doc(cls, doc: Any) -> "Forecaster":
        """The forecaster a document holds; MemoryDocError if it is of another schema version
        or does not read as this one (types, lengths, shapes, values out of range)."""
        d = read_object(doc, "forecaster", _DOC_FIELDS)
        if type(d["schema"]) is not int or d["schema"] != FORECASTER_SCHEMA:
            raise MemoryDocError(f"forecaster: schema {d['schema']!r:.40}, this farm reads schema {FORECASTER_SCHEMA}")
        kw: dict[str, Any] = {name: read_number(d[name], f"forecaster.{name}", lo=lo) for name, lo in _SCALARS.items()}
        kw.update({name: read_bool(d[name], f"forecaster.{name}") for name in _FLAGS})
        kw.update({name: None if d[name] is None else read_number(d[name], f"forecaster.{name}") for name in _OPTIONAL})
        kw.update({name: read_int(d[name], f"forecaster.{name}", lo=0) for name in _COUNTS})
        kw["planned_at"] = read_number(d["planned_at"], "forecaster.planned_at", infinite=True)
        kw["calibrating_from"] = read_number(d["calibrating_from"], "forecaster.calibrating_from", infinite=True)
        samples = deque()
        for i, s in enumerate(read_list(d["samples"], "forecaster.samples")):
            what = f"forecaster.samples[{i}]"
            t, k = read_list(s, what, length=2)
            samples.append((read_number(t, what), read_number(k, what, lo=0)))
        pending = deque()
        for i, p in enumerate(read_list(d["pending"], "forecaster.pending")):
            what = f"forecaster.pending[{i}]"
            t, seen, c, place, planned, expected = read_list(p, what, length=6)
            pending.append((read_number(t, what), read_number(seen, what), read_int(c, what, lo=0, hi=CELLS), read_int(place, what),
                            read_int(planned, what, lo=0), float(read_number(expected, what, lo=0))))  # fmt: skip
        history = deque(read_number(t, f"forecaster.history[{i}]") for i, t in enumerate(read_list(d["history"], "forecaster.history")))  # fmt: skip
        outcomes: deque = deque(maxlen=RECENT)
        for i, o in enumerate(read_list(d["outcomes"], "forecaster.outcomes", most=RECENT)):
            what = f"forecaster.outcomes[{i}]"
            late, expected = read_list(o, what, length=2)
            outcomes.append((read_int(late, what, lo=0, hi=2), float(read_number(expected, what, lo=0))))
        arrays = {name: _read_array(d[name], f"forecaster.{name}", *spec) for name, spec in _ARRAYS.items()}
        return cls(samples=samples, pending=pending, history=history, outcomes=outcomes, **arrays, **kw)

    def still_until(self, now: float) -> float:
        """While no event comes (nothing arrives, the jobs in the pool stay, the pool may be
        still or busy), the next time an observation would do more than add time to the
        cell it is in and a sample like the last: a new hour (for now or for now + L, the
        buffer's look-ahead), the pool turning active or quiet (an arrival entering or
        leaving (t - active_s, t - L], for t = now or now + L), a replan, or a pending
        deficit to count."""
        lead, hour = self.lead_s, 3600.0
        times = [(math.floor(now / hour) + 1) * hour, (math.floor((now + lead) / hour) + 1) * hour - lead,
                 self.planned_at + self.replan_s]  # fmt: skip
        history, n = self.history, len(self.history)
        for off in (lead, self.active_s, self.active_s - lead):
            # the earliest a + off after now (history is in time order; a + off rises with a)
            i = bisect.bisect_right(history, now - off)
            while i > 0 and history[i - 1] + off > now:
                i -= 1
            while i < n and history[i] + off <= now:
                i += 1
            if i < n:
                times.append(history[i] + off)
        if self.pending:
            times.append(self.pending[0][0] + self.target_s)
        return min((t for t in times if t > now), default=math.inf)

    def resume(self, now: float) -> "Forecaster":
        """Go on live at `now` after learning from a replay: what the replay imagined after
        now (the pool's path while its last jobs ran out) is dropped, the time until now is
        not counted as spent in any hour, and the next observation plans afresh."""
        while self.samples and self.samples[-1][0] > now:
            self.samples.pop()
        while self.pending and self.pending[-1][0] > now:
            self.pending.pop()
        self._steps = None
        self.seen_until = None
        self.planned_at = float("-inf")
        return self

    @property
    def jobs_seen(self) -> int:
        """Arrivals taken in: those whose deficit is counted and those still pending."""
        return int(self.hist.sum()) + len(self.pending)

    def _sure(self, t: float, times: np.ndarray, pools: np.ndarray) -> int:
        """Executors surely ready (or busy) by t + T without being asked for after t - W,
        W = L - T: those there at t - W and not drained up to t + T. An executor is there at u
        if the pool needed it within the hold before u (a drain waits that long), so this is
        the least, over u in [t - W, t + T], of the most jobs in the pool over (u - hold, u]."""
        lo, hi = t - self.window_s, t + self.target_s
        # The most over (u - hold, u] changes only where a sample enters or leaves the window.
        moves = np.concatenate([times, times + self.hold_s])
        at = np.concatenate([[lo], moves[(moves > lo) & (moves <= hi)]])
        start = np.searchsorted(times, at - self.hold_s, side="right") - 1
        end = np.searchsorted(times, at, side="right")
        return int(min((pools[max(i, 0) : j].max() if j > 0 else 0) for i, j in zip(start, end, strict=True)))

    def _settle(self, now: float) -> None:
        """Count the deficits of the arrivals at least T old: a job arriving at t waits longer
        than T iff its place in the pool, less the jobs that finished by t + T, exceeds the
        executors surely there by t + T plus the buffer (see the module's docstring)."""
        if not self.pending or self.pending[0][0] + self.target_s > now:
            return
        if self._in_order():
            self._settle_in_order(now)
            return
        # (out of time order: the way this was first written, kept as the reference)
        times = np.fromiter((s for s, _ in self.samples), float, len(self.samples))
        pools = np.fromiter((n for _, n in self.samples), float, len(self.samples))
        sure: dict[float, int] = {}
        while self.pending and self.pending[0][0] + self.target_s <= now:
            t, seen_at, c, place, planned, expected = self.pending.popleft()
            if t not in sure:
                sure[t] = self._sure(t, times, pools)
            # Jobs that left the pool between the arrival being seen and t + T: the pool then,
            # plus the arrivals seen after it up to t + T, less the pool at t + T.
            hi = t + self.target_s
            later = sum(1 for a, s, *_ in self.pending if s > seen_at and a <= hi)
            at = np.searchsorted(times, [seen_at, hi], side="right") - 1
            finished = max(0, int(pools[at[0]]) + later - int(pools[at[1]])) if hi > seen_at else 0
            k = min(max(0, place - finished - sure[t]), K_MAX)
            self.called_late += k > planned
            if t >= self.calibrating_from - self.lead_s:
                self.outcomes.append((1 if k > planned else 0, expected))
            self.hist[c, k] += 1
            if self._k_seen is not None:
                self._k_seen = max(self._k_seen, k)

    # `_settle_in_order` counts the same deficits as `_settle` above, in the same order,
    # without its cost per sample: a replay takes a sample per event, so at a million jobs a
    # day a pool holds thousands of samples, most of them sharing a second, and the way above
    # built arrays of them all per settle, sliced them once per move of the window and
    # scanned the pending arrivals once per arrival (cProfile: 90 % of such a replay). It
    # needs the samples and the pending arrivals in time order, as the autoscaler and the
    # simulator give them (out of order, the way above is taken). Samples at the same time
    # are kept as one step, the most and the last jobs in the pool then: all that `_sure`
    # and `finished` can see of them.

    def _in_order(self) -> bool:
        """Whether the samples and the pending arrivals are in time order: the steps are kept
        while they are (observe), or rebuilt here."""
        if self._steps is not None:
            return True
        times = [s for s, _ in self.samples]
        arrived = [a for a, *_ in self.pending]
        seen = [s for _, s, *_ in self.pending]
        if any(b < a for seq in (times, arrived, seen) for a, b in zip(seq, seq[1:], strict=False)):
            return False
        steps: list[list[float]] = [[], [], []]  # time, the most jobs in the pool then, the last
        for s, n in self.samples:
            self._step(steps, s, n)
        self._steps = steps
        return True

    @staticmethod
    def _step(steps: list[list[float]], now: float, in_pool: float) -> None:
        at, most, last = steps
        n = float(in_pool)
        if at and at[-1] == now:
            if n > most[-1]:
                most[-1] = n
            last[-1] = n
        else:
            at.append(now)
            most.append(n)
            last.append(n)

    def _over(self, u: float) -> float:
        """On the steps: the most jobs in the pool over (u - hold, u] (0 before any step)."""
        at, most, last = self._steps
        upto = bisect.bisect_right(at, u) - 1  # the last step at or before u
        if upto < 0:
            return 0.0
        since = bisect.bisect_right(at, u - self.hold_s) - 1  # ... at or before u - hold
        top = max(most[since + 1 : upto + 1], default=-math.inf)
        return max(last[since], top) if since >= 0 else top

    def _moves(self, after: float, upto: float) -> Any:
        """The times in (after, upto] where `_over` can change, ascending: a step's time and a
        step's time + hold."""
        at, hold = self._steps[0], self.hold_s
        n = len(at)
        i = bisect.bisect_right(at, after)
        j = bisect.bisect_right(at, after - hold)
        while j > 0 and at[j - 1] + hold > after:  # (as the sums compare, not the differences)
            j -= 1
        while j < n and at[j] + hold <= after:
            j += 1
        while True:
            a = at[i] if i < n and at[i] <= upto else math.inf
            b = at[j] + hold if j < n and at[j] + hold <= upto else math.inf
            if a == b == math.inf:
                return
            if a <= b:
                i += 1
                j += a == b
                yield a
            else:
                j += 1
                yield b

    def _sure_steps(self, t: float) -> int:
        """`_sure` on the steps: the least, over u in [t - W, t + T], of `_over(u)`, which
        changes only at the `_moves`. A sliding least: each move is valued once, as the
        window reaches it, and kept while it can still be the least (t grows from one call
        to the next while the steps stay in order; only the last step can still change)."""
        steps = self._steps
        lo, hi = t - self.window_s, t + self.target_s
        w = self._least
        if w is None or w[0] is not steps or lo < w[1]:
            w = self._least = [steps, lo, -math.inf, deque()]  # the steps, lo, valued up to, (move, value) kept
        w[1] = lo
        kept, final = w[3], steps[0][-1]
        for u in self._moves(w[2], hi):
            if u >= final:
                break
            v = self._over(u)
            while kept and kept[-1][1] >= v:
                kept.pop()
            kept.append((u, v))
            w[2] = u
        while kept and kept[0][0] <= lo:
            kept.popleft()
        least = self._over(lo)
        if kept and kept[0][1] < least:
            least = kept[0][1]
        for u in self._moves(max(w[2], lo), hi):  # at or after the last step: valued afresh
            least = min(least, self._over(u))
        return int(least)

    def _settle_in_order(self, now: float) -> None:
        """`_settle` for samples and arrivals in time order (the same deficits, in the same
        order)."""
        at, _, last = self._steps
        k_seen = self._largest_k()
        sure: dict[float, int] = {}
        # The jobs finished by t + T, by (t, when seen): a burst's arrivals share both, and
        # popping one of them takes one from each count below, so the difference holds.
        finished_by: dict[tuple[float, float], int] = {}
        pending, target = self.pending, self.target_s
        while pending and pending[0][0] + target <= now:
            t, seen_at, c, place, planned, expected = pending.popleft()
            if t not in sure:
                sure[t] = self._sure_steps(t)
            finished = finished_by.get((t, seen_at))
            if finished is None:
                hi = t + target
                if hi > seen_at:
                    # the arrivals seen after this one up to t + T (pending is in time order)
                    later = max(0, bisect.bisect_right(pending, hi, key=_ARRIVED) - bisect.bisect_right(pending, seen_at, key=_SEEN))
                    then, after = last[bisect.bisect_right(at, seen_at) - 1], last[bisect.bisect_right(at, hi) - 1]
                    finished = max(0, int(then) + later - int(after))
                else:
                    finished = 0
                finished_by[(t, seen_at)] = finished
            k = min(max(0, place - finished - sure[t]), K_MAX)
            self.called_late += k > planned
            if t >= self.calibrating_from - self.lead_s:
                self.outcomes.append((1 if k > planned else 0, expected))
            self.hist[c, k] += 1
            if k > k_seen:
                k_seen = k
        self._k_seen = k_seen

    def observe(self, arrivals: tuple[float, ...], now: float, in_pool: int, waits: tuple[float, ...] = ()) -> "Forecaster":
        """Take in one decision's worth: the arrivals since the last one, the jobs now in the
        pool (queued + running, the arrivals included) and the waits of the jobs started."""
        if now >= self.calibrating_from:
            self.started += len(waits)
            self.late += sum(1 for w in waits if w > self.target_s)
        if self.seen_until is not None and now > self.seen_until:
            self.exposure[cell(now, self._active_at(now))] += now - self.seen_until
        self.seen_until = now
        steps = self._steps
        if steps is not None:  # still in time order? (the last sample's time is the latest seen_at)
            ordered = not steps[0] or now >= steps[0][-1]
            if arrivals and ordered:
                prev = self.pending[-1][0] if self.pending else arrivals[0]
                for t in arrivals:
                    ordered = ordered and t >= prev
                    prev = t
            if not ordered:
                self._steps = steps = None
        m = len(arrivals)
        history, pending, warming = self.history, self.pending, self.warming_up
        last_t = None
        for j, t in enumerate(arrivals):
            if t != last_t:  # a burst's arrivals share their second: its cell, plan and forecast
                last_t = t
                if self.first_seen is None:
                    self.first_seen = t
                while history and history[0] <= t - self.active_s:
                    history.popleft()
                c = cell(t, self._active_at(t))
                expected = 0.0 if warming else float(self.expected[c])  # a warm-up buffer is no forecast
                planned = self._planned(c)
            history.append(t)
            pending.append((t, now, c, in_pool - (m - 1 - j), planned, expected))
            self.forecast += expected
        self.samples.append((now, in_pool))
        if steps is not None:
            self._step(steps, now, in_pool)
        self._settle(now)
        oldest = min(self.pending[0][0], now - self.target_s) if self.pending else now - self.target_s
        cutoff = oldest - self.window_s - self.hold_s
        while len(self.samples) > 1 and self.samples[1][0] <= cutoff:
            self.samples.popleft()
        steps = self._steps  # (_settle may have rebuilt them)
        if steps is not None and steps[0][0] <= cutoff:
            # as the samples: the steps before the last at or before cutoff go, and of that
            # one only its last sample is left
            at, most, last = steps
            i = bisect.bisect_right(at, cutoff) - 1
            if i:
                del at[:i], most[:i], last[:i]
            most[0] = last[0]
        if now - self.planned_at >= self.replan_s:
            self._replan(now)
        return self

    def _active_at(self, t: float) -> bool:
        """Whether the pool counts as active at time t: a job arrived in (t - active_s, t - L].
        Lagging by the lead time L makes the state at t known at t - L, in time to have the
        state's buffer booted by t."""
        i = bisect.bisect_right(self.history, t - self.lead_s)  # history is in time order
        return i > 0 and self.history[i - 1] > t - self.active_s

    @property
    def warming_up(self) -> bool:
        return self.calibrating_from == float("inf")

    def _warmup_buffer(self) -> int:
        """Before a day of history, the largest deficit seen: cover the widest fan-out so far."""
        return max(self._largest_k(), 0)

    def _largest_k(self) -> int:
        """The largest deficit counted so far, -1 for none (kept by the settles)."""
        if self._k_seen is None:
            seen = np.flatnonzero(self.hist.sum(axis=0))
            self._k_seen = int(seen[-1]) if len(seen) else -1
        return self._k_seen

    def _planned(self, c: int) -> int:
        if self.warming_up:
            return self._warmup_buffer()
        return self.pooled if self.fallback else int(self.buffers[c])

    def _replan(self, now: float) -> None:
        self.planned_at = now
        total = self.hist.sum()
        if total == 0:
            return
        if self.warming_up and self.exposure.sum() >= WARMUP_S:
            # The first plan in force. Jobs that arrived before it are nobody's forecast: a job
            # started once its capacity is booted arrived under it.
            self.calibrating_from = now + self.lead_s
        budget = self.budget_share * total
        # The deficits above the largest counted are none: every array below keeps only the
        # columns up to it, the same numbers in fewer (a sparse pool of long builds replans
        # every hour of years, and its deficits stay small). Only the float sums of the
        # week run on its full width, so that they add in the same order.
        width = max(self._largest_k(), 0) + 2
        hist = self.hist[:, :width] if width < self.hist.shape[1] else self.hist
        pooled_hist = hist.sum(axis=0)
        # The pooled buffer: the smallest b with the pooled late share within budget.
        late = _late(pooled_hist[None, :])[0]
        self.pooled = int(np.argmax(late <= budget))
        # Plan a coming week. The budget is corrected by how the plans so far fared: jobs that
        # waited longer than the target against the late jobs those plans expected (a plan
        # picks the cells that looked quiet, and some of them were only lucky).
        week = expected_week(hist, self.exposure, PRIOR_S)
        full = week
        if week.shape[1] < self.hist.shape[1]:
            full = np.zeros(self.hist.shape)
            full[:, : week.shape[1]] = week
        # ... or by how the recent jobs' plans fared, when that is worse: a week busier than
        # the weeks before (a release) is met within the week, not diluted by them.
        recent_late, recent_expected = sum(map(_LATE, self.outcomes)), sum(map(_EXPECTED, self.outcomes))
        ratio = max((self.late + CALIBRATION_PRIOR) / (self.forecast + CALIBRATION_PRIOR),
                    (recent_late + CALIBRATION_PRIOR) / (recent_expected + CALIBRATION_PRIOR))  # fmt: skip
        ratio = min(max(ratio, 0.5), 4.0)
        self.buffers = plan(week, week_exposure(self.exposure, PRIOR_S), self.budget_share * full.sum() / ratio)
        counts = full.sum(axis=1)
        late_cells = _late(week)[np.arange(CELLS), self.buffers]
        self.expected = np.divide(late_cells, counts, out=np.zeros(CELLS), where=counts > 0)
        # Forecast error: recent jobs the plan made late against what it expected for them.
        seen, wanted = recent_late, recent_expected
        self.fallback = len(self.outcomes) >= RECENT and seen > 3 * wanted + self.budget_share * RECENT

    def buffer(self, now: float) -> tuple[int, str]:
        if self.on_demand:
            return 0, "no buffer: a new executor boots within the wait target"
        if self.warming_up:
            b = self._warmup_buffer()
            return b, f"buffer {b}: the largest deficit seen, until a day of history"
        if self.fallback:
            return self.pooled, f"fallback buffer {self.pooled} (recent jobs beyond the plan)"
        active, active_next = self._active_at(now), self._active_at(now + self.lead_s)
        c, c_next = cell(now, active), cell(now + self.lead_s, active_next)
        b = max(int(self.buffers[c]), int(self.buffers[c_next]))
        state = "active" if active or active_next else "quiet"
        return b, f"buffer {b} planned for hour-of-week {c // 2} ({state})"
