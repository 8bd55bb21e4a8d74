"""The cache index in Redis: which entry a job restores, committing a saved one, listing,
deleting and evicting, and the cache's counters in the pool's stats. Every change is one Lua step (cache_lookup, cache_commit, cache_drop);
blob files are deleted only after the index no longer refers to them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from farm.cache.archive import Saved
from farm.cache.blobs import BlobStore
from farm.cache.scope import Scope, Tier
from farm.models import rfc3339
from farm.store.client import translated
from farm.store.keys import Keys
from farm.store.lua import Scripts


@dataclass(frozen=True)
class Match:
    entry_id: str
    key: str
    exact: bool
    manifest: str
    bytes: int


@dataclass(frozen=True)
class Entry:
    id: str
    scope: Scope
    key: str
    bytes: int
    created: str
    used: str

    def shown(self) -> dict[str, Any]:
        s = self.scope
        return {"id": self.id, "key": self.key, "repo": s.repo, "tier": s.tier.value, "ref": s.ref, "bytes": self.bytes,
                "created_at": self.created, "used_at": self.used}  # fmt: skip


class CacheIndex:
    def __init__(self, client: redis.Redis, blobs: BlobStore, keys: Keys | None = None) -> None:
        self.client = client
        self.blobs = blobs
        self.keys = keys or Keys()
        self._scripts = Scripts(client, self.keys)

    def _now(self) -> int:
        s, us = self.client.time()
        return s * 1000 + us // 1000

    def lookup(self, scope: Scope, key: str, restore_keys: list[str]) -> Match | None:
        with translated():
            got = self._scripts.call("cache_lookup", scope.tenant, scope.repo, scope.tier.value, scope.ref, self._now(),
                                     key, *restore_keys)  # fmt: skip
            if not got:
                return None
            entry_id, matched, how = got
            manifest, size = self.client.hmget(self.keys.cache_entry(entry_id), "manifest", "bytes")
        if manifest is None:
            return None  # dropped in between
        return Match(entry_id, matched, how == "exact", manifest, int(size))

    def exists(self, scope: Scope, key: str) -> bool:
        prefix = f"{key}\0{scope.tier.value}\0{scope.ref}\0"
        with translated():
            return bool(self.client.zrangebylex(self.keys.cache_keys(scope.tenant, scope.repo), f"[{prefix}", f"[{prefix}\xff", 0, 1))

    def commit(self, scope: Scope, key: str, saved: Saved) -> tuple[bool, str]:
        """(True, id) when this save made the entry; (False, id of the one that won)."""
        entry_id = uuid.uuid4().hex
        with translated():
            outcome, winner = self._scripts.call(
                "cache_commit", scope.tenant, scope.repo, scope.tier.value, scope.ref, key, entry_id, saved.manifest,
                saved.bytes, json.dumps(saved.blobs), self._now(),
            )  # fmt: skip
        return outcome == "ok", winner

    def _drop(self, *args: Any) -> list[str]:
        with translated():
            got = self._scripts.call("cache_drop", *args)
        sep = got.index("")
        for digest in got[sep + 1 :]:
            self.blobs.delete(digest)
        return got[:sep]

    def release(self, blobs: list[str]) -> None:
        """Delete blobs a lost save wrote that no committed entry refers to."""
        with translated():
            refs = self.client.hmget(self.keys.cache_refs, blobs) if blobs else []
        for digest, count in zip(blobs, refs, strict=True):
            if count is None:
                self.blobs.delete(digest)

    def delete(self, ids: list[str]) -> list[str]:
        return self._drop("ids", *ids) if ids else []

    def evict(self, tenant: str, quota: int, reserved: int) -> list[str]:
        """Drop the tenant's least recently used entries until it is within quota, never
        taking the protected tier below its reserve."""
        return self._drop("evict", tenant, quota, reserved)

    def entries(self, tenant: str) -> list[Entry]:
        with translated():
            ids = self.client.zrevrange(self.keys.cache_lru(tenant), 0, -1)
            pipe = self.client.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(self.keys.cache_entry(i))
            rows = pipe.execute()
        out = []
        for i, h in zip(ids, rows, strict=True):
            if h:
                scope = Scope(h["tenant"], h["repo"], Tier(h["tier"]), h["ref"])
                out.append(Entry(i, scope, h["key"], int(h["bytes"]), rfc3339(int(h["created"])) or "", rfc3339(int(h["used"])) or ""))
        return out

    def bytes_used(self, tenant: str) -> dict[str, int]:
        with translated():
            h = self.client.hgetall(self.keys.cache_bytes(tenant))
        return {t.value: int(h.get(t.value, 0)) for t in Tier}

    def count(self, pool: str, *fields: str, **amounts: float) -> None:
        """Add 1 to each field and each amount to its field of the pool's stats hash (read by
        /metrics), in one round trip."""
        stats = self.keys.stats(pool)
        with translated():
            pipe = self.client.pipeline(transaction=False)
            for name in fields:
                pipe.hincrby(stats, name, 1)
            for name, n in amounts.items():
                (pipe.hincrbyfloat if isinstance(n, float) else pipe.hincrby)(stats, name, n)
            pipe.execute()
