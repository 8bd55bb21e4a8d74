"""The CLI's policy and job commands against a served API (real Redis): a policy file's typo
comes back with its "did you mean", `farm policy set` takes its file as an argument (and
`--file`; `-f` is --follow everywhere), `farm policy history` shows what each version
changed, and `farm get` shows the job's caches."""

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from farm.api import create_app
from farm.cli import app
from farm.client import FarmClient
from farm.models import CacheResult, JobState, StepResult

ADMIN = "cli-admin"
WIDE = {"COLUMNS": "200", "LINES": "50"}


@pytest.fixture
def api(make_settings, monkeypatch):
    settings = make_settings(admin_token=ADMIN, pools=["default", "gpu"])
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN}"}) as client:

        def served() -> FarmClient:
            c = FarmClient.__new__(FarmClient)
            c.url, c.token, c.source, c.http = "http://testserver", ADMIN, "the test", client
            return c

        for module in ("farm.cli.pools", "farm.cli.jobs"):
            monkeypatch.setattr(f"{module}.FarmClient", served)
        yield client


def farm(*args: str):
    return CliRunner().invoke(app, list(args), env=WIDE)


def test_a_typo_in_a_policy_file_is_refused_with_the_field_meant(api, tmp_path):
    (tmp_path / "p.yaml").write_text("kind: predictive\ntarget_p95: 30\nmin: 1\n")
    r = farm("policy", "set", "default", str(tmp_path / "p.yaml"))
    assert r.exit_code == 2, r.output
    assert "target_p95: unknown field (did you mean target_p95_s?)" in r.stderr  # the file's own path: no "predictive."
    (tmp_path / "w.yaml").write_text("kind: scheduled\nwindows: [{cron: '0 8 * * *', duraton_s: 60}]\n")
    r = farm("policy", "set", "default", str(tmp_path / "w.yaml"))
    assert "windows[0].duraton_s: unknown field (did you mean duration_s?)" in r.stderr, r.stderr
    assert api.get("/v1/pools/default/policy").json()["version"] == 0


def test_policy_set_takes_the_file_as_an_argument_or_file_and_refuses_f(api, tmp_path):
    (tmp_path / "p.yaml").write_text("kind: reactive\nbuffer: 2\n")
    r = farm("policy", "set", "default", str(tmp_path / "p.yaml"))
    assert r.exit_code == 0 and "policy version 1" in r.stdout, r.output
    r = farm("policy", "set", "default", "--file", str(tmp_path / "p.yaml"), "--if-match", "1")
    assert r.exit_code == 0 and "policy version 2" in r.stdout, r.output
    r = farm("policy", "set", "default", "--file", str(tmp_path / "p.yaml"), "--if-match", '"2"')  # the ETag as given
    assert r.exit_code == 0 and "policy version 3" in r.stdout, r.output
    r = farm("policy", "set", "default", str(tmp_path / "p.yaml"), "--if-match", "1")
    assert r.exit_code == 2 and "409" in r.stderr and "at version 3" in r.stderr
    r = farm("policy", "set", "default", "-f", str(tmp_path / "p.yaml"))
    assert r.exit_code == 2 and "farm policy set POOL FILE" in r.output, r.output
    r = farm("policy", "set", "default")
    assert r.exit_code == 2 and "give the policy file" in r.output
    r = farm("policy", "set", "default", str(tmp_path / "p.yaml"), "--file", str(tmp_path / "p.yaml"))
    assert r.exit_code == 2 and "give the policy file once" in r.output
    assert api.get("/v1/pools/default/policy").json()["version"] == 3


def test_policy_history_shows_what_each_version_changed(api):
    api.put("/v1/pools/gpu/policy", json={"kind": "predictive", "target_p95_s": 30, "min": 1, "max": 20})
    api.put("/v1/pools/gpu/policy", json={"kind": "predictive", "target_p95_s": 15, "min": 1, "max": 20})
    api.put("/v1/pools/gpu/policy", json={"kind": "reactive", "buffer": 3, "min": 1, "max": 20})
    api.put("/v1/pools/gpu/policy", json={"kind": "reactive", "buffer": 3, "min": 1, "max": 20})
    r = farm("policy", "history", "gpu")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "set: predictive" in out and "target_p95_s: 30" in out and "max: 20" in out
    assert "target_p95_s: 30.0 → 15.0" in out and "min: 1 →" not in out  # only what changed
    assert "kind: predictive → reactive" in out and "buffer: - → 3" in out and "quantile: 0.95 → -" in out
    assert "no change" in out
    assert "predictive │ predictive" not in out


def test_farm_get_shows_the_jobs_caches(api):
    job = api.post("/v1/jobs", json={"steps": [{"name": "build", "run": "make"}], "caches": [
        {"key": "pip-1", "restore_keys": ["pip-"], "paths": ["deps"]}, {"key": "npm-2", "paths": ["node_modules"]}]}).json()
    store = api.app.state.store
    claim = store.claim("default", "ex-test", lease_s=30, grace_s=5)
    assert claim is not None and claim.job_id == job["id"]
    caches = [CacheResult(key="pip-1", restore="partial", matched_key="pip-0", restore_bytes=1_234_567, restore_s=0.5,
                          restore_mb_s=2.4, warm=True, save="saved", save_bytes=2_000_000, save_s=1.25),
              CacheResult(key="npm-2", restore="error", save="skipped", error="pack 3f2a is corrupt")]  # fmt: skip
    assert store.finish(job["id"], claim.attempt, JobState.SUCCEEDED, exit_code=0, error=None,
                        steps=[StepResult(name="build", exit_code=0, duration_s=1.0)], caches=caches) == "ok"
    r = farm("get", job["id"])
    assert r.exit_code == 0, r.output
    pip = next(line for line in r.stdout.splitlines() if "pip-1" in line)
    assert "partial from pip-0 (warm)" in pip and "1,234,567" in pip and "0.5" in pip and "saved 2,000,000 B in 1.2 s" in pip
    npm = next(line for line in r.stdout.splitlines() if "npm-2" in line)
    assert "error" in npm and "skipped" in npm
    assert "cache npm-2: pack 3f2a is corrupt" in r.stderr
