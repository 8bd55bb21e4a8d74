"""Docker's errors at the runtimes' boundary: one mapping onto farm's error tree.

The docker SDK raises its own tree (`docker.errors.DockerException`: APIError, NotFound,
ImageNotFound, ...) and lets the transport's through (`requests` ConnectionError,
ReadTimeout, ...: a daemon that went away or stopped answering). Past a runtime, both are a
`RuntimeFailure`: the step could not be run at all, and the job fails with
`runtime_error`. `docker_errors` is that mapping; a block that means something else by a
docker error (a container already gone while removing it, a daemon not up yet while
waiting for it) catches `DOCKER_ERRORS` or the specific error itself, and says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker.errors
import requests.exceptions

from farm.errors import RuntimeFailure

# Everything a call through the docker SDK can raise because of the daemon or the way to it.
DOCKER_ERRORS: tuple[type[Exception], ...] = (docker.errors.DockerException, requests.exceptions.RequestException)


@contextmanager
def docker_errors(what: str, *, missing: str | None = None) -> Iterator[None]:
    """Turn a docker SDK or transport error raised in the block into RuntimeFailure("<what>: <error>").

    `missing`: the whole message when the daemon answers "not found" (no such image or
    container), which is the setup's fault and deserves plain words. A RuntimeFailure the
    block raises itself goes through unchanged."""
    try:
        yield
    except docker.errors.NotFound as e:
        raise RuntimeFailure(missing if missing is not None else f"{what}: {e}") from e
    except DOCKER_ERRORS as e:
        raise RuntimeFailure(f"{what}: {e}") from e
