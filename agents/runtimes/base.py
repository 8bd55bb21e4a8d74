"""The runtime seam: how one step of a job runs. Small on purpose.

A runtime runs a step to completion and returns its exit code, or kills it as soon as
`ctx.stop` is set (cancel, timeout, lost lease) and returns then. It raises RuntimeFailure
when it cannot run the step at all (no such image, daemon unreachable): that is farm's
fault or the setup's, not the build's, and the job fails with `runtime_error`.

A runtime that can also build images (docker, dind) is an `ImageBuilder` too; an image job
on any other runtime fails with a note saying so.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from agents.containment import Unit
from farm.models import ImageBuild, ImageResult, Step


@dataclass(frozen=True)
class StepContext:
    job_id: str
    workspace: Path
    env: dict[str, str]
    output: Callable[[bytes], None]
    stop: threading.Event
    network: str = "none"
    attempt: int = 1
    unit: Unit | None = None  # the attempt's containment on this node (agents/containment.py)
    # Whose job this is: what a runtime keeps between jobs (layer stores, build caches) is
    # kept apart by tenant and by trust tier ("protected" | "unprotected", farm/cache/scope.py).
    tenant: str = "-"
    tier: str = "unprotected"


class Runtime(Protocol):
    name: str
    uses_workspace: bool  # whether steps need the job's workspace directory
    # Whether mounts made in the workspace after prepare() (warm cache overlays) reach the
    # steps; a daemon in its own mount namespace (DinD) may not see them.
    sees_new_mounts: bool
    # The uid:gid steps run as when farm (root) must hand them the workspace: the attempt
    # gives them its files (agents/workspace.py `give`) before the first step. None: steps
    # run as farm's own user, or as root.
    step_owner: tuple[int, int] | None

    def prepare(self) -> None:
        """Check the runtime can work (daemon reachable...); raise RuntimeFailure if not."""

    def run_step(self, step: Step, ctx: StepContext) -> int:
        """Run one step; its exit code (negative: killed by that signal)."""

    def end_job(self, job_id: str) -> None:
        """The job's attempt is over: remove what its steps left running."""

    def close(self) -> None:
        """Release what prepare() took."""


@runtime_checkable
class ImageBuilder(Protocol):
    """A runtime that builds images (an image job's `build`): `isinstance(runtime, ImageBuilder)`."""

    def build_image(self, build: ImageBuild, workspace: Path, ctx: StepContext, registry: str | None) -> ImageResult:
        """Build from `workspace / build.context`, the output into ctx.output; tag, and push
        to `registry` if the build asks. Abandons the build as soon as ctx.stop is set.
        Raises RuntimeFailure when the build fails or cannot be run."""
        ...
