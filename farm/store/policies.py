"""Capacity policies per pool, versioned, with an audit trail of who changed what.

A change is one Lua step (policy_put): it checks the expected version (optimistic
concurrency: two admins editing at once cannot silently overwrite each other), bumps the
version and records before/after in the pool's audit list. The autoscaler's decisions are
kept beside them (newest first, capped) so operators can see why a pool has its size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from farm.errors import Conflict
from farm.models import rfc3339
from farm.store.client import translated
from farm.store.keys import Keys
from farm.store.lua import Scripts

DECISIONS_KEPT = 1000


@dataclass(frozen=True)
class StoredPolicy:
    pool: str
    version: int
    policy: dict[str, Any] | None
    by: str | None
    at: str | None
    seeded: int = 0  # demand-history seeds so far (farm.store.history): each makes the autoscaler learn again


class PolicyStore:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()
        self._scripts = Scripts(client, self.keys)

    def get(self, pool: str) -> StoredPolicy:
        with translated():
            h = self.client.hgetall(self.keys.policy(pool))
        seeded = int(h.get("seeded", 0))
        if "version" not in h:  # none set (a seed may come first)
            return StoredPolicy(pool, 0, None, None, None, seeded)
        return StoredPolicy(pool, int(h["version"]), json.loads(h["policy"]), h.get("by"), rfc3339(int(h["at"])), seeded)

    def put(self, pool: str, policy: dict[str, Any], *, by: str, expected_version: int | None = None) -> StoredPolicy:
        with translated():
            outcome, version = self._scripts.call(
                "policy_put", pool, json.dumps(policy), by, "" if expected_version is None else expected_version
            )
        if outcome == "conflict":
            raise Conflict(f"pool {pool} policy is at version {version}, not {expected_version}")
        return self.get(pool)

    def seed(self, policies: dict[str, Any]) -> None:
        """Policies from farm.yaml become each pool's first version; a pool whose policy was
        already set (through the API, or an earlier start) keeps it."""
        for pool, policy in policies.items():
            if self.get(pool).version == 0:
                try:
                    self.put(pool, policy.model_dump(mode="json"), by="farm.yaml", expected_version=0)
                except Conflict:
                    pass  # another replica seeded it first

    def audit_trail(self, pool: str, limit: int = 100) -> list[dict[str, Any]]:
        """The pool's policy changes and seeds, newest first (`GET /v1/pools/{name}/policy/history`)."""
        with translated():
            rows = self.client.lrange(self.keys.policy_audit(pool), 0, limit - 1)
        out = []
        for row in rows:
            entry = json.loads(row)
            entry["at"] = rfc3339(int(entry["at"]))
            out.append(entry)
        return out

    def record_decision(self, pool: str, decision: dict[str, Any]) -> None:
        with translated():
            pipe = self.client.pipeline(transaction=True)
            pipe.lpush(self.keys.decisions(pool), json.dumps(decision))
            pipe.ltrim(self.keys.decisions(pool), 0, DECISIONS_KEPT - 1)
            pipe.execute()

    def count_turn(self, pool: str, kind: str, action: str, *, desired: int, low: int, high: int) -> None:
        """An autoscaler turn in the pool's stats (read by /metrics in every API replica): its
        action, and the desired size with the policy's bounds."""
        stats = self.keys.stats(pool)
        with translated():
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(stats, f"autoscaler_decisions_total:{kind}:{action}", 1)
            pipe.hset(stats, mapping={"desired_executors": desired, "min_executors": low, "max_executors": high})
            pipe.execute()

    def count_failed_turn(self, pool: str) -> None:
        with translated():
            self.client.hincrby(self.keys.stats(pool), "autoscaler_errors_total", 1)

    def decisions(self, pool: str, limit: int = 100) -> list[dict[str, Any]]:
        with translated():
            return [json.loads(r) for r in self.client.lrange(self.keys.decisions(pool), 0, limit - 1)]
