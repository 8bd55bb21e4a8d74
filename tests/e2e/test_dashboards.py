"""The shipped dashboards and alerts, proven against a real Prometheus scraping a working
`farm up`: every panel has data from the first scrapes of a fresh farm, before any job, and
again after jobs; no panel counts twice what two API replicas both report; the pool variable
finds the pools, and promtool accepts the alerting rules.

"Data" is a series with a number: NaN is not data (Grafana draws nothing for it). A rate
over counters that exist at 0 is 0, which is data. A quantile over no observations is NaN,
so the wait panels fall back to the oldest queued job's wait (0 when nothing waits). A ratio
over nothing is NaN and stays so (0 or 1 would be a lie): UNDEFINED_WITHOUT_TRAFFIC lists
those targets, allowed NaN only before any job; each of their panels has another target,
which must have numbers (the restores or bytes per second that say why)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from farm.store.server import free_port
from tests.conftest import require_tool
from tests.e2e.conftest import wait_all

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
ONE_REPLICA = re.compile(r"\b(farm_[a-z_]+)\{")  # a selector of farm's, to narrow to one replica


# Ratios whose denominator is 0 until jobs ran: (panel, refId).
UNDEFINED_WITHOUT_TRAFFIC = {("Cache hit ratio", "A"), ("Cache throughput", "B"), ("Runs", "B")}


def substitute(expr: str, pool: str) -> str:
    """Grafana's template variables, as Grafana fills them for a pool (".*": All)."""
    return expr.replace("$__rate_interval", "1m").replace("$pool", pool)


def finite(series: list) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in series)


def panel(title: str) -> dict:
    return next(p for path in DASHBOARDS for p in json.loads(path.read_text())["panels"] if p["title"] == title)


def test_every_dashboard_panel_has_a_description_and_the_variables():
    assert len(DASHBOARDS) == 2
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "pool"}
        assert d["schemaVersion"] >= 39
        for p in d["panels"]:
            assert p["description"] and p["datasource"]["uid"] == "${datasource}", (path.name, p["title"])


def test_the_alerting_rules_pass_promtool():
    run = subprocess.run([require_tool("promtool", "prometheus"), "check", "rules", str(REPO / "alerts" / "farm.rules.yml")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_panel_has_data_on_a_fresh_farm_and_after_jobs(start_farm, tmp_path):
    """A farm as `farm up` starts it: pool default with its static executors and no policy,
    and pool elastic with a reactive policy (min 0: the autoscaler decides, starts nothing;
    max 3: bounds other than default's, so a panel that mixed the pools would show)."""
    prometheus = require_tool("prometheus", "prometheus")
    config = tmp_path / "farm.yaml"
    config.write_text(yaml.safe_dump({"pools": ["default", "elastic"], "autoscaler": {"interval_s": 0.5},
                                      "policies": {"elastic": {"kind": "reactive", "min": 0, "max": 3}}}))  # fmt: skip
    farm, client = start_farm("up", "--config", str(config))
    target = str(client.base_url).removeprefix("http://").rstrip("/")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        # Scraped twice, as two API replicas are (the chart runs two): each reports the same
        # farm-wide values, and no panel may count them twice.
        "scrape_configs": [{"job_name": "farm", "static_configs": [{"targets": [target], "labels": {"pod": f"api-{i}"}} for i in (0, 1)]}],
    }))  # fmt: skip
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        prom = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

        def query(expr: str) -> list:
            r = prom.get("/api/v1/query", params={"query": expr})
            assert r.status_code == 200 and r.json()["status"] == "success", f"{expr}: {r.text}"
            return r.json()["data"]["result"]

        def values(expr: str) -> dict[str, float]:
            return {s["metric"].get("bound", ""): float(s["value"][1]) for s in query(expr)}

        def without_data(fresh: bool) -> list[str]:
            """Every target of every panel, for All pools and for pool default: what has no
            number (see the module's docstring for what may be NaN, and when). Pool default
            has no capacity policy, so no autoscaler decisions: their panel shows 0, not
            "No data"."""
            missing = []
            for path in DASHBOARDS:
                d = json.loads(path.read_text())
                for panel in d["panels"]:
                    for pool in (".*", "default"):
                        for t in panel["targets"]:
                            series = query(substitute(t["expr"], pool))
                            nan_ok = fresh and (panel["title"], t["refId"]) in UNDEFINED_WITHOUT_TRAFFIC
                            if not series or not (finite(series) or nan_ok):
                                missing.append(f"{d['title']} / {panel['title']} [{t['refId']}] pool={pool}: {series or 'no series'}")
            return missing

        def counted_twice(rates: bool) -> list[str]:
            """The targets (for All pools) whose value differs from the one replica api-0
            alone gives: gauges exactly, rates (whose two replicas are scraped at different
            moments) within a third (counted twice is off by a half)."""
            wrong = []
            for path in DASHBOARDS:
                for p in json.loads(path.read_text())["panels"]:
                    for t in p["targets"]:
                        if ("rate(" in t["expr"]) != rates:
                            continue
                        expr = substitute(t["expr"], ".*")
                        both, one = (sorted((json.dumps(s["metric"], sort_keys=True), float(s["value"][1])) for s in query(e))
                                     for e in (expr, ONE_REPLICA.sub(r'\1{pod="api-0", ', expr)))  # fmt: skip
                        same = [k for k, _ in both] == [k for k, _ in one] and all(
                            a == b or (rates and math.isfinite(a) and abs(a - b) <= max(abs(a), abs(b)) / 3) or (math.isnan(a) and math.isnan(b))
                            for (_, a), (_, b) in zip(both, one, strict=True))  # fmt: skip
                        if not same:
                            wrong.append(f"{p['title']} [{t['refId']}]: {both} against api-0 alone {one}")
            return wrong

        def counted_once(rates: bool, timeout: float = 15) -> None:
            deadline = time.monotonic() + timeout
            while (wrong := counted_twice(rates)) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not wrong, "panels that count the replicas more than once:\n" + "\n".join(wrong)

        def wait_for_data(fresh: bool, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while (missing := without_data(fresh)) and time.monotonic() < deadline:
                time.sleep(0.5)  # a rate needs two scrapes
            assert not missing, "panels without data:\n" + "\n".join(missing)

        deadline = time.monotonic() + 60
        while True:
            try:
                if [s for s in query('up{job="farm"}') if s["value"][1] == "1"]:
                    break
            except (httpx.TransportError, AssertionError):
                pass
            assert time.monotonic() < deadline, "Prometheus never scraped farm"
            time.sleep(0.5)

        # A fresh farm, before any job.
        wait_for_data(fresh=True, timeout=30)
        counted_once(rates=False)
        assert values(substitute(next(t["expr"] for t in panel("Executors")["targets"] if t["refId"] == "B"), "default")) == {"": 2}
        assert values("sum(farm_jobs_submitted_total)") == {"": 0}, "the fresh check ran after a job"
        assert values('farm_pool_executors_target{pool="default"}') == {"desired": 2, "min": 2, "max": 2}  # the static executors
        assert values('farm_pool_executors_target{pool="elastic", bound!="desired"}') == {"min": 0, "max": 3}  # the policy's
        assert {s["metric"]["action"] for s in query('farm_autoscaler_decisions_total{pool="elastic", policy="reactive"}')} == {
            "scale_up", "scale_down", "hold"}  # fmt: skip
        assert not query('farm_autoscaler_decisions_total{pool="default"}')  # no policy, no decisions
        decisions = next(t["expr"] for path in DASHBOARDS for p in json.loads(path.read_text())["panels"] for t in p["targets"]
                         if "farm_autoscaler_decisions_total" in t["expr"])  # fmt: skip
        assert [(s["metric"], float(s["value"][1])) for s in query(substitute(decisions, "default"))] == [({"policy": "no policy"}, 0)]
        assert "no policy" not in {s["metric"].get("policy") for s in query(substitute(decisions, ".*"))}  # only for nothing else
        pools = prom.get("/api/v1/label/pool/values", params={"match[]": "farm_queue_depth"}).json()["data"]
        assert set(pools) == {"default", "elastic"}  # what the dashboards' pool variable lists
        # Bounds: a line per pool and bound, each named by its pool, never one pool's max
        # beside another's min.
        (bounds,) = panel("Bounds")["targets"]
        assert "{{pool}}" in bounds["legendFormat"]
        for pool, expected in ((".*", {"default": (2, 2), "elastic": (0, 3)}), ("elastic", {"elastic": (0, 3)})):
            got = {(s["metric"]["pool"], s["metric"]["bound"]): float(s["value"][1]) for s in query(substitute(bounds["expr"], pool))}
            assert {(p, b): got.get((p, b)) for p in expected for b in ("min", "max")} == {
                (p, b): n for p, (lo, hi) in expected.items() for b, n in (("min", lo), ("max", hi))
            }, got  # fmt: skip
            assert {p for p, _ in got} == set(expected), got

        # Work while Prometheus watches: builds that pass and fail, caches missed and hit, a run.
        spec = {"steps": [{"name": "s", "run": "mkdir -p d; echo x > d/f"}], "caches": [{"key": "k", "paths": ["d"]}]}
        ids = []
        for body in (spec, spec, {"steps": [{"name": "s", "run": "exit 1"}]}, spec):
            ids.append(client.post("/v1/jobs", json=body).json()["id"])
            wait_all(client, ids, 60)
        run = client.post("/v1/runs", json={"name": "r", "jobs": [{"steps": [{"name": "s", "run": "true"}]}] * 2}).json()
        wait_all(client, run["jobs"], 60)
        # A run of pool elastic (its first job's), cancelled: it ends without an executor there.
        spanning = client.post("/v1/runs", json={"name": "e", "jobs": [{"pool": "elastic", "steps": [{"name": "s", "run": "true"}]},
                                                                        {"steps": [{"name": "s", "run": "true"}]}]}).json()  # fmt: skip
        assert client.post(f"/v1/runs/{spanning['id']}/cancel").status_code == 202
        wait_all(client, spanning["jobs"], 60)
        # Every target has numbers now, the ratios too (within the rate window of the jobs), and
        # the wait panels show the quantile itself, not the fallback.
        wait_for_data(fresh=False, timeout=30)
        counted_once(rates=True)
        counted_once(rates=False)
        assert finite(query('histogram_quantile(0.95, sum by (le) (rate(farm_queue_wait_seconds_bucket{pool="default"}[1m])))'))
        # Runs: by pool, and only the pools asked for; the cancelled run shows in elastic only.
        runs = panel("Runs")["targets"]
        assert all('pool=~"$pool"' in t["expr"] and "{{pool}}" in t["legendFormat"] for t in runs), runs
        ended = next(t["expr"] for t in runs if "farm_runs_total" in t["expr"])
        assert {s["metric"]["pool"] for s in query(substitute(ended, ".*"))} == {"default", "elastic"}
        assert {s["metric"]["pool"] for s in query(substitute(ended, "elastic"))} == {"elastic"}
        deadline = time.monotonic() + 15  # the run's end may not be scraped yet
        while ("elastic", "cancelled") not in (rates := {(s["metric"]["pool"], s["metric"]["outcome"]) for s in query(substitute(ended, ".*"))
                                                         if float(s["value"][1]) > 0}):  # fmt: skip
            assert time.monotonic() < deadline, f"the elastic run's end is not in the panel: {rates}"
            time.sleep(0.5)
        assert {(s["metric"]["pool"], s["metric"]["outcome"]): float(s["value"][1]) for s in query("max by (pool, outcome) (farm_runs_total) > 0")} == {
            ("default", "succeeded"): 1, ("elastic", "cancelled"): 1}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)
