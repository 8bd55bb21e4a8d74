"""A pipeline as a CI engineer writes it, run with `farm run submit -f` against `farm up`:
lint, then three test shards side by side, then an image, then a deploy. It runs in that
order, the followed log names each job, and a failed shard stops the image and the deploy
(`needs_failed`) with the run's counts exact."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.e2e.test_cli import farm

PIPELINE = """
name: release
jobs:
  - {{name: deploy, needs: [image], steps: [{{name: deploy, run: "echo deploying"}}]}}
  - {{name: image, needs: [test-0, test-1, test-2], steps: [{{name: image, run: "echo building"}}]}}
  - {{name: test-0, needs: [lint], steps: [{{name: t, run: "sleep 0.5; echo shard 0 ok"}}]}}
  - {{name: test-1, needs: [lint], steps: [{{name: t, run: "sleep 0.5; echo shard 1 ok; exit {fail}"}}]}}
  - {{name: test-2, needs: [lint], steps: [{{name: t, run: "sleep 0.5; echo shard 2 ok"}}]}}
  - {{name: lint, steps: [{{name: lint, run: "echo linted"}}]}}
"""


def test_a_pipeline_runs_in_the_order_of_its_needs_and_a_failed_shard_stops_what_follows(start_farm, user_env, tmp_path: Path):
    start_farm("up", "--executors", "3", env={"FARM_ADMIN_TOKEN": None})  # the CLI finds farm up by its context
    good = tmp_path / "good.yaml"
    good.write_text(PIPELINE.format(fail=0))
    out = farm(user_env, "run", "submit", "-f", str(good)).stdout
    lines = [line for line in out.splitlines() if line.strip()]

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    assert re.search(r"\[\s*5 lint\s*\] linted", out), out  # each line names its job
    for shard in range(3):
        assert first("linted") < first(f"shard {shard} ok") < first("building"), out
    assert first("building") < first("deploying"), out

    bad = tmp_path / "bad.yaml"
    bad.write_text(PIPELINE.format(fail=3))
    r = farm(user_env, "run", "submit", "-w", str(bad), code=1)
    run_id = re.search(r"run ([0-9a-f]{32}) failed", r.stderr).group(1)  # type: ignore[union-attr]
    run = json.loads(farm(user_env, "run", "get", "--json", run_id).stdout)
    assert {k: v for k, v in run["counts"].items() if v} == {"succeeded": 3, "failed": 1, "cancelled": 2}, run["counts"]
    graph = {node["name"]: node for node in run["graph"]}
    assert (graph["image"]["state"], graph["image"]["error"]) == ("cancelled", "needs_failed")
    assert (graph["deploy"]["state"], graph["deploy"]["error"]) == ("cancelled", "needs_failed")
    table = farm(user_env, "run", "get", run_id).stdout
    assert "needs_failed" in table and "test-0, test-1, test-2" in table, table
