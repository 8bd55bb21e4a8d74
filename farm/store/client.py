"""The one place farm makes Redis clients, and maps redis-py's errors onto farm's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from farm.errors import StoreUnavailable


@contextmanager
def translated() -> Iterator[None]:
    """Map redis-py's connection errors onto the farm error tree."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise StoreUnavailable(f"redis unreachable: {e}") from e
    except redis.exceptions.OutOfMemoryError as e:
        raise StoreUnavailable(f"redis is full (maxmemory): {e}") from e


def _options(socket_timeout: float) -> dict[str, object]:
    return {"decode_responses": True, "health_check_interval": 30, "socket_keepalive": True,
            "retry_on_error": [redis.ConnectionError], "socket_timeout": socket_timeout, "socket_connect_timeout": 5.0}  # fmt: skip


def connect(url: str, *, socket_timeout: float = 10.0) -> redis.Redis:
    """A client that returns str and survives brief server restarts (the embedded server
    restarts in place; executors must keep going). No call waits on the server longer than
    `socket_timeout` (a blocking command's own timeout must stay under it), so a stuck
    server never holds a thread for good."""
    return redis.Redis.from_url(url, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=5), **_options(socket_timeout))


def connect_async(url: str, *, socket_timeout: float = 10.0) -> redis.asyncio.Redis:
    """The asyncio twin of `connect`, for the API's event loop."""
    return redis.asyncio.Redis.from_url(
        url, retry=AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), retries=5), **_options(socket_timeout)
    )
