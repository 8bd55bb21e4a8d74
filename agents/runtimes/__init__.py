"""Runtimes: where a step runs. `make_runtime` picks one by name from settings."""

from __future__ import annotations

from agents.runtimes.base import Runtime, StepContext
from farm.settings import Settings


def make_runtime(settings: Settings, executor_id: str = "") -> Runtime:
    if settings.executors.runtime == "dind":
        from agents.runtimes.dind import DindRuntime

        return DindRuntime(settings, executor_id)
    if settings.executors.runtime == "docker":
        from agents.runtimes.docker import DockerRuntime

        return DockerRuntime(settings.docker)
    if settings.executors.runtime == "sandbox":
        from agents.runtimes.sandbox import SandboxRuntime

        return SandboxRuntime(settings)
    if settings.executors.runtime == "noop":
        from agents.runtimes.noop import NoopRuntime

        return NoopRuntime()
    from agents.runtimes.local import LocalRuntime

    return LocalRuntime(kill_grace_s=settings.executors.kill_grace_s)


__all__ = ["Runtime", "StepContext", "make_runtime"]
