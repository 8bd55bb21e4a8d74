"""Prometheus metrics, all in this module, on an injected CollectorRegistry.

Values are read from Redis at scrape time (the stats hashes kept by the Lua scripts, the
queue and the executor registry), so every API replica reports the same farm-wide numbers
and nothing is lost when a process restarts. Seconds, `_total` counters, labels bounded by
the configured pools and fixed outcome/state sets.

Every series a dashboard panel reads exists from the first scrape: each counter with each of
its known label values (0 until something happens, as Prometheus advises for counters with
known labels), the decisions of each pool's current policy kind for every action, and the
executor target of pools without a policy (their configured static executor count).

A run counts in one pool, its first job's: farm_runs_* are by pool and add up to the farm's.
Each pool's wait target (farm_pool_wait_target_seconds) is what FarmQueueWaitHigh holds its
p95 queue wait to: the policy's target_p95_s where its kind has one, else a default
(settings autoscaler.wait_target_s).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import TypeAdapter, ValidationError

from farm.autoscale.kinds import LivePolicy
from farm.errors import FarmError
from farm.models import TERMINAL
from farm.settings import DEFAULT_WAIT_TARGET_S
from farm.store.executors import ExecutorRegistry
from farm.store.health import degraded
from farm.store.jobs import JobStore
from farm.store.nodes import RESTARTED, NodeBook
from farm.store.scrape import StatsBook
from farm.store.stats import Histogram
from farm.store.summary import summarize

# The bounded label values, exported at 0 before anything happens.
CACHE_RESTORE_OUTCOMES = ("hit", "partial", "miss", "error")
CACHE_SAVE_OUTCOMES = ("saved", "exists", "error")
RETRY_REASONS = ("executor_lost",)
DECISION_ACTIONS = ("scale_up", "scale_down", "hold")  # farm/autoscale/live.py
RUN_OUTCOMES = ("succeeded", "failed", "cancelled")  # the RunStates a run ends in

_POLICY: TypeAdapter = TypeAdapter(LivePolicy)


def _histogram(name: str, doc: str) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=["pool"])


def _add(family: HistogramMetricFamily, pool: str, h: Histogram) -> None:
    buckets = [("+Inf" if b == float("inf") else repr(b), c) for b, c in h.buckets]
    family.add_metric([pool], buckets, h.sum)


def wait_target(policy: dict[str, Any] | None, default: float) -> float:
    """The p95 queue wait a pool is held to: its capacity policy's target_p95_s where the
    policy's kind has one (predictive), else `default`."""
    if policy is None:
        return default
    try:
        parsed = _POLICY.validate_python(policy)
    except ValidationError:  # stored by another version of farm: the autoscaler cannot use it either
        return default
    return float(getattr(parsed, "target_p95_s", default))


class FarmCollector(Collector):
    """`static_executors`: the executors started per pool without an autoscaler (settings
    executors.count for executors.pool), the target exported for pools without a capacity
    policy (other pools: 0). None: unknown, no target for those pools. `wait_target_s`: the
    wait target of pools whose policy names none (settings autoscaler.wait_target_s)."""

    def __init__(self, store: JobStore, registry: ExecutorRegistry, pools: list[str],
                 static_executors: Mapping[str, int] | None = None, wait_target_s: float = DEFAULT_WAIT_TARGET_S) -> None:  # fmt: skip
        self.store, self.registry, self.pools = store, registry, pools
        self.static_executors = static_executors
        self.wait_target_s = wait_target_s

    def collect(self) -> Iterator[Metric]:
        """Everything, plus farm_redis_up 1; only farm_redis_up 0 when Redis cannot be read
        (the scrape still succeeds, so the alert can say what is wrong)."""
        try:
            families = list(self._families())
        except FarmError:
            yield GaugeMetricFamily("farm_redis_up", "Whether this API replica can read Redis.", value=0)
            return
        yield GaugeMetricFamily("farm_redis_up", "Whether this API replica can read Redis.", value=1)
        yield from families
        try:
            why = degraded(self.store.client)
        except FarmError:
            return
        yield GaugeMetricFamily("farm_degraded", "1 while the store refuses writes (a full disk, maxmemory): new work gets 503s; "
                                "/healthz and /v1/queue say why.", value=1 if why else 0)  # fmt: skip

    def _families(self) -> Iterator[Metric]:
        submitted = CounterMetricFamily("farm_jobs_submitted", "Jobs submitted.", labels=["pool"])
        finished = CounterMetricFamily("farm_jobs_finished", "Jobs that reached a terminal state, by outcome.", labels=["pool", "outcome"])
        lease = CounterMetricFamily("farm_lease_expiries", "Leases that expired (executor lost).", labels=["pool"])
        retries = CounterMetricFamily("farm_job_retries", "Attempts requeued, by reason.", labels=["pool", "reason"])
        depth = GaugeMetricFamily("farm_queue_depth", "Jobs queued.", labels=["pool"])
        running = GaugeMetricFamily("farm_jobs_running", "Jobs running.", labels=["pool"])
        oldest = GaugeMetricFamily("farm_queue_oldest_wait_seconds", "Wait so far of the oldest queued job.", labels=["pool"])
        executors = GaugeMetricFamily("farm_executors", "Executors by state.", labels=["pool", "state"])
        wait = _histogram("farm_queue_wait_seconds", "Time from (re)queue to start of an attempt.")
        duration = _histogram("farm_job_duration_seconds", "Time from start to end of the final attempt.")
        restores = CounterMetricFamily("farm_cache_restores", "Dependency cache restores, by outcome (hit, partial, miss, error).",
                                       labels=["pool", "outcome"])  # fmt: skip
        saves = CounterMetricFamily("farm_cache_saves", "Dependency cache saves, by outcome (saved, exists, error).", labels=["pool", "outcome"])
        cache_bytes = CounterMetricFamily("farm_cache_bytes", "Bytes restored from and saved to the dependency cache.",
                                          labels=["pool", "direction"])  # fmt: skip
        sizing = GaugeMetricFamily("farm_pool_executors_target", "The autoscaler's latest desired size, and the policy's bounds "
                                   "(a pool without a capacity policy: its static executor count for all three).",
                                   labels=["pool", "bound"])  # fmt: skip
        start_failures = CounterMetricFamily("farm_executor_start_failures", "Executors that could not start their runtime "
                                             "(daemon unreachable, image missing...); /v1/queue has the latest reason.",
                                             labels=["pool"])  # fmt: skip
        turn_errors = CounterMetricFamily("farm_autoscaler_errors", "Autoscaler turns of a pool that failed (the pool kept its "
                                          "executors that turn; the other pools went on); /decisions has the error.",
                                          labels=["pool"])  # fmt: skip
        decisions = CounterMetricFamily("farm_autoscaler_decisions", "Autoscaler turns, by policy and action (scale_up, scale_down, hold).",
                                        labels=["pool", "policy", "action"])  # fmt: skip
        restore_s = CounterMetricFamily("farm_cache_restore_seconds", "Time spent restoring dependency caches "
                                        "(with farm_cache_bytes: restore throughput).", labels=["pool"])  # fmt: skip
        wait_target_s = GaugeMetricFamily("farm_pool_wait_target_seconds", "The p95 queue wait the pool is held to (alert "
                                          "FarmQueueWaitHigh): its capacity policy's target_p95_s (predictive); a pool whose "
                                          "policy has none, or that has no policy: settings autoscaler.wait_target_s.",
                                          labels=["pool"])  # fmt: skip
        runs_submitted = CounterMetricFamily("farm_runs_submitted", "Runs submitted (POST /v1/runs), in the pool of their "
                                             "first job (one pool per run, whatever pools its other jobs use).",
                                             labels=["pool"])  # fmt: skip
        runs_ended = CounterMetricFamily("farm_runs", "Runs that ended (every job ended), by outcome, in the pool of their "
                                         "first job.", labels=["pool", "outcome"])  # fmt: skip
        run_duration = _histogram("farm_run_duration_seconds", "Time from a run's submit to its last job's end, in the pool "
                                  "of its first job.")  # fmt: skip

        scrape = StatsBook(self.store.client, self.store.keys).scrape(self.pools)
        summaries = summarize(self.store, self.registry, self.pools)
        for pool, summary, (stats, policy) in zip(self.pools, summaries, scrape.pools, strict=True):
            kind = policy.get("kind") if policy else None
            submitted.add_metric([pool], stats.submitted)
            for outcome in sorted(TERMINAL):
                finished.add_metric([pool, outcome.value], stats.finished.get(outcome.value, 0))
            lease.add_metric([pool], stats.lease_expired)
            for reason in RETRY_REASONS:
                retries.add_metric([pool, reason], stats.retries.get(reason, 0))
            depth.add_metric([pool], summary.queued)
            running.add_metric([pool], summary.running)
            oldest.add_metric([pool], summary.oldest_wait_s)
            for state, n in summary.executors.items():
                executors.add_metric([pool, state], n)
            _add(wait, pool, stats.wait)
            _add(duration, pool, stats.duration)
            for outcome in CACHE_RESTORE_OUTCOMES:
                restores.add_metric([pool, outcome], stats.cache_restores.get(outcome, 0))
            for outcome in CACHE_SAVE_OUTCOMES:
                saves.add_metric([pool, outcome], stats.cache_saves.get(outcome, 0))
            cache_bytes.add_metric([pool, "restore"], stats.cache_restore_bytes)
            cache_bytes.add_metric([pool, "save"], stats.cache_save_bytes)
            restore_s.add_metric([pool], stats.cache_restore_seconds)
            if kind is not None:  # what the autoscaler last decided for the policy
                for bound, n in stats.sizing.items():
                    sizing.add_metric([pool, bound], n)
            elif self.static_executors is not None:  # no autoscaler: the configured size is the target
                n = self.static_executors.get(pool, 0)
                for bound in ("desired", "min", "max"):
                    sizing.add_metric([pool, bound], n)
            turns = dict(stats.decisions)
            if kind is not None:
                turns.update({(kind, action): turns.get((kind, action), 0) for action in DECISION_ACTIONS})
            for (policy_kind, action), n in sorted(turns.items()):
                decisions.add_metric([pool, policy_kind, action], n)
            start_failures.add_metric([pool], stats.executor_start_failures)
            turn_errors.add_metric([pool], stats.autoscaler_errors)
            wait_target_s.add_metric([pool], wait_target(policy, self.wait_target_s))
            runs_submitted.add_metric([pool], stats.runs_submitted)
            for outcome in RUN_OUTCOMES:
                runs_ended.add_metric([pool, outcome], stats.runs_finished.get(outcome, 0))
            _add(run_duration, pool, stats.run_duration)
        restarts = CounterMetricFamily("farm_restarts", "Parts of the farm that died and were started again "
                                       "(redis: the embedded server; executor: a static executor; warden; autoscaler).",
                                       labels=["component"])  # fmt: skip
        counted = NodeBook(self.store.client, self.store.keys).restarts()
        for component in RESTARTED:
            restarts.add_metric([component], counted.get(component, 0))
        fencing = GaugeMetricFamily("farm_jobs_fencing", "Jobs whose executor was lost, waiting for their node to kill what "
                                    "the attempt left before they run again.", value=scrape.fencing)  # fmt: skip
        yield from (submitted, finished, lease, retries, depth, running, oldest, executors, wait, duration, restores, saves, cache_bytes,
                    restore_s, sizing, decisions, start_failures, turn_errors, wait_target_s, restarts, fencing, runs_submitted,
                    runs_ended, run_duration)  # fmt: skip


def make_registry(store: JobStore, registry: ExecutorRegistry, pools: list[str], static_executors: Mapping[str, int] | None = None,
                  wait_target_s: float = DEFAULT_WAIT_TARGET_S) -> CollectorRegistry:  # fmt: skip
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FarmCollector(store, registry, pools, static_executors, wait_target_s))
    return reg
