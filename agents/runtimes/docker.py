"""The `docker` runtime (DooD): each step in a container on the host's Docker daemon.

What DooD exposes: farm itself holds the host daemon's socket, which is root on that host.
Steps never get the socket: each runs in a container of the step's `image` with only the
job's workspace mounted at /workspace, `no-new-privileges`, every capability dropped, no
network unless the job asks for the host's, CPU and memory limits, and farm's own uid:gid
(so workspace files stay farm's). The container is removed afterwards, whatever happened.
Images are never pulled: they must already be on the daemon (there is no registry here).
"""

from __future__ import annotations

import os
import threading

import docker
import docker.errors
import requests.exceptions

from agents.runtimes.base import StepContext
from farm.errors import RuntimeFailure
from farm.models import Step
from farm.settings import DockerSettings

WORKDIR = "/workspace"


class DockerRuntime:
    name = "docker"
    uses_workspace = True

    def __init__(self, settings: DockerSettings) -> None:
        self.settings = settings
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=60)
            except docker.errors.DockerException as e:
                raise RuntimeFailure(f"docker daemon unreachable: {e}") from e
        return self._client

    def prepare(self) -> None:
        try:
            self.client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
            raise RuntimeFailure(f"docker daemon unreachable: {e}") from e

    def _user(self) -> str | None:
        if self.settings.user == "auto":
            return f"{os.getuid()}:{os.getgid()}"
        return self.settings.user or None

    def run_step(self, step: Step, ctx: StepContext) -> int:
        image = step.image or self.settings.default_image
        try:
            container = self.client.containers.create(
                image,
                command=["/bin/sh", "-c", step.run],
                working_dir=WORKDIR,
                volumes={str(ctx.workspace): {"bind": WORKDIR, "mode": "rw"}},
                environment={"HOME": WORKDIR, **ctx.env},
                network_mode="host" if ctx.network == "host" else "none",
                nano_cpus=int(self.settings.cpus * 1e9) if self.settings.cpus else None,
                mem_limit=self.settings.memory,
                security_opt=["no-new-privileges"],
                cap_drop=["ALL"],
                user=self._user(),
                labels={"farm.job": ctx.job_id},
                detach=True,
            )
        except docker.errors.ImageNotFound as e:
            raise RuntimeFailure(f"image {image!r} is not on the docker daemon (farm does not pull images)") from e
        except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
            raise RuntimeFailure(f"cannot create a container of {image!r}: {e}") from e
        try:
            return self._run(container, ctx)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
            raise RuntimeFailure(f"docker failed while running the step: {e}") from e
        finally:
            try:
                container.remove(force=True)
            except docker.errors.DockerException:
                pass

    def _run(self, container, ctx: StepContext) -> int:  # type: ignore[no-untyped-def]
        container.start()
        result: dict[str, int] = {}

        def pump() -> None:
            for chunk in container.logs(stream=True, follow=True):
                ctx.output(chunk)

        def wait() -> None:
            result["code"] = container.wait()["StatusCode"]

        reader = threading.Thread(target=pump, name="container-output", daemon=True)
        waiter = threading.Thread(target=wait, name="container-wait", daemon=True)
        reader.start()
        waiter.start()
        while waiter.is_alive():
            if ctx.stop.wait(0.02):
                try:
                    container.kill()
                except docker.errors.APIError:
                    pass  # already exited
                waiter.join(10)
                break
        reader.join(2.0)
        return result.get("code", -9)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
