"""A pool's demand stream, as the autoscaler reads it: the arrivals (queued_at), the
queue waits of starts and how long the attempts that ended ran, since its last turn. The enqueue and claim scripts write it (lib.lua
`demand`), capped at 100k entries a pool."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from farm.store.client import translated
from farm.store.keys import Keys


@dataclass(frozen=True)
class Demand:
    arrivals: tuple[float, ...]  # queued_at, in seconds of the server's clock
    waits: tuple[float, ...]  # queue waits of the starts, in seconds
    durations: tuple[float, ...]  # how long the attempts that ended ran, in seconds
    cursor: str  # where the next read goes on from


class DemandStream:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client, self.keys = client, keys

    def since(self, pool: str, cursor: str | None) -> Demand:
        """What came after `cursor`; with None (a first turn), nothing, and a cursor at the
        stream's end: the past has no snapshot of the pool to go with it."""
        key = self.keys.demand(pool)
        with translated():
            if cursor is None:
                last = self.client.xrevrange(key, count=1)
                return Demand((), (), (), last[0][0] if last else "0-0")
            rows = self.client.xrange(key, min=f"({cursor}", count=100_000)
        return Demand(
            tuple(int(f["a"]) / 1000 for _, f in rows if "a" in f),
            tuple(int(f["w"]) / 1000 for _, f in rows if "w" in f),
            tuple(int(f["d"]) / 1000 for _, f in rows if "d" in f),
            rows[-1][0] if rows else cursor,
        )
