"""The CLI as a CI engineer uses it, against a real `farm up`: it finds the farm by itself,
its errors say what to do, its exit codes say how a job ended, and the whole API is there,
in tables that fit 80 columns and in JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import wait_for
from tests.e2e.conftest import wait_all


def farm(env: dict[str, str], *args: str, stdin: str | None = None, code: int = 0) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "farm.cli", *args], env={**env, "COLUMNS": "80"}, input=stdin,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == code, f"exit {r.returncode}, wanted {code}:\n{r.stdout}\n{r.stderr}"
    return r


def narrow(text: str) -> None:
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, wide


def test_the_cli_finds_farm_up_and_says_what_went_wrong(start_farm, farm_env, user_env, tmp_path: Path):
    data = tmp_path / "elsewhere"
    proc, client = start_farm("up", "--executors", "2", "--data-dir", str(data), env={"FARM_ADMIN_TOKEN": None})
    out = "".join(proc.lines)
    assert "context 'local' is current" in out
    # A later command finds it without FARM_URL or a token: the context names both.
    job_id = farm(user_env, "submit", "--", "echo", "hello").stdout.strip()
    assert len(job_id) == 32
    assert "hello" in farm(user_env, "logs", "-f", job_id).stdout
    listed = farm(user_env, "context", "ls").stdout
    assert "local" in listed and "*" in listed

    # Errors a person can act on: file:line:column, one line per field, where the token came from.
    (tmp_path / "bad.yaml").write_text("steps:\n  - name: a\n    run: make: test: x\n")
    r = farm(user_env, "submit", str(tmp_path / "bad.yaml"), code=2)
    assert f"{tmp_path / 'bad.yaml'}:3:" in r.stderr and "Traceback" not in r.stderr
    r = farm(user_env, "submit", str(tmp_path / "missing.yaml"), code=2)
    assert "missing.yaml: no such file" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "typo.yaml").write_text("steps: [{name: a, run: make, timout_s: 5}]\ntimout_s: 3\n")
    r = farm(user_env, "submit", str(tmp_path / "typo.yaml"), code=2)
    assert "steps[0].timout_s: unknown field" in r.stderr and "timout_s: unknown field (did you mean timeout_s?)" in r.stderr
    assert "{'type'" not in r.stderr
    r = farm({**user_env, "FARM_TOKEN": "not-a-token"}, "queue", code=2)
    assert "refused the token" in r.stderr and "FARM_TOKEN" in r.stderr and "farm login" in r.stderr
    r = farm({**user_env, "FARM_URL": "http://127.0.0.1:9"}, "queue", code=3)
    assert "cannot reach farm at http://127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr

    # Exit codes: 0 ok, 1 failed, 124 timed out, 125 cancelled.
    farm(user_env, "submit", "--wait", "--", "true")
    farm(user_env, "submit", "--wait", "--", "sh", "-c", "exit 7", code=1)
    farm(user_env, "submit", "--wait", "--timeout", "1", "--", "sleep", "30", code=124)
    r = farm(user_env, "submit", "--wait", "--", "sh", "-c", "exit 3", code=1)
    assert "failed (step_failed, exit 3)" in r.stderr
    waiting = subprocess.Popen([sys.executable, "-m", "farm.cli", "submit", "--wait", "--", "sleep", "60"], env=user_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    running = wait_for(lambda: [j for j in json.loads(farm(user_env, "jobs", "ls", "--state", "running", "--json").stdout)["jobs"]], 30)
    farm(user_env, "cancel", running[0]["id"])
    assert waiting.wait(30) == 125, waiting.communicate()


def test_the_whole_api_from_the_cli(start_farm, farm_env, tmp_path: Path):
    proc, client = start_farm("up", "--executors", "2")
    env = {**farm_env, "FARM_URL": str(client.base_url).rstrip("/"), "FARM_TOKEN": "e2e-admin-token"}
    spec = tmp_path / "job.yaml"
    spec.write_text("steps:\n  - {name: build, run: 'mkdir -p dist && echo built > dist/app.txt && seq 1 50'}\n"
                    "artifacts: ['dist/*']\n")  # fmt: skip
    job_id = farm(env, "submit", "--wait", str(spec)).stderr.split()[1]
    wait_all(client, [job_id], 30)

    r = farm(env, "jobs", "ls")
    narrow(r.stdout)
    assert job_id[:12] in r.stdout and "succeeded" in r.stdout
    assert json.loads(farm(env, "jobs", "ls", "--state", "succeeded", "--json").stdout)["jobs"][0]["id"] == job_id
    assert json.loads(farm(env, "jobs", "ls", "--tenant", "nobody", "--json").stdout)["jobs"] == []
    r = farm(env, "get", job_id)
    narrow(r.stdout)
    assert f"job {job_id} succeeded" in r.stdout and "build" in r.stdout
    assert json.loads(farm(env, "get", job_id, "--json").stdout)["id"] == job_id
    assert "succeeded: it waited" in farm(env, "why", job_id[:12]).stdout

    # Why is it waiting: a job behind its concurrency group's one slot names the job holding it.
    grouped = tmp_path / "grouped.yaml"
    grouped.write_text("steps: [{name: hold, run: 'sleep 30'}]\nconcurrency: {group: deploy, limit: 1}\n")
    holder = farm(env, "submit", str(grouped)).stdout.strip()
    wait_for(lambda: json.loads(farm(env, "get", holder, "--json").stdout)["state"] == "running", 30, what="the holder started")
    behind = farm(env, "submit", str(grouped)).stdout.strip()
    r = farm(env, "why", behind)
    narrow(r.stdout)
    assert "concurrency group 'deploy' is at its limit of 1, held by " + holder in r.stdout.replace("\n", " "), r.stdout
    assert json.loads(farm(env, "why", behind, "--json").stdout)["reasons"][0]["code"] == "concurrency_group"
    farm(env, "cancel", behind)
    farm(env, "cancel", holder)

    whole = farm(env, "logs", job_id).stdout
    assert "50\n--- step build (exit 0, " in whole  # the step's end, on a line of its own
    assert farm(env, "logs", job_id, "--tail", "2").stdout == "".join(whole.splitlines(keepends=True)[-2:])
    stamped = farm(env, "logs", job_id, "--timestamps").stdout.splitlines()
    assert all(line[:4].isdigit() and line[10] == "T" for line in stamped)
    r = farm(env, "artifacts", "ls", job_id)
    narrow(r.stdout)
    assert "dist/app.txt" in r.stdout
    got = tmp_path / "got.txt"
    farm(env, "artifacts", "get", job_id, "dist/app.txt", "-o", str(got))
    assert got.read_text() == "built\n"

    again = farm(env, "rerun", job_id, "--wait").stderr
    rerun_id = again.split()[1]
    assert json.loads(farm(env, "get", rerun_id, "--json").stdout)["rerun_of"] == job_id
    # For scripts: the job as JSON, as submitted or (with --wait) as it ended, the exit code as ever.
    ended = json.loads(farm(env, "rerun", job_id, "--wait", "--json").stdout)
    assert (ended["rerun_of"], ended["state"], ended["exit_code"]) == (job_id, "succeeded", 0)
    submitted = json.loads(farm(env, "submit", "--json", "--", "sh", "-c", "exit 4").stdout)
    assert submitted["spec"]["steps"][0]["run"] == "sh -c 'exit 4'" and len(submitted["id"]) == 32
    assert json.loads(farm(env, "submit", "--wait", "--json", str(spec), code=0).stdout)["state"] == "succeeded"
    failed = json.loads(farm(env, "rerun", submitted["id"], "--wait", "--json", code=1).stdout)
    assert (failed["state"], failed["exit_code"]) == ("failed", 4)
    before = len(json.loads(farm(env, "jobs", "ls", "--limit", "500", "--json").stdout)["jobs"])
    r = farm(env, "submit", "--json", "--follow", "--", "true", code=2)
    assert "give one" in r.stderr and len(json.loads(farm(env, "jobs", "ls", "--limit", "500", "--json").stdout)["jobs"]) == before

    r = farm(env, "pools", "ls")
    narrow(r.stdout)
    assert "default" in r.stdout
    (tmp_path / "policy.yaml").write_text("kind: reactive\nbuffer: 1\nmax: 3\n")
    assert "policy version 1" in farm(env, "policy", "set", "default", str(tmp_path / "policy.yaml")).stdout
    r = farm(env, "policy", "set", "default", str(tmp_path / "policy.yaml"), "--if-match", "0", code=2)
    assert "409" in r.stderr
    assert json.loads(farm(env, "policy", "get", "default", "--json").stdout)["policy"]["kind"] == "reactive"
    trace = tmp_path / "jenkins.csv"  # a farm moving from Jenkins seeds the pool's demand history
    trace.write_text("submitted_ts,duration_s,pool,tenant\n" + "".join(f"{1_600_000_000 + 600 * i},{60 + i},linux,t\n" for i in range(40)))
    r = farm(env, "policy", "seed", "default", "--trace", str(trace), "--trace-pool", "mac", code=2)
    assert "no rows of pool 'mac'" in r.stderr and "linux" in r.stderr
    assert "seeded 40 of the trace's 40 jobs" in farm(env, "policy", "seed", "default", "--trace", str(trace)).stdout
    assert json.loads(farm(env, "pools", "history", "default", "--json").stdout)["jobs"] >= 40  # and what this farm saw
    r = farm(env, "policy", "set", "default", str(tmp_path / "policy.yaml"), "--seed-trace", str(trace))
    assert "seeded 40 of" in r.stdout and "policy version 2" in r.stdout  # a seed, then the policy that learns from it
    r = farm(env, "policy", "history", "default")
    narrow(r.stdout)
    assert "reactive" in r.stdout and "seed: 40 jobs" in r.stdout
    farm(env, "policy", "decisions", "default")
    r = farm(env, "queue")
    narrow(r.stdout)

    # A remote farm: `farm login` keeps its URL and token (from stdin), `context use` switches.
    config = {**farm_env, "FARM_CONFIG_DIR": str(tmp_path / "cfg")}
    farm(config, "login", env["FARM_URL"], "--name", "ci", stdin="e2e-admin-token\n")
    assert "ci" in farm(config, "context", "ls").stdout
    assert oct((tmp_path / "cfg" / "contexts.json").stat().st_mode & 0o777) == "0o600"
    assert json.loads(farm(config, "get", job_id, "--json").stdout)["id"] == job_id
    farm(config, "login", env["FARM_URL"], stdin="wrong-token\n", code=2)
    r = farm(config, "context", "use", "nope", code=2)
    assert "no context 'nope'" in r.stderr


def test_runs_from_the_cli(start_farm, farm_env, tmp_path: Path):
    proc, client = start_farm("up", "--executors", "2")
    env = {**farm_env, "FARM_URL": str(client.base_url).rstrip("/"), "FARM_TOKEN": "e2e-admin-token"}
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        "name: push main@abc\nlabels: {sha: abc}\njobs:\n"
        "  - steps: [{name: lint, run: 'echo lint-ok; echo half-a-line | tr -d \"\\n\"'}]\n"
        "  - steps: [{name: test, run: 'for i in 1 2 3; do echo test-$i; done'}]\n"
        "  - steps: [{name: build, run: 'echo built'}]\n"
    )  # fmt: skip
    r = farm(env, "run", "submit", "-f", str(run_file))
    lines = r.stdout.splitlines()
    assert "[0 lint ] lint-ok" in lines and "[0 lint ] half-a-line" in lines  # a last line without its newline
    assert [line for line in lines if line.startswith("[1 test ] test-")] == ["[1 test ] test-1", "[1 test ] test-2", "[1 test ] test-3"]
    assert "[2 build] built" in lines
    assert "succeeded (3 succeeded)" in r.stderr
    run_id = r.stderr.split()[2].rstrip(":")

    r = farm(env, "run", "get", run_id)
    narrow(r.stdout)
    assert f"run {run_id} succeeded" in r.stdout and "lint" in r.stdout and "build" in r.stdout
    r = farm(env, "run", "ls")
    narrow(r.stdout)
    assert run_id[:12] in r.stdout and "push main@abc" in r.stdout
    assert json.loads(farm(env, "run", "ls", "--state", "succeeded", "--json").stdout)["runs"][0]["id"] == run_id

    wide = tmp_path / "wide.yaml"  # more jobs than the CLI follows at once (8): the rest wait their turn
    wide.write_text("name: wide\njobs:\n" + "".join(f"  - steps: [{{name: j{i}, run: 'echo out-{i}'}}]\n" for i in range(12)))
    lines = farm(env, "run", "submit", "-f", str(wide)).stdout.splitlines()
    assert all(any(line.endswith(f"] out-{i}") for line in lines) for i in range(12)), lines

    failing = tmp_path / "failing.yaml"
    failing.write_text("name: f\njobs:\n  - steps: [{name: ok, run: 'true'}]\n  - steps: [{name: bad, run: 'exit 3'}]\n")
    r = farm(env, "run", "submit", "--wait", str(failing), code=1)
    assert "failed (1 succeeded, 1 failed)" in r.stderr

    slow = tmp_path / "slow.yaml"
    slow.write_text("name: s\nsupersede: {group: pr-1}\njobs:\n" + "  - steps: [{name: s, run: 'sleep 60'}]\n" * 3)
    slow_id = farm(env, "run", "submit", str(slow)).stdout.strip()
    wait_for(lambda: json.loads(farm(env, "run", "get", slow_id, "--json").stdout)["state"] == "running", 30, what="the run started")
    r = farm(env, "run", "cancel", slow_id)
    assert f"run {slow_id}" in r.stdout
    wait_for(lambda: json.loads(farm(env, "run", "get", slow_id, "--json").stdout)["state"] == "cancelled", 10, what="cancelled")

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\njobs:\n  - steps: [{name: a, run: 'true'}]\n  - steps: [{name: a, run: 'true', timout_s: 3}]\n")
    r = farm(env, "run", "submit", str(bad), code=2)
    assert "jobs[1].steps[0].timout_s: unknown field" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(farm(env, "run", "ls", "--name", "b", "--json").stdout)["runs"] == []
    farm(env, "run", "ls", "--state", "nope", code=2)
