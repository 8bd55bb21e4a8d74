"""Pages of a sequence-scored index, newest first: how jobs and runs are listed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import redis

from farm.store.client import translated

T = TypeVar("T")


def newest_first(
    client: redis.Redis,
    index: str,
    *,
    limit: int,
    cursor: int | None,
    fetch: Callable[[list[str]], dict[str, T]],
    keep: Callable[[T], bool] | None = None,
    scan_max: int,
) -> tuple[list[T], int | None]:
    """Up to `limit` items of `index` (a zset of ids by submission sequence) below `cursor`,
    those `keep` accepts. `fetch` reads a batch of ids (an id it cannot find is left out: it
    was purged). The next cursor is None when nothing older is left. A filter scans at most
    `scan_max` ids per call, so a rare match costs a bounded amount of work per page."""
    top = "+inf" if cursor is None else f"({cursor}"
    batch = max(limit, 200) if keep else limit
    out: list[T] = []
    scanned = 0
    while scanned < scan_max:
        with translated():
            rows = client.zrevrangebyscore(index, top, "-inf", start=0, num=batch, withscores=True)
        if not rows:
            return out, None
        found = fetch([r[0] for r in rows])
        for item_id, seq in rows:
            scanned += 1
            item = found.get(item_id)
            if item is not None and (keep is None or keep(item)):
                out.append(item)
                if len(out) == limit:
                    return out, int(seq)
        top = f"({int(rows[-1][1])}"
    return out, int(top[1:])
