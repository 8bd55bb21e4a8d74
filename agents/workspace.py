"""A job attempt's workspace: a fresh directory, the source checked out into it, and the
environment its steps see.

Invariants: one directory per (job, attempt), under the executor's workspace root and
nowhere else; the step environment is built from the job spec alone (plus farm's own
`CI`/`FARM_*` variables), never from farm's process environment, so steps cannot see
farm's credentials.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from agents.containment import Unit
from agents.runtimes.local import DEFAULT_PATH, run_process
from farm.models import GitSource, JobSpec
from farm.permissions import git_protocol
from farm.settings import Settings


def workspace_root(settings: Settings) -> Path:
    """Where executors keep their jobs' workspaces: <root>/<executor id>/<job>-<attempt>."""
    return Path(settings.data_dir) / "workspaces"


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

    def collect(self, patterns: list[str], *, max_files: int) -> tuple[list[tuple[str, Path]], list[str]]:
        """Files matching the glob patterns, as (name relative to the workspace, path), and
        notes on what was refused. Only regular files inside the workspace count: a symlink
        is followed only when it resolves inside the workspace; devices, fifos and
        directories are skipped. What lies outside is never named in a note (farm globs as
        root: a step's link to /root must not list /root in the log)."""
        root = self.path.resolve()
        found: dict[str, Path] = {}
        notes: list[str] = []
        outside = 0
        for pattern in patterns:
            matches = sorted(root.glob(pattern))
            if not matches:
                notes.append(f"artifact pattern {pattern!r} matched nothing")
            for path in matches:
                real = path.resolve()
                if not real.is_relative_to(root):
                    outside += 1
                elif real.is_file():
                    found.setdefault(path.relative_to(root).as_posix(), real)
        if outside:
            notes.append(f"{outside} artifact match(es) lead outside the workspace through a link; skipped")
        if len(found) > max_files:
            notes.append(f"{len(found)} artifacts matched; only the first {max_files} are kept")
        return sorted(found.items())[:max_files], notes

    def checkout(self, git: GitSource, output: Callable[[bytes], None], stop: threading.Event, unit: Unit | None = None) -> int:
        """Clone `git.url` into the workspace and check out `git.ref`; the exit code of the
        first git command that failed, else 0."""
        # git may use only the transport the job's URL was admitted with (farm.permissions):
        # no redirect, alternate or submodule into file:// or ext::.
        # ssh never offers farm's own keys or agent (they would be every tenant's).
        env = {"PATH": DEFAULT_PATH, "HOME": str(self.path), "GIT_TERMINAL_PROMPT": "0", "LANG": "C.UTF-8",
               "GIT_ALLOW_PROTOCOL": git_protocol(git.url), "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityFile=none -o IdentityAgent=none"}  # fmt: skip
        commands = [
            ["git", "clone", "--quiet", "--no-checkout", "--", git.url, "."],
            ["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", git.ref, "--"],
        ]
        for argv in commands:
            output(("$ " + " ".join(argv) + "\n").encode())
            code = run_process(argv, cwd=self.path, env=env, output=output, stop=stop, unit=unit)
            if code != 0:
                return code
        return 0


def give(root: Path, owner: tuple[int, int]) -> int:
    """Make `owner` own everything under root (links themselves, never what they point at),
    except what is mounted there (warm cache overlays carry their owner already). Returns
    how many entries it changed."""
    uid, gid = owner
    os.lchown(root, uid, gid)
    n = 1
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d))]
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)
            n += 1
    return n


def sweep(root: Path, is_current: Callable[[str, int], bool], *, keep_for_s: float, now: float) -> list[Path]:
    """Remove workspaces under `root` (`<root>/<executor>/<job>-<attempt>`) that no running
    attempt owns: at once, or once older than keep_for_s when workspaces are kept. This
    also clears what a crashed executor left behind, cache upper layers (`.layers`) included.
    Returns what it removed."""
    removed = []
    for path in root.glob("*/*-*"):
        job_id, _, attempt = path.name.removesuffix(".layers").rpartition("-")
        if not attempt.isdigit() or not path.is_dir():
            continue
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if is_current(job_id, int(attempt)) or age < keep_for_s:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
