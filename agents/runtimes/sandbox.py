"""The `sandbox` runtime: untrusted steps under gVisor, untrusted image builds rootless.

A step runs as in the docker runtime (agents/runtimes/docker.py) on the node's daemon, but
under runsc, gVisor's OCI runtime: the step's system calls are served by gVisor's own
kernel (the Sentry) in user space, so a kernel bug reachable from a container is not
reachable from here, and what the step sees of /proc, mounts and devices is gVisor's. On
top of what docker already does (no capabilities, `no-new-privileges`, CPU/memory/pids
limits, the job's workspace only), a sandboxed step always runs as an unprivileged uid
(`sandbox.user`, never root whatever `docker.user` says), on a read-only root filesystem
with a bounded tmpfs /tmp, and with no network: gVisor's own loopback only. A tenant
allowed `network: host` gets the host's network through `sandbox.host_network_runtime`.

Image builds never touch a daemon: they run rootless, in a user namespace of an
unprivileged user (agents/runtimes/rootless.py).

runsc must be registered with the daemon (dockerd's `runtimes`), and the build user must
exist with its subordinate ids; `prepare` runs a probe container under runsc and a probe
build, and refuses to start, saying why, where either cannot run.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from agents.runtimes.base import StepContext
from agents.runtimes.docker import DockerRuntime
from agents.runtimes.errors import docker_errors
from farm.errors import RuntimeFailure
from farm.models import ImageBuild, ImageResult, Step
from farm.settings import Settings

PROBE_TIMEOUT_S = 30.0


class SandboxRuntime(DockerRuntime):
    name = "sandbox"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.docker)
        self.sandbox = settings.sandbox
        self.farm_settings = settings
        uid, gid = (int(x) for x in self.sandbox.user.split(":"))
        self.user, self.step_owner = f"{uid}:{gid}", (uid, gid)

    def prepare(self) -> None:
        """The daemon answers, knows runsc, and runsc runs a container: else a RuntimeFailure
        that says which of these is missing."""
        super().prepare()
        with docker_errors("docker daemon unreachable"):
            runtimes = self.client.info().get("Runtimes", {})
        for name in (self.sandbox.docker_runtime, self.sandbox.host_network_runtime):
            if name not in runtimes:
                raise RuntimeFailure(
                    f"the sandbox runtime needs gVisor: the docker daemon has no runtime {name!r} (it has "
                    f"{', '.join(sorted(runtimes)) or 'none'}); install runsc and register it in dockerd's "
                    f"daemon.json, see docs/OPERATIONS.md"
                )
        self._probe()
        from agents.runtimes.rootless import check

        # Rootless image builds: the user, its id ranges, the tools, a real user namespace (~0.5 s).
        self.build_driver = check(self.farm_settings)

    def _probe(self) -> None:
        image = self.settings.default_image
        t0 = time.monotonic()
        with docker_errors(f"cannot run a gVisor probe container of {image!r}", missing=f"image {image!r} is not on the docker daemon"):
            container = self.client.containers.create(
                image, entrypoint=["/bin/sh", "-c"], command=["true"], runtime=self.sandbox.docker_runtime,
                network_mode="none", user=self.user, cap_drop=["ALL"], labels={"farm.probe": "sandbox"},
            )  # fmt: skip
        try:
            with docker_errors("gVisor probe"):
                container.start()
                code = container.wait(timeout=PROBE_TIMEOUT_S)["StatusCode"]
                out = container.logs().decode(errors="replace").strip()
        except RuntimeFailure as e:
            raise RuntimeFailure(f"runsc cannot run a container on this node: {e}") from e
        finally:
            self._remove_quietly(container.id)
        if code != 0:
            raise RuntimeFailure(f"runsc cannot run a container on this node (exit {code}): {out[-500:]}")
        self.probe_s = time.monotonic() - t0

    def _options(self, step: Step, ctx: StepContext) -> dict[str, object]:
        """As docker's, under runsc, never root (self.user), always read-only with a bounded /tmp."""
        runtime = self.sandbox.host_network_runtime if ctx.network == "host" else self.sandbox.docker_runtime
        return {**super()._options(step, ctx), "runtime": runtime, "read_only": True,
                "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={self.sandbox.tmp_bytes}"}}  # fmt: skip

    @functools.cached_property
    def builder(self) -> Any:
        from agents.runtimes.rootless import RootlessBuilder

        return RootlessBuilder(self.farm_settings, self.client)

    def build_image(self, build: ImageBuild, workspace: Path, ctx: StepContext, registry: str | None) -> ImageResult:
        """Rootless, in a user namespace, from the layer store of the job's tenant and tier."""
        return self.builder.build_image(build, workspace, ctx, registry)
