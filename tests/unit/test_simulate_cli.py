"""`farm simulate` as a platform engineer runs it, on a small trace; and the simulator
checked against the shared real trace (../shared/traces, present in CI)."""

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm.cli import app

SHARED = Path(__file__).resolve().parents[3] / "shared" / "traces" / "bitcoin-core-ci-2025.csv"


@pytest.fixture
def small_trace(tmp_path):
    rows = ["submitted_ts,duration_s,pool,tenant"]
    for i in range(40):
        rows.append(f"{1_757_000_000 + 1800 * i},{300 + i},{'linux' if i % 2 else 'mac'},t{i % 3}")
        rows.append(f"{1_757_000_000 + 1800 * i},{200},linux,t0")
    path = tmp_path / "trace.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_simulate_json(small_trace):
    r = CliRunner().invoke(app, ["simulate", "--trace", str(small_trace), "--policy", "reactive", "--set", "buffer=2", "--json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert set(row) >= {"policy", "params", "executor_hours", "busy_hours", "efficiency", "wait_p50_s", "wait_p95_s",
                        "wait_p99_s", "killed_jobs", "clairvoyant_hours", "pool"}
    assert row["params"] == {"buffer": 2} and row["jobs"] == 80 and row["killed_jobs"] == 0


def test_simulate_sweep_reports_the_cheapest(small_trace):
    r = CliRunner().invoke(app, ["simulate", "--trace", str(small_trace), "--policy", "arc", "--sweep", "min_runners=0:4:1",
                                 "--target-p95", "15"])
    assert r.exit_code == 0, r.output
    assert "cheapest meeting p95" in r.output


def test_simulate_split_pools_and_all(small_trace):
    r = CliRunner().invoke(app, ["simulate", "--trace", str(small_trace), "--policy", "all", "--split-pools", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert {row["pool"] for row in rows} == {"linux", "mac"}
    assert {"predictive", "reactive", "arc", "jenkins", "keda", "gitlab"} <= {row["policy"] for row in rows}


def test_simulate_refuses_bad_input(tmp_path, small_trace):
    bad = tmp_path / "bad.csv"
    bad.write_text("when,how_long\n1,2\n")
    r = CliRunner().invoke(app, ["simulate", "--trace", str(bad)])
    assert r.exit_code == 2 and "lacks columns" in r.output
    r = CliRunner().invoke(app, ["simulate", "--trace", str(small_trace), "--policy", "magic"])
    assert r.exit_code == 2 and "unknown policy" in r.output
    r = CliRunner().invoke(app, ["simulate", "--trace", str(small_trace), "--policy", "reactive", "--set", "buffer=-3"])
    assert r.exit_code == 2 and "invalid policy" in r.output


def test_against_the_shared_trace():
    """Needs ../shared/traces (CI always has it): the replay lands on the figures of an
    independent replay of the same trace (issue: clairvoyant 5,314 h; ARC minRunners 18 at
    lead 60 s, 23,291 h)."""
    if not SHARED.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have the shared trace at {SHARED}")
        pytest.skip("../shared/traces is absent (a user's clone)")
    from farm.autoscale.policy import ArcPolicy
    from farm.sim.simulator import simulate
    from farm.sim.trace import parse

    with SHARED.open() as f:
        (trace,) = parse(f)
    assert len(trace) == 16376
    r = simulate(trace, ArcPolicy(min_runners=18), lead_s=60)
    assert r.clairvoyant_hours == pytest.approx(5314, rel=0.005)
    assert r.executor_hours == pytest.approx(23291, rel=0.02)


def test_simulate_plots_a_week(small_trace, tmp_path):
    png = tmp_path / "week.png"
    r = CliRunner().invoke(app, ["simulate", "--trace", str(small_trace), "--policy", "reactive", "--set", "buffer=1",
                                 "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
