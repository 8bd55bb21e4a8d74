"""The live autoscaler: observe → decide → act, every `interval_s`, for each pool that has a
capacity policy.

    observe  the pool's queue and executors (farm.store.summary), the arrivals and starts
             since the last turn (the pool's demand stream, written by enqueue and claim),
             what became of the executors asked for: an `Observation`, read and nothing more
    decide   farm.autoscale.policy.decide: the very function `farm simulate` replays
    act      first on what was observed (`take_in`: the demand into the pool's history,
             the lead time of those that came up, the end of those that could not start),
             then on the decision: start executor actors, or drain idle ones (stop
             claiming, finish the current job if one slipped in, exit); record the
             decision in Redis

A drain only ever goes to an executor the registry showed idle, and draining is graceful: if
it claimed a job in between, it finishes that job before it exits. So a scale-down never
kills a running job. Pools without a policy are left alone (`farm up --executors N` sizes
the default pool then).

The policy comes from Redis (set through `PUT /v1/pools/{name}/policy`); a pool with none
stored is seeded from `farm.yaml` once, a write of its own before the policy is loaded. A
new version takes effect on the next turn; what a policy learned is kept while its kind
stays the same. The provisioning lead time is measured: from asking for an executor to its
first report as ready; it is kept with what the policy learned, so a restart decides with it.
Demand is what executors could start: queued jobs of a concurrency group beyond its free
slots are left out (`held`, farm.store.summary), and the reason says how many.

Every pool's demand, with a policy or not, is kept by hour for `history_weeks`
(farm.store.history). A pool switched to the predictive policy (or given a new wait target,
or seeded from a trace with `farm policy seed`) learns from that history before it scales
on its own: the replay runs on a thread, and the pool's decision in the turn that starts it
waits for it up to `learn_wait_s` (after the other pools have decided), so the next decision
uses it; a longer replay goes on beside the turns, the policy deciding as before meanwhile,
and the decisions' reasons say so.

`Autoscaler.run_once()` is one turn (tests step it); `autoscaler_actor()` is the Ray actor
that loops it. I/O goes through the store classes and a `Fleet` (farm.ray_seam: `RayFleet`,
or `StubFleet` in tests); the sizing is pure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import TypeAdapter, ValidationError

from farm.actors import executor_actor
from farm.autoscale.demand import WEEK_HOURS, Hour, hour_of
from farm.autoscale.policy import LivePolicy, Memory, MemoryDocError, Snapshot, UnkeepableMemory, decide
from farm.errors import FarmError
from farm.models import rfc3339
from farm.ray_seam import AUTOSCALER_NAME, Fleet, RayFleet, actor_class, actor_settings, restarted
from farm.ray_seam import executor_name as executor_name  # where tests and tools found it first
from farm.settings import RAY_NAMESPACE, Settings
from farm.sim.history import learn, to_trace
from farm.store.demand import Demand, DemandStream
from farm.store.executors import ExecutorRegistry, ExecutorState
from farm.store.history import DemandHistory
from farm.store.jobs import JobStore
from farm.store.learned import LearnedBook
from farm.store.nodes import count_restart
from farm.store.policies import PolicyStore, StoredPolicy
from farm.store.summary import held, summarize

log = logging.getLogger("farm.autoscaler")

_POLICY: TypeAdapter = TypeAdapter(LivePolicy)
RECORD_EVERY_S = 60.0  # a decision that changes nothing is still recorded this often
LEAD_FIELD = "lead_s"  # the measured lead time, in the pool's learned document beside the policy's memory


@dataclass
class _Pool:
    name: str
    version: int = -1
    policy: Any = None
    memory: Any = None
    cursor: str | None = None  # last demand-stream id read
    launched: dict[str, float] = field(default_factory=dict)  # asked for, not yet ready: id -> when
    idle_since: dict[str, float] = field(default_factory=dict)
    lead_s: float | None = None  # measured provisioning lead time (EWMA)
    kept_lead: float | None = None  # the lead time as last kept in Redis
    recorded: tuple[Any, ...] = ()
    recorded_at: float = 0.0
    kept_at: float = 0.0  # when the policy's memory was last written to Redis
    failed_starts: int = 0  # executors in a row that could not start
    hold_starts_until: float = 0.0  # no new executors before this (backing off failed starts)
    hour: tuple[int, Hour] | None = None  # the latest hour of demand history written, as written
    trimmed_at: float = 0.0
    seeded: int = -1  # the policy's seed count last seen (-1: not read yet)
    wants_history: bool = False  # the policy should learn from the demand history
    learning: Future | None = None  # that replay, running
    learning_seeded: int = -1  # the seed count it started with
    learning_since: float = 0.0


@dataclass(frozen=True)
class Launch:
    """An executor asked for that came up (`failure` None) or could not start (why)."""

    executor_id: str
    failure: str | None = None


@dataclass(frozen=True)
class Observation:
    """What a turn saw of a pool, nothing done about it yet (`Autoscaler.take_in` does)."""

    snapshot: Snapshot  # what the policy decides on
    demand: Demand  # read from the pool's demand stream since the last turn
    launches: tuple[Launch, ...]  # executors asked for that came up or could not start, in the order asked
    lead_s: float | None  # the measured lead time, the ones that came up counted in
    idle_since: Mapping[str, float]  # the idle executors, since when


class Autoscaler:
    def __init__(
        self, settings: Settings, *, store: JobStore, registry: ExecutorRegistry, policies: PolicyStore, fleet: Fleet,
        clock: Any = time.time,
    ) -> None:  # fmt: skip
        self.settings, self.store, self.registry, self.policies, self.fleet = settings, store, registry, policies, fleet
        self.clock = clock
        self.pools = {name: _Pool(name) for name in settings.pools}
        self.learned = LearnedBook(store.client, store.keys)
        self.demand = DemandStream(store.client, store.keys)
        self.history = DemandHistory(store.client, store.keys)
        self._learner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="farm-learn")

    # -- the policy in force ---------------------------------------------------------------

    def _stored_policy(self, p: _Pool) -> StoredPolicy:
        """The pool's policy as stored. A pool with none stored and one in farm.yaml is
        seeded from it first: the one write here, done before the policy is loaded, once
        (a stored policy is never replaced by farm.yaml's)."""
        stored = self.policies.get(p.name)
        if stored.policy is None and p.name in self.settings.policies:
            self.policies.seed({p.name: self.settings.policies[p.name]})
            stored = self.policies.get(p.name)
        return stored

    def _load_policy(self, p: _Pool, stored: StoredPolicy) -> bool:
        """Take in the stored policy (what it learned too, when it is new); whether the pool
        has one. Reads what its policy had learned; writes nothing."""
        if stored.seeded != p.seeded:
            p.wants_history = p.wants_history or p.seeded >= 0  # seeded since the last turn: learn again
            p.seeded = stored.seeded
        if stored.version == p.version:
            return p.policy is not None
        try:
            policy = _POLICY.validate_python(stored.policy) if stored.policy is not None else None
        except ValidationError as e:  # stored by an older farm: keep the last good one
            log.error("pool %s: policy version %d is invalid, keeping the previous one: %s", p.name, stored.version, e)
            return p.policy is not None
        if p.policy is None and policy is not None:
            p.memory = self._learned(p, policy.kind)  # a restarted autoscaler resumes
            fresh = p.memory is None
        elif policy is None or policy.kind != p.policy.kind or policy.kind != "predictive":
            # What one kind learned means nothing to another; and a new version of a kind
            # whose memory only follows its parameters (scheduled windows, scale-up and
            # scale-down clocks) starts that memory afresh. The predictive kind keeps the
            # demand it learned across versions.
            p.memory = None
            fresh = True
        else:  # a new predictive version: what it learned holds unless its target or budget moved
            own = p.memory.own if p.memory is not None else None
            fresh = own is None or not own.follows(policy)
        if policy is not None and policy.kind == "predictive" and fresh:
            p.wants_history = True
        p.version, p.policy = stored.version, policy
        log.info("pool %s: policy version %d (%s)", p.name, p.version, policy.kind if policy else "none")
        return policy is not None

    def _learned(self, p: _Pool, kind: str) -> Any:
        """What this pool's policy had learned when it was last kept, if of this kind; and the
        lead time measured then (whatever the kind: it is the pool's, not the policy's),
        unless one was measured since. It is kept as a JSON document (Memory.to_doc, with
        `lead_s` beside it), never a pickle: reading it runs no code. A document this farm
        cannot take (another schema version, malformed, a pickle an older farm kept) is
        dropped, and the policy starts learning afresh."""
        try:
            doc = self.learned.get(p.name)
            if doc is None:
                return None
            lead = doc.pop(LEAD_FIELD, None)
            if p.lead_s is None and type(lead) in (int, float) and 0 <= lead < float("inf"):
                p.lead_s = p.kept_lead = float(lead)
            if doc.get("kind", kind) != kind:
                return None  # what another kind learned
            return Memory.from_doc(doc, kind)
        except (MemoryDocError, ValueError) as e:  # ValueError: a bug in reading one, dropped all the same
            log.warning("pool %s: kept policy memory unreadable, starting afresh: %s", p.name, e)
            return None

    def _keep(self, p: _Pool, now: float) -> None:
        """Keep what the policy learned, with the measured lead time, every keep_learned_s;
        at once when the lead was first measured or moved by a fifth since it was kept (so a
        restart decides with the lead measured before it, not the assumed one)."""
        lead_moved = p.lead_s is not None and (p.kept_lead is None or abs(p.lead_s - p.kept_lead) > 0.2 * max(p.kept_lead, 1.0))
        if p.memory is None or (now - p.kept_at < self.settings.autoscaler.keep_learned_s and not lead_moved):
            return
        try:
            doc = p.memory.to_doc(p.policy.kind)
        except (UnkeepableMemory, TypeError, ValueError):  # a bug: the pool scales on, its restart starts afresh
            log.exception("pool %s: policy memory not kept", p.name)
        else:
            if p.lead_s is not None:
                doc[LEAD_FIELD] = round(p.lead_s, 3)
            self.learned.put(p.name, doc)
        p.kept_at, p.kept_lead = now, p.lead_s

    # -- observe -----------------------------------------------------------------------------

    def observe(self, p: _Pool, now: float) -> Observation:
        """What the pool looks like now: its demand since the last turn, its queue, its
        executors and what became of those asked for. Reads only: it changes nothing, in
        Redis, in Ray or in `p` (`take_in` does, with what it returns)."""
        got = self.demand.since(p.name, p.cursor)
        summary = summarize(self.store, self.registry, [p.name])[0]
        stuck = held(self.store, p.name) if summary.queued else 0  # a full group's jobs: no executor starts them
        executors = self.registry.list(p.name)
        seen = {e.id: e.state for e in executors}
        failure = summary.last_start_failure
        launches = []
        lead_s = p.lead_s
        for executor_id, asked in p.launched.items():
            state = seen.get(executor_id)
            if state in (ExecutorState.IDLE, ExecutorState.BUSY):
                lead = max(0.0, now - asked)
                lead_s = lead if lead_s is None else 0.8 * lead_s + 0.2 * lead
                launches.append(Launch(executor_id))
            elif state is None and failure and failure["executor"] == executor_id:
                launches.append(Launch(executor_id, failure=failure["reason"]))
            elif state is None and now - asked > self.settings.autoscaler.start_timeout_s:
                launches.append(Launch(executor_id, failure=f"not ready within {now - asked:.0f} s"))
        settled = {launch.executor_id for launch in launches}
        idle = [e.id for e in executors if e.state is ExecutorState.IDLE]
        idle_since = {i: p.idle_since.get(i, now) for i in idle}
        starting = sum(1 for e in executors if e.state is ExecutorState.STARTING)
        starting += sum(1 for i in p.launched if i not in seen and i not in settled)
        busy = sum(1 for e in executors if e.state is ExecutorState.BUSY)
        ages = sorted((now - since for since in idle_since.values()), reverse=True)
        snapshot = Snapshot(
            queued=summary.queued - stuck, running=max(busy, summary.running), starting=starting, idle=len(idle),
            idle_ages_s=tuple(ages), arrivals=got.arrivals, waits=got.waits,
            lead_s=lead_s if lead_s is not None else self.settings.autoscaler.lead_s, memory=p.memory, held=stuck,
        )  # fmt: skip
        return Observation(snapshot, got, tuple(launches), lead_s, idle_since)

    # -- act on what was observed ------------------------------------------------------------

    def take_in(self, p: _Pool, seen: Observation, now: float) -> None:
        """The turn's first acts, on what `observe` saw, before it decides: move past the
        demand it read (into the pool's demand history), take the executors that came up as
        ready (their lead time measured), and end the ones that could not start."""
        self._keep_demand(p, seen.demand, now)
        for launch in seen.launches:
            if launch.failure is None:
                del p.launched[launch.executor_id]
                p.failed_starts = 0
            else:
                self._start_failed(p, launch.executor_id, now, launch.failure)
        p.lead_s = seen.lead_s
        p.idle_since = dict(seen.idle_since)

    def _keep_demand(self, p: _Pool, got: Demand, now: float) -> None:
        """Read past a turn's demand; the demand history takes it in."""
        p.cursor = got.cursor
        self._keep_history(p, got, now)

    def _keep_history(self, p: _Pool, got: Demand, now: float) -> None:
        """Add a turn's arrivals (to their hours) and attempts' ends (to this hour) to the
        pool's demand history; once an hour, drop what is older than history_weeks."""
        if got.arrivals or got.durations:
            new: dict[int, Hour] = {}
            for t in got.arrivals:
                new.setdefault(hour_of(t), Hour()).arrive(t)
            for d in got.durations:
                new.setdefault(hour_of(now), Hour()).ended(d)
            merged = {}
            for h, hour in new.items():
                base = p.hour[1] if p.hour is not None and p.hour[0] == h else (self.history.get(p.name, h) or Hour())
                merged[h] = base.merge(hour)
            latest = max(merged)
            if p.hour is None or latest >= p.hour[0]:
                p.hour = (latest, merged[latest])
            self.history.put(p.name, merged)
        if now - p.trimmed_at >= 3600:
            self.history.trim(p.name, hour_of(now) - self.settings.autoscaler.history_weeks * WEEK_HOURS)
            p.trimmed_at = now

    def _start_learning(self, p: _Pool, lead_s: float) -> bool:
        """Start learning the predictive policy's forecaster from the pool's demand history
        when it is wanted (a switch to the policy, a new target, a seed), on the learner's
        thread; whether it started (the turn then waits for it up to learn_wait_s, so a seed
        takes effect on the pool's next decision)."""
        if p.learning is not None or not p.wants_history:
            return False
        p.wants_history = False
        if p.policy.kind != "predictive":
            return False
        p.learning_seeded, p.learning_since = p.seeded, self.clock()
        p.learning = self._learner.submit(self._learn_history, p.name, p.policy, lead_s)
        return True

    def _learning(self, p: _Pool) -> str:
        """A replay learned: its outcome replaces the memory, if it still follows the policy
        and no seed came meanwhile (else it is learned again). What a decision's reason must
        add while it is under way (else "")."""
        if p.learning is None:
            return ""
        if not p.learning.done():
            return f"; learning from the demand history ({self.clock() - p.learning_since:.0f} s so far): until then as before"
        done, p.learning = p.learning, None
        try:
            own = done.result()
        except Exception:  # noqa: BLE001 - a bug: the policy goes on learning live
            log.exception("pool %s: learning from the demand history failed", p.name)
            return ""
        if own is None:
            return ""  # no history yet: it learns live
        if p.policy.kind == "predictive" and own.follows(p.policy) and p.learning_seeded == p.seeded:
            p.memory = Memory(own=own.resume(self.clock()))
            p.kept_at = 0.0  # keep it at once: a restart resumes from it
            log.info("pool %s: the predictive policy learned %d jobs of demand history", p.name, own.jobs_seen)
        else:
            p.wants_history = p.wants_history or p.policy.kind == "predictive"
        return ""

    def _learn_history(self, pool: str, policy: Any, lead_s: float) -> Any:
        """On the learner's thread: read the pool's demand history (eight weeks of a busy pool
        is megabytes: not on the turn) and replay it through the policy; None if it is empty."""
        trace = to_trace(pool, self.history.hours(pool))
        if trace is None:
            return None
        log.info("pool %s: learning from %d jobs of demand history", pool, len(trace))
        return learn(trace, policy, lead_s)

    def _start_failed(self, p: _Pool, executor_id: str, now: float, reason: str) -> None:
        """Forget an executor that could not start, end its actor, and hold off new starts
        (doubling, up to start_timeout_s) so a broken runtime is not retried every turn."""
        del p.launched[executor_id]
        self.fleet.kill([executor_id])
        p.failed_starts += 1
        backoff = min(self.settings.autoscaler.start_timeout_s, self.settings.autoscaler.interval_s * 2**p.failed_starts)
        p.hold_starts_until = now + backoff
        log.warning("pool %s: executor %s could not start (%s); next start in %.0f s", p.name, executor_id, reason, backoff)

    # -- one turn ----------------------------------------------------------------------------

    def run_once(self) -> dict[str, dict[str, Any]]:
        """One observe → decide → act turn over every pool; returns what each pool decided.
        A pool that starts learning from its history this turn decides last, after waiting
        for the replay up to learn_wait_s: the other pools' decisions do not wait for it."""
        self.fleet.reap()
        out: dict[str, dict[str, Any]] = {}
        learning: list[tuple[_Pool, float, Observation]] = []
        for p in self.pools.values():
            with self._guarded(p):
                if not self._load_policy(p, self._stored_policy(p)):
                    now = self.clock()
                    self._keep_demand(p, self.demand.since(p.name, p.cursor), now)  # its history is kept all the same
                    continue
                now, seen = self._observed(p)
                if self._start_learning(p, seen.snapshot.lead_s):
                    learning.append((p, now, seen))
                    continue
                out[p.name] = self._turn(p, now, seen)
        if learning:
            # The cluster hears now what the decided pools want, the learning ones at their
            # last desired (each request replaces the last), not after the wait.
            self.fleet.request({**{p.name: p.recorded[0] if p.recorded else seen.snapshot.current for p, _, seen in learning},
                                **{pool: d["desired"] for pool, d in out.items()}})  # fmt: skip
            wait([p.learning for p, _, _ in learning], timeout=self.settings.autoscaler.learn_wait_s)
            for p, now, seen in learning:
                with self._guarded(p):
                    out[p.name] = self._turn(p, now, seen)
        if out:
            self.fleet.request({pool: d["desired"] for pool, d in out.items()})
        return out

    @contextmanager
    def _guarded(self, p: _Pool) -> Iterator[None]:
        """One pool's part of a turn: its failure is logged and recorded, and the other pools
        go on."""
        try:
            yield
        except FarmError as e:
            log.warning("pool %s: autoscaler turn skipped: %s", p.name, e)
        except Exception as e:  # noqa: BLE001 - one pool's failure must not stop the others
            log.exception("pool %s: autoscaler turn failed", p.name)
            self._failed(p, e)

    def _failed(self, p: _Pool, e: Exception) -> None:
        """A pool whose turn raised: counted (farm_autoscaler_errors_total) and recorded as
        its decision, so /decisions and the dashboard say why it stopped scaling."""
        try:
            now = self.clock()
            self.policies.count_failed_turn(p.name)
            self.policies.record_decision(p.name, {
                "at": rfc3339(int(now * 1000)), "policy": p.policy.kind if p.policy else None, "version": p.version,
                "reason": "the turn failed; this pool keeps its executors until a turn succeeds",
                "error": f"{type(e).__name__}: {str(e)[:300]}",
            })  # fmt: skip
        except FarmError:
            log.warning("pool %s: could not record the failed turn", p.name)

    def _observed(self, p: _Pool) -> tuple[float, Observation]:
        now = self.clock()
        seen = self.observe(p, now)
        self.take_in(p, seen, now)
        return now, seen

    def _turn(self, p: _Pool, now: float, seen: Observation) -> dict[str, Any]:
        snap = seen.snapshot
        learning = self._learning(p)
        snap = replace(snap, memory=p.memory)
        d = decide(snap, p.policy, now=now)
        p.memory = d.memory
        self._keep(p, now)
        reason = d.reason + learning
        if d.to_start and now < p.hold_starts_until:
            reason += f"; starts held {p.hold_starts_until - now:.0f} s more: {p.failed_starts} executor(s) in a row could not start"
            started = []
        else:
            started = self.fleet.start(p.name, d.to_start) if d.to_start else []
        asked = self.clock()  # (a learning pool decides on what it saw before the wait: its lead counts from the ask)
        for executor_id in started:
            p.launched[executor_id] = asked
        drained: list[str] = []
        if d.to_drain:
            longest_idle = sorted(p.idle_since, key=p.idle_since.__getitem__)
            drained = longest_idle[: d.to_drain]
            self.fleet.drain(drained)
            for executor_id in drained:
                p.idle_since.pop(executor_id, None)
        record = {
            "at": rfc3339(int(now * 1000)), "policy": p.policy.kind, "version": p.version,
            "inputs": {"queued": snap.queued, "held": snap.held, "running": snap.running, "starting": snap.starting,
                       "idle": snap.idle, "arrivals": len(snap.arrivals), "lead_s": round(snap.lead_s, 2)},
            "current": snap.current, "desired": d.desired, "reason": reason, "started": started, "drained": drained,
        }  # fmt: skip
        action = "scale_up" if started else ("scale_down" if drained else "hold")
        self.policies.count_turn(p.name, p.policy.kind, action, desired=d.desired, low=p.policy.min, high=p.policy.max)
        changed = (d.desired, snap.current, p.version) != p.recorded
        if started or drained or changed or now - p.recorded_at >= RECORD_EVERY_S:
            self.policies.record_decision(p.name, record)
            p.recorded, p.recorded_at = (d.desired, snap.current, p.version), now
        return record

    def close(self) -> None:
        """Stop learning (a replay under way is left to finish on its own, unread)."""
        self._learner.shutdown(wait=False, cancel_futures=True)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - one bad turn must not stop scaling
                log.exception("autoscaler turn failed")
            stop.wait(self.settings.autoscaler.interval_s)


def build_autoscaler(settings: Settings) -> Autoscaler:
    from farm.store.client import connect

    client = connect(settings.redis_url or "")
    return Autoscaler(
        settings, store=JobStore(client), registry=ExecutorRegistry(client), policies=PolicyStore(client),
        fleet=RayFleet(settings, executor_actor),
    )  # fmt: skip


class AutoscalerActor:
    """The autoscaler as a Ray actor (`autoscaler_actor()` is its actor class): its turns on
    a thread, every `interval_s`."""

    def __init__(self, settings: dict) -> None:  # type: ignore[type-arg]
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        self.autoscaler = build_autoscaler(Settings.load(**settings))
        if restarted():
            count_restart(self.autoscaler.store, "autoscaler")
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.autoscaler.run, args=(self.stop_event,), daemon=True)
        self.thread.start()

    def stop(self) -> list[str]:
        """Stop deciding; the executors it asked for that are not ready yet (the ready
        ones are in the registry: whoever stops farm drains them, or a new autoscaler
        adopts them)."""
        self.stop_event.set()
        self.thread.join(10)
        self.autoscaler.close()
        return [i for p in self.autoscaler.pools.values() for i in p.launched]


autoscaler_actor = actor_class(AutoscalerActor, num_cpus=0, max_concurrency=2, max_restarts=-1)


def start_autoscaler(settings: Settings, *, detached: bool = False) -> Any:
    """The farm's autoscaler actor, started. `detached` (a cluster's `farm autoscaler`): it
    outlives this process, and one already running is taken as it is."""
    options: dict[str, Any] = {"lifetime": "detached", "get_if_exists": True} if detached else {}
    return autoscaler_actor().options(name=AUTOSCALER_NAME, namespace=RAY_NAMESPACE, **options).remote(actor_settings(settings))
