"""Loads the Lua scripts in `scripts/` and binds them to a Redis client.

Each script is `lib.lua` + the script's own file, so shared helpers (the one `terminate`,
the one `make_ready`) exist once. The first argument of every call is the JSON config with
the key templates and histogram bounds (spelled as their bucket fields name them,
farm.store.stats); `Scripts.call` adds it.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

import redis
import redis.asyncio

from farm.store.keys import EXECUTOR_TTL_MS, Keys
from farm.store.stats import DURATION_BUCKETS_S, WAIT_BUCKETS_S, bound_field

NAMES = ("enqueue", "claim", "heartbeat", "append_log", "finish", "cancel", "reap", "fenced", "purge", "webhook_claim", "policy_put",
         "cache_lookup", "cache_commit", "cache_drop", "run_submit", "run_cancel", "resolve_token",
         "audit_refused", "notify_claim", "notify_expand")  # fmt: skip

_EDGES = re.compile(r"^-- edges: (.*)$", re.MULTILINE)


@cache
def source(name: str) -> str:
    return resources.files("farm.store").joinpath("scripts", f"{name}.lua").read_text()


@cache
def script(name: str) -> str:
    """lib.lua and the script, with the script's `#!lua flags=...` line first if it has one.
    `allow-oom` marks the scripts that end, free or keep going work already taken (claim,
    heartbeat, finish, cancel, reap, fence, purge...): they run even when Redis is at
    maxmemory, so a full Redis refuses new submits but never strands running jobs or an
    operator's cancel."""
    own = source(name)
    head, _, rest = own.partition("\n") if own.startswith("#!") else ("", "", own)
    return (head + "\n" if head else "") + source("lib") + "\n" + rest


def declared_edges(name: str) -> set[tuple[str, str]]:
    """The `-- edges:` line of a script, as (src, dst) pairs; lets a test hold the scripts
    to the transition table in farm.models."""
    m = _EDGES.search(source(name))
    if m is None or m.group(1).strip() == "none":
        return set()
    return {tuple(e.strip().split("->")) for e in m.group(1).split(",")}  # type: ignore[misc]


class Scripts:
    """The scripts bound to a client, and to an asyncio client too when given (the API's
    submit path runs on the event loop)."""

    def __init__(self, client: redis.Redis, keys: Keys, aclient: redis.asyncio.Redis | None = None) -> None:
        self._config = json.dumps(
            {
                "k": keys.templates(),
                "wb": [bound_field(b) for b in WAIT_BUCKETS_S],
                "db": [bound_field(b) for b in DURATION_BUCKETS_S],
                "ex_ttl": EXECUTOR_TTL_MS,
            }
        )
        self._scripts = {n: client.register_script(script(n)) for n in NAMES}
        self._ascripts = {n: aclient.register_script(script(n)) for n in NAMES} if aclient else {}

    def call(self, name: str, *args: Any, client: redis.Redis | None = None) -> Any:
        return self._scripts[name](keys=[], args=[self._config, *args], client=client)

    async def acall(self, name: str, *args: Any) -> Any:
        return await self._ascripts[name](keys=[], args=[self._config, *args])
