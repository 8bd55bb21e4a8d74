"""What a /metrics scrape reads from Redis: every pool's stats hash and policy kind, the
runs' stats and the fencing count, in one round trip (parsed by farm.store.stats)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from farm.errors import StoreUnavailable
from farm.store.client import translated
from farm.store.keys import Keys
from farm.store.stats import PoolStats, RunStats, parse, parse_runs


@dataclass(frozen=True)
class Scrape:
    """What one /metrics scrape reads from Redis, in one round trip."""

    pools: list[tuple[PoolStats, str | None]]  # each pool's stats and its policy's kind (None: no policy)
    runs: RunStats
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
                pipe.hgetall(self.keys.runstats)
                pipe.zcard(self.keys.fencing)
                *raw, runs, fencing = pipe.execute()
        except redis.RedisError as e:  # a refused command too (NOAUTH, a wrong type): the scrape says Redis is away
            raise StoreUnavailable(f"redis: {e}") from e
        kinds = [(json.loads(p) or {}).get("kind") if p else None for p in raw[1::2]]
        return Scrape([(parse(h), k) for h, k in zip(raw[::2], kinds, strict=True)], parse_runs(runs), int(fencing))
