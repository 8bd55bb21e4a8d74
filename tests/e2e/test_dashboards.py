"""The shipped dashboards and alerts, proven against a real Prometheus scraping a working
`farm up`: every panel's query parses and returns at least one series, the pool variable
finds the pool, and promtool accepts the alerting rules."""

from __future__ import annotations

import json
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


def panels(dashboard: dict) -> list[tuple[str, str]]:
    return [(f"{dashboard['title']} / {p['title']} [{t['refId']}]", t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def substitute(expr: str) -> str:
    """Grafana's template variables, as Grafana would fill them for the pool under test."""
    return expr.replace("$__rate_interval", "1m").replace("$pool", "default")


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


def test_every_panel_query_returns_data_from_a_real_prometheus(start_farm, tmp_path):
    prometheus = require_tool("prometheus", "prometheus")
    config = tmp_path / "farm.yaml"
    config.write_text(yaml.safe_dump({"autoscaler": {"interval_s": 0.5},
                                      "policies": {"default": {"kind": "reactive", "buffer": 1, "min": 1, "max": 4}}}))  # fmt: skip
    farm, client = start_farm("up", "--config", str(config))
    target = str(client.base_url).removeprefix("http://").rstrip("/")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "farm", "static_configs": [{"targets": [target]}]}],
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

        deadline = time.monotonic() + 60
        while True:
            try:
                if [s for s in query('up{job="farm"}') if s["value"][1] == "1"]:
                    break
            except (httpx.TransportError, AssertionError):
                pass
            assert time.monotonic() < deadline, "Prometheus never scraped farm"
            time.sleep(0.5)
        # Work while Prometheus watches: builds that pass and fail, caches missed and hit.
        spec = {"steps": [{"name": "s", "run": "mkdir -p d; echo x > d/f"}], "caches": [{"key": "k", "paths": ["d"]}]}
        ids = []
        for body in (spec, spec, {"steps": [{"name": "s", "run": "exit 1"}]}, spec):
            ids.append(client.post("/v1/jobs", json=body).json()["id"])
            wait_all(client, ids, 60)
        time.sleep(4)  # a few more scrapes after the last job
        pools = prom.get("/api/v1/label/pool/values", params={"match[]": "farm_queue_depth"}).json()["data"]
        assert "default" in pools  # what the dashboards' pool variable lists
        empty = []
        for path in DASHBOARDS:
            for name, expr in panels(json.loads(path.read_text())):
                if not query(substitute(expr)):
                    empty.append(f"{name}: {expr}")
        assert not empty, "panels without data:\n" + "\n".join(empty)
    finally:
        proc.terminate()
        proc.wait(10)
