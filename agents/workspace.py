"""A job attempt's workspace: a fresh directory, the source checked out into it, and the
environment its steps see.

Invariants: one directory per (job, attempt), under the executor's workspace root and
nowhere else; the step environment is built from the job spec alone (plus farm's own
`CI`/`FARM_*` variables), never from farm's process environment, so steps cannot see
farm's credentials.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from farm.models import GitSource, JobSpec

from agents.runtimes.local import DEFAULT_PATH, run_process


def step_env(spec: JobSpec, job_id: str, attempt: int) -> dict[str, str]:
    return {
        "CI": "true",
        "FARM_JOB_ID": job_id,
        "FARM_ATTEMPT": str(attempt),
        "FARM_POOL": spec.pool,
        **spec.env,
    }


class Workspace:
    def __init__(self, root: Path, job_id: str, attempt: int) -> None:
        self.path = root / f"{job_id}-{attempt}"

    def create(self) -> Path:
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, mode=0o755)
        return self.path

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def checkout(self, git: GitSource, output: Callable[[bytes], None], stop: threading.Event) -> int:
        """Clone `git.url` into the workspace and check out `git.ref`; the exit code of the
        first git command that failed, else 0."""
        env = {"PATH": DEFAULT_PATH, "HOME": str(self.path), "GIT_TERMINAL_PROMPT": "0", "LANG": "C.UTF-8"}
        commands = [
            ["git", "clone", "--quiet", "--no-checkout", "--", git.url, "."],
            ["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", git.ref, "--"],
        ]
        for argv in commands:
            output(("$ " + " ".join(argv) + "\n").encode())
            code = run_process(argv, cwd=self.path, env=env, output=output, stop=stop)
            if code != 0:
                return code
        return 0
