"""/metrics on a fresh farm and on one that has done work: every series the dashboards read
exists from the first scrape (0 for counters with known labels), and Prometheus' own linter
reports nothing."""

import subprocess
import time

from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from farm.api import create_app
from farm.autoscale.policy import PredictivePolicy
from farm.metrics import (
    CACHE_RESTORE_OUTCOMES,
    CACHE_SAVE_OUTCOMES,
    DECISION_ACTIONS,
    RETRY_REASONS,
    RUN_OUTCOMES,
    FarmCollector,
    make_registry,
)
from farm.models import TERMINAL, JobSpec
from farm.store.executors import COUNTED
from farm.store.nodes import RESTARTED
from farm.store.policies import PolicyStore
from farm.store.stats import WAIT_BUCKETS_S
from tests.conftest import require_tool
from tests.integration.test_executor_local import wait_done

POOLS = ["default", "gpu", "batch"]


def samples(store, registry, static=None, **kw) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items -> value}, as one scrape sees them."""
    out: dict[str, dict[tuple, float]] = {}
    for family in FarmCollector(store, registry, POOLS, static, **kw).collect():
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def series(found: dict[tuple, float], **labels: str) -> dict[tuple, float]:
    return {k: v for k, v in found.items() if set(labels.items()) <= set(k)}


def test_every_series_the_dashboards_read_exists_at_zero_before_anything_happens(store, registry):
    PolicyStore(store.client).put("gpu", {"kind": "reactive", "buffer": 1}, by="test")  # no autoscaler turn yet
    m = samples(store, registry, static={"default": 2})
    for pool in POOLS:
        assert {dict(k)["outcome"] for k in series(m["farm_jobs_finished_total"], pool=pool)} == {s.value for s in TERMINAL}
        assert {dict(k)["outcome"] for k in series(m["farm_cache_restores_total"], pool=pool)} == set(CACHE_RESTORE_OUTCOMES)
        assert {dict(k)["outcome"] for k in series(m["farm_cache_saves_total"], pool=pool)} == set(CACHE_SAVE_OUTCOMES)
        assert {dict(k)["direction"] for k in series(m["farm_cache_bytes_total"], pool=pool)} == {"restore", "save"}
        assert {dict(k)["reason"] for k in series(m["farm_job_retries_total"], pool=pool)} == set(RETRY_REASONS)
        assert {dict(k)["state"] for k in series(m["farm_executors"], pool=pool)} == {s.value for s in COUNTED}
        assert len(series(m["farm_queue_wait_seconds_bucket"], pool=pool)) == 26  # every bucket, +Inf too
        assert {dict(k)["outcome"] for k in series(m["farm_runs_total"], pool=pool)} == set(RUN_OUTCOMES)
        for name in ("farm_jobs_submitted_total", "farm_lease_expiries_total", "farm_cache_restore_seconds_total",
                     "farm_executor_start_failures_total", "farm_queue_wait_seconds_count", "farm_job_duration_seconds_count",
                     "farm_runs_submitted_total", "farm_run_duration_seconds_count", "farm_pool_wait_target_seconds"):  # fmt: skip
            assert series(m[name], pool=pool), name
    assert {dict(k)["component"] for k in m["farm_restarts_total"]} == set(RESTARTED)
    counters = [v for name, found in m.items() if name.endswith(("_total", "_bucket", "_count", "_sum")) for v in found.values()]
    assert counters and set(counters) == {0}
    # Decisions: every action of the pool's current policy kind; none for a pool without a policy.
    assert m["farm_autoscaler_decisions_total"] == {
        (("action", a), ("policy", "reactive"), ("pool", "gpu")): 0 for a in DECISION_ACTIONS
    }  # fmt: skip
    # The target of a pool without a policy is its static executors (none but in executors.pool);
    # a pool with one waits for the autoscaler's first decision.
    assert m["farm_pool_executors_target"] == {
        (("bound", b), ("pool", p)): n for p, n in (("default", 2), ("batch", 0)) for b in ("desired", "min", "max")
    }  # fmt: skip
    # Static executors unknown (the caller did not say): no target for pools without a policy.
    assert "farm_pool_executors_target" not in samples(store, registry)


def test_decisions_of_an_earlier_policy_kind_stay_beside_the_current_kind_at_zero(store, registry):
    policies = PolicyStore(store.client)
    policies.put("gpu", {"kind": "reactive"}, by="test")
    store.client.hset(store.keys.stats("gpu"), mapping={"autoscaler_decisions_total:reactive:hold": 3, "autoscaler_decisions_total:reactive:scale_up": 1,
                                                      "desired_executors": 1, "min_executors": 0, "max_executors": 4})  # fmt: skip
    policies.put("gpu", {"kind": "predictive"}, by="test")
    m = samples(store, registry, static={"default": 2})
    assert series(m["farm_autoscaler_decisions_total"], pool="gpu") == {
        **{(("action", a), ("policy", "predictive"), ("pool", "gpu")): 0 for a in DECISION_ACTIONS},
        (("action", "hold"), ("policy", "reactive"), ("pool", "gpu")): 3,
        (("action", "scale_up"), ("policy", "reactive"), ("pool", "gpu")): 1,
    }  # fmt: skip
    assert series(m["farm_pool_executors_target"], pool="gpu") == {
        (("bound", "desired"), ("pool", "gpu")): 1, (("bound", "min"), ("pool", "gpu")): 0, (("bound", "max"), ("pool", "gpu")): 4
    }  # fmt: skip


def cumulative(m: dict[str, dict[tuple, float]], name: str, pool: str) -> dict[str, float]:
    """A histogram's buckets of one pool: le -> cumulative count."""
    return {dict(k)["le"]: v for k, v in series(m[f"{name}_bucket"], pool=pool).items()}


def test_the_wait_buckets_sit_around_the_usual_wait_targets(store, registry):
    """A 15 s target can be read off the histogram: a wait of 12 s counts at 15 s, not 30."""
    m = samples(store, registry)
    les = [float(le) for le in cumulative(m, "farm_queue_wait_seconds", "default")]
    assert {1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300} <= set(les)
    assert {0.005, 600, 14400, float("inf")} <= set(les)  # milliseconds (a warm executor) to hours (a starved pool)
    job = store.enqueue(JobSpec(steps=[{"name": "s", "run": "true"}]), "t")
    store.client.hset(store.keys.job(job.id), "ready_at", int(time.time() * 1000) - 12_000)  # queued 12 s ago
    assert store.claim("default", "e1", lease_s=10, grace_s=1).job_id == job.id
    waits = cumulative(samples(store, registry), "farm_queue_wait_seconds", "default")
    assert (waits["10.0"], waits["15.0"], waits["+Inf"]) == (0, 1, 1)
    assert set(store.client.hgetall(store.keys.stats("default"))) >= {"wait_le:15", "wait_count", "wait_sum"}


def test_bucket_counts_from_before_an_upgrade_still_make_a_valid_histogram(store, registry, tmp_path):
    """Counts a farm kept under the old buckets (per-index fields, 2.5 s and no 15 s), or
    under bounds that are not today's, count in the first of today's buckets that holds
    them: the histogram stays cumulative, its +Inf bucket its count, and promtool accepts it."""
    stats = store.keys.stats("default")
    store.client.hset(stats, mapping={
        "wait_bucket:9": 3,  # <= 2.5 s (old bucket 9): shows at 5 s
        "wait_bucket:12": 2,  # <= 30 s
        "wait_bucket:21": 1,  # the old +Inf
        "wait_bucket:40": 1,  # past the old bounds: only +Inf holds it
        "wait_le:15": 4,  # today's
        "wait_le:7": 1,  # a bound of other buckets: shows at 10 s
        "wait_le:nonsense": 5,  # not a bucket: ignored
        "wait_count": 12, "wait_sum": 200,
        "duration_bucket:3": 2, "duration_count": 2, "duration_sum": 15,  # <= 10 s: the duration bounds did not change
    })  # fmt: skip
    m = samples(store, registry)
    waits = cumulative(m, "farm_queue_wait_seconds", "default")
    assert [waits[le] for le in ("2.0", "5.0", "10.0", "15.0", "20.0", "30.0", "14400.0", "+Inf")] == [0, 3, 4, 8, 8, 10, 10, 12]
    ordered = [waits[repr(float(b))] for b in WAIT_BUCKETS_S] + [waits["+Inf"]]
    assert ordered == sorted(ordered) and ordered[-1] == m["farm_queue_wait_seconds_count"][(("pool", "default"),)] == 12
    durations = cumulative(m, "farm_job_duration_seconds", "default")
    assert (durations["5.0"], durations["10.0"], durations["+Inf"]) == (0, 2, 2)
    text = generate_latest(make_registry(store, registry, POOLS, {"default": 2})).decode()
    run = subprocess.run([require_tool("promtool", "prometheus"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == run.stderr == "", run.stdout + run.stderr


def test_each_pool_exports_its_own_wait_target(store, registry):
    """A predictive policy's target_p95_s; a policy without a target, or no policy: the
    default (settings autoscaler.wait_target_s, 300 s unless set)."""
    policies = PolicyStore(store.client)
    policies.put("gpu", {"kind": "predictive", "target_p95_s": 30}, by="test")
    policies.put("batch", {"kind": "reactive"}, by="test")
    assert samples(store, registry)["farm_pool_wait_target_seconds"] == {
        (("pool", "default"),): 300, (("pool", "gpu"),): 30, (("pool", "batch"),): 300
    }  # fmt: skip
    assert samples(store, registry, wait_target_s=120)["farm_pool_wait_target_seconds"] == {
        (("pool", "default"),): 120, (("pool", "gpu"),): 30, (("pool", "batch"),): 120
    }  # fmt: skip
    policies.put("gpu", {"kind": "predictive"}, by="test")  # the policy's own default target
    assert samples(store, registry)["farm_pool_wait_target_seconds"][(("pool", "gpu"),)] == PredictivePolicy().target_p95_s


def test_promtool_check_metrics_reports_nothing_on_a_fresh_farm(store, registry):
    tool = require_tool("promtool", "prometheus")
    PolicyStore(store.client).put("gpu", {"kind": "reactive", "buffer": 1}, by="test")
    text = generate_latest(make_registry(store, registry, POOLS, {"default": 2})).decode()
    assert "farm_autoscaler_decisions_total" in text and 'farm_pool_executors_target{bound="desired",pool="default"} 2.0' in text
    run = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == run.stderr == "", run.stdout + run.stderr


def test_promtool_check_metrics_reports_nothing(store, make_settings, run_executor):
    tool = require_tool("promtool", "prometheus")
    settings = make_settings(pools=["default", "gpu"], autoscaler={"wait_target_s": 90})
    run_executor(settings)
    PolicyStore(store.client).put("default", {"kind": "reactive", "buffer": 1}, by="test")
    for run in ("true", "exit 1"):
        spec = JobSpec(steps=[{"name": "s", "run": f"mkdir -p d; echo x > d/f; {run}"}], caches=[{"key": "k", "paths": ["d"]}])
        wait_done(store, store.enqueue(spec, "t").id)
    store.client.hset(store.keys.stats("default"), mapping={"desired_executors": 2, "min_executors": 0, "max_executors": 5,
                                                          "autoscaler_decisions_total:reactive:hold": 3})  # fmt: skip
    with TestClient(create_app(settings)) as api:
        text = api.get("/metrics").text
    assert "farm_cache_restores_total" in text and "farm_pool_executors_target" in text
    assert 'farm_pool_wait_target_seconds{pool="gpu"} 90.0' in text  # settings autoscaler.wait_target_s
    run = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == run.stderr == "", run.stdout + run.stderr


def test_an_unreachable_redis_is_reported_not_a_failed_scrape():
    from farm.store.client import connect
    from farm.store.executors import ExecutorRegistry
    from farm.store.jobs import JobStore
    from farm.store.server import free_port

    store = JobStore(connect(f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens there
    families = list(FarmCollector(store, ExecutorRegistry(store.client), ["default"]).collect())
    assert [(f.name, f.samples[0].value) for f in families] == [("farm_redis_up", 0)]
