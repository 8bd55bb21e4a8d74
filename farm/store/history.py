"""Each pool's demand history by hour (farm.autoscale.demand), kept at `{p}history:{pool}`: one hash
field an hour, its JSON. The autoscaler writes the hours it sees and trims those older than
`autoscaler.history_weeks`; a seed (`POST /v1/pools/{name}/policy/seed`) writes a trace's
hours in one step with its audit entry and a bump of the policy's `seeded` count, which the
autoscaler takes as its cue to learn again. A seed sent in parts is one seed: one entry, one
bump, with the last part.

`jobs_by_hour` (what GET /v1/pools/{name}/history shows) parses only the hours whose text
changed since it last read them: a digest of each hour's text is kept with its count, for
at most `cache_hours` hours (the least recently read go first)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import redis

from farm.autoscale.demand import HistoryError, Hour
from farm.store.client import translated
from farm.store.keys import Keys

log = logging.getLogger("farm.history")

CACHE_HOURS = 20_000  # hours whose count `jobs_by_hour` keeps (some 8 MB): eight weeks of 15 pools


class DemandHistory:
    def __init__(self, client: redis.Redis, keys: Keys | None = None, *, cache_hours: int = CACHE_HOURS) -> None:
        self.client = client  # decodes replies to str
        self.keys = keys or Keys()
        self.cache_hours = cache_hours
        self._counts: OrderedDict[tuple[str, str], tuple[bytes, int | None]] = OrderedDict()  # (pool, hour): (digest, jobs)
        self._lock = threading.Lock()  # the API reads from its worker threads

    def hours(self, pool: str) -> dict[int, Hour]:
        """Every hour kept; one that is not well formed (written by hand, or by another farm)
        is left out, with a warning."""
        with translated():
            raw = self.client.hgetall(self.keys.demand_history(pool))
        hours = ((field, _read(pool, field, text)) for field, text in raw.items())
        return {int(field): hour for field, hour in hours if hour is not None}

    def jobs_by_hour(self, pool: str) -> dict[int, int]:
        """The jobs of every hour kept (one not well formed left out, as `hours` leaves it):
        an hour whose text is the same as when last read is not parsed again."""
        with translated():
            raw = self.client.hgetall(self.keys.demand_history(pool))
        digests = {field: hashlib.blake2b(text.encode(), digest_size=16).digest() for field, text in raw.items()}
        with self._lock:
            known = {f: c[1] for f, d in digests.items() if (c := self._counts.get((pool, f))) is not None and c[0] == d}
        fresh = {f: (None if (hour := _read(pool, f, raw[f])) is None else hour.jobs) for f in digests if f not in known}
        with self._lock:
            for field, digest in digests.items():
                key = (pool, field)
                if field in fresh:
                    self._counts[key] = (digest, fresh[field])
                if key in self._counts:
                    self._counts.move_to_end(key)
            while len(self._counts) > self.cache_hours:
                self._counts.popitem(last=False)
        return {int(f): n for f, n in (known | fresh).items() if n is not None}

    def get(self, pool: str, hour: int) -> Hour | None:
        with translated():
            text = self.client.hget(self.keys.demand_history(pool), str(hour))
        return None if text is None else _read(pool, str(hour), text)

    def put(self, pool: str, hours: Mapping[int, Hour]) -> None:
        if hours:
            with translated():
                self.client.hset(self.keys.demand_history(pool), mapping=_docs(hours))

    def trim(self, pool: str, oldest: int) -> int:
        """Drop the hours before `oldest`; how many went."""
        key = self.keys.demand_history(pool)
        with translated():
            old = [f for f in self.client.hkeys(key) if not f.isdigit() or int(f) < oldest]
            if old:
                self.client.hdel(key, *old)
        return len(old)

    def seed(self, pool: str, hours: Mapping[int, Hour], *, by: str, at_ms: int, summary: dict[str, Any],
             part_of: int | None = None, more: bool = False) -> int:  # fmt: skip
        """Write a seed's hours (replacing those hours), bump the pool's `seeded` count and
        audit it, in one transaction; the count after it. A seed sent in parts (each naming
        the seed's last hour, `part_of`) is one seed: a part with `more` to come writes its
        hours and adds its summary to the seed's so far (the policy hash's `seeding`), and
        the last part counts and audits the whole once. Parts of another seed left
        unfinished are dropped from the summary (their hours stay written)."""
        key = self.keys.policy(pool)

        def step(pipe: Any) -> None:
            version, policy, pending = pipe.hmget(key, ["version", "policy", SEEDING])
            so_far = json.loads(pending) if pending else None
            total = _add(so_far["summary"], summary) if so_far and part_of is not None and so_far["of"] == part_of else summary
            pipe.multi()
            if hours:
                pipe.hset(self.keys.demand_history(pool), mapping=_docs(hours))
            if more:
                pipe.hset(key, SEEDING, json.dumps({"of": part_of, "summary": total}))
                pipe.hget(key, "seeded")
                return
            entry = {"version": int(version or 0), "by": by, "at": at_ms, "before": json.loads(policy or "null"),
                     "after": json.loads(policy or "null"), "seed": total}  # fmt: skip
            pipe.hdel(key, SEEDING)
            pipe.hincrby(key, "seeded", 1)
            pipe.lpush(self.keys.policy_audit(pool), json.dumps(entry))
            pipe.ltrim(self.keys.policy_audit(pool), 0, 999)

        with translated():
            done = self.client.transaction(step, key)
        return int((done[-1] if more else done[-3]) or 0)


SEEDING = "seeding"  # the policy hash's field: a seed's summary so far, while parts of it are still to come


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two parts' summaries as the seed's (the same weeks moved: they share the seed's last hour)."""
    firsts, lasts = [x for x in (a["first"], b["first"]) if x], [x for x in (a["last"], b["last"]) if x]
    return {"jobs": a["jobs"] + b["jobs"], "hours": a["hours"] + b["hours"], "first": min(firsts, default=None),
            "last": max(lasts, default=None), "weeks_moved": b["weeks_moved"], "hours_left_out": a["hours_left_out"] + b["hours_left_out"]}  # fmt: skip


def _read(pool: str, field: str, text: str) -> Hour | None:
    """A kept hour; None (with a warning) if it is not well formed (written by hand, or by
    another farm): that hour is left out, or starts afresh."""
    try:
        if not field.isdigit():
            raise HistoryError("the field is not an hour")
        return Hour.from_doc(json.loads(text), f"history {field}")
    except (HistoryError, ValueError, RecursionError) as e:  # ValueError: the JSONDecodeError of text that is not JSON
        log.warning("pool %s: demand history hour %r left out: %s", pool, field[:20], e)
        return None


def _docs(hours: Mapping[int, Hour]) -> dict[str, str]:
    return {str(h): json.dumps(hour.to_doc(), separators=(",", ":")) for h, hour in hours.items()}
