"""redis-py's errors as farm's: the one adapter between them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

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
