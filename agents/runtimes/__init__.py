"""Runtimes: where a step runs. `make_runtime` picks one by name from settings.

    base         the runtime seam (`Runtime`, `StepContext`): how one step of a job runs
    local        `local`: each step a `/bin/sh -c` subprocess in the job's workspace
    docker       `docker` (DooD): each step in a container on the host's Docker daemon
    dind         `dind`: each executor owns a private Docker daemon
    sandbox      `sandbox`: untrusted steps under gVisor, untrusted image builds rootless
    noop         `noop`: every step exits 0 at once
    rootless     rootless image builds: buildah as an unprivileged user
    layerstores  a pool's DinD layer stores on one machine, one scope each, leased by one daemon at a time
    follower     a step container's output, followed into the job log through a stream that breaks
    errors       Docker's errors at the runtimes' boundary, mapped onto farm's error tree
"""

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
