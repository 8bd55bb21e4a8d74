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

# The root of redis-py's errors, for the API's last-resort handler (the API imports no redis).
RedisError = redis.RedisError

# What a server that is up but refuses the command says, by the start of its reply.
_REFUSALS = {
    "MISCONF": "redis cannot persist writes (its disk is full or failing), so it refuses them",
    "READONLY": "redis is a read-only replica here",
    "BUSY": "redis is busy running a script",
    "LOADING": "redis is loading its data",
}


def store_error(e: BaseException) -> StoreUnavailable | None:
    """A redis-py error as farm's StoreUnavailable (with the reason a caller can act on), or
    None when `e` is not the store failing (a bug, bad input): the one mapping, for
    `translated` and for the API's last-resort handler."""
    if isinstance(e, (redis.ConnectionError, redis.TimeoutError)):
        return StoreUnavailable(f"redis unreachable: {e}")
    if isinstance(e, redis.exceptions.OutOfMemoryError):
        return StoreUnavailable(f"redis is full (maxmemory): {e}")
    if isinstance(e, redis.exceptions.ResponseError):
        text = str(e)
        for marker, why in _REFUSALS.items():
            if text.startswith(marker) or f" {marker} " in text or f"-{marker}" in text:
                return StoreUnavailable(f"{why}: {text[:200]}")
    return None


@contextmanager
def translated() -> Iterator[None]:
    """Map redis-py's errors of a store that is away or refusing onto StoreUnavailable."""
    try:
        yield
    except redis.RedisError as e:
        mapped = store_error(e)
        if mapped is None:
            raise
        raise mapped from e


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
