"""/metrics on a farm that has done work, checked by Prometheus' own linter."""

import subprocess

from fastapi.testclient import TestClient

from farm.api import create_app
from farm.models import JobSpec
from farm.store.policies import PolicyStore
from tests.conftest import require_tool
from tests.integration.test_executor_local import wait_done


def test_promtool_check_metrics_reports_nothing(store, make_settings, run_executor):
    tool = require_tool("promtool", "prometheus")
    settings = make_settings(pools=["default", "gpu"])
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
    run = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == run.stderr == "", run.stdout + run.stderr


def test_an_unreachable_redis_is_reported_not_a_failed_scrape():
    from farm.metrics import FarmCollector
    from farm.store.executors import ExecutorRegistry
    from farm.store.jobs import JobStore, connect
    from farm.store.server import free_port

    store = JobStore(connect(f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens there
    families = list(FarmCollector(store, ExecutorRegistry(store.client), ["default"]).collect())
    assert [(f.name, f.samples[0].value) for f in families] == [("farm_redis_up", 0)]
