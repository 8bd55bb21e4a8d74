"""What a /metrics scrape reads from Redis: every pool's stats hash (its runs' too) and
capacity policy, and the fencing count, in one round trip (parsed by farm.store.stats)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from farm.errors import StoreUnavailable
from farm.store.client import translated
from farm.store.keys import Keys
from farm.store.stats import PoolStats, parse


@dataclass(frozen=True)
class Scrape:
    """What one /metrics scrape reads from Redis, in one round trip."""

    pools: list[tuple[PoolStats, dict[str, Any] | None]]  # each pool's stats and its policy as stored (None: no policy)
    fencing: int  # jobs waiting for their node's fence


class StatsBook:
    """The stats hashes, read for /metrics; any Redis error is StoreUnavailable, so the
    scrape reports farm_redis_up 0 instead of failing."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client, self.keys = client, keys

    def scrape(self, pools: list[str]) -> Scrape:
        try:
            with translated():
                pipe = self.client.pipeline(transaction=False)
                for pool in pools:
                    pipe.hgetall(self.keys.stats(pool))
                    pipe.hget(self.keys.policy(pool), "policy")
                pipe.zcard(self.keys.fencing)
                *raw, fencing = pipe.execute()
        except redis.RedisError as e:  # a refused command too (NOAUTH, a wrong type): the scrape says Redis is away
            raise StoreUnavailable(f"redis: {e}") from e
        policies = [(json.loads(p) or None) if p else None for p in raw[1::2]]
        return Scrape([(parse(h), p) for h, p in zip(raw[::2], policies, strict=True)], int(fencing))
