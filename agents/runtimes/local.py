"""The `local` runtime: each step a `/bin/sh -c` subprocess in the job's workspace.

Each step runs in its attempt's cgroup (agents/containment.py) and in a session of its own.
On stop its session gets SIGTERM, then everything in the cgroup SIGKILL; when it exits,
whatever it left running is killed the same way, however it detached (`setsid`, a double
fork), so a step cannot leave processes behind. It runs as farm's own user, beside farm's
data: for trusted work and single-machine use only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from agents.containment import Unit
from agents.runtimes.base import StepContext
from farm.errors import RuntimeFailure
from farm.models import Step

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    output: Callable[[bytes], None],
    stop: threading.Event,
    kill_grace_s: float = 0.5,
    unit: Unit | None = None,
) -> int:
    """Run argv in its own session (and the attempt's cgroup, with a unit), streaming
    stdout+stderr to `output`; when `stop` is set, SIGTERM its group, then SIGKILL after
    kill_grace_s. Returns the exit code. Raises Fenced when the attempt was fenced."""
    popen = {"cwd": cwd, "env": env, "stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    try:
        proc = unit.spawn(argv, **popen) if unit is not None else subprocess.Popen(list(argv), start_new_session=True, **popen)
    except OSError as e:
        raise RuntimeFailure(f"cannot start {argv[0]}: {e}") from e
    assert proc.stdout is not None
    fd = proc.stdout.fileno()

    def pump() -> None:
        while chunk := os.read(fd, 65536):
            output(chunk)

    reader = threading.Thread(target=pump, name="step-output", daemon=True)
    reader.start()
    killed = False
    while True:
        try:
            proc.wait(0.02)  # returns the moment the step exits (polling stop instead cost up to 20 ms a step)
            break
        except subprocess.TimeoutExpired:
            pass
        if stop.is_set() and not killed:
            killed = True
            _killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(kill_grace_s)
            except subprocess.TimeoutExpired:
                pass
            _killpg(proc.pid, signal.SIGKILL)
            if unit is not None:
                unit.kill()
    # Whatever the step started and left behind goes with it.
    _killpg(proc.pid, signal.SIGKILL)
    if unit is not None:
        unit.kill()
    reader.join(2.0)
    proc.stdout.close()
    return proc.returncode


class LocalRuntime:
    name = "local"
    uses_workspace = True
    sees_new_mounts = True
    step_owner = None  # steps run as farm's own user

    def __init__(self, *, kill_grace_s: float = 0.5) -> None:
        self.kill_grace_s = kill_grace_s

    def prepare(self) -> None:
        if not os.access("/bin/sh", os.X_OK):
            raise RuntimeFailure("/bin/sh is missing")

    def run_step(self, step: Step, ctx: StepContext) -> int:
        env = {"PATH": DEFAULT_PATH, "HOME": str(ctx.workspace), "LANG": "C.UTF-8", **ctx.env}
        return run_process(
            ["/bin/sh", "-c", step.run],
            cwd=ctx.workspace,
            env=env,
            output=ctx.output,
            stop=ctx.stop,
            kill_grace_s=self.kill_grace_s,
            unit=ctx.unit,
        )

    def end_job(self, job_id: str) -> None:
        pass  # each step's leftovers are killed when it ends; the attempt's cgroup when it ends

    def close(self) -> None:
        pass
