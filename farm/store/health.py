"""Whether the store accepts writes: the farm is *degraded* while it does not.

A server that is up can still refuse every write: its append-only file cannot be written
(a full or failing disk: `MISCONF`), it is at maxmemory, or it is a read-only replica. Reads
still work then, so nothing else notices; `/healthz`, `/v1/queue`, `farm_degraded` and the
FarmDegraded alert read it from here. `reasons` is the pure part (INFO fields in, reasons
out); the two readers cost one INFO each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio

from farm.store.client import translated

SECTIONS = ("persistence", "memory", "replication")


def reasons(info: Mapping[str, Any]) -> list[str]:
    """Why the server refuses writes now, from its INFO persistence, memory and replication."""
    out = []
    if str(info.get("aof_enabled", "0")) == "1" and info.get("aof_last_write_status", "ok") != "ok":
        out.append("the store cannot write its append-only file (disk full or failing): new work is refused")
    elif info.get("rdb_last_bgsave_status", "ok") != "ok" and str(info.get("aof_enabled", "0")) != "1":
        out.append("the store cannot save its snapshot (disk full or failing): new work is refused")
    maxmemory = int(info.get("maxmemory", 0) or 0)
    if maxmemory and int(info.get("used_memory", 0) or 0) >= maxmemory:
        out.append("the store is at its maxmemory: new work is refused")
    if info.get("role") == "slave" and str(info.get("slave_read_only", "1")) == "1":
        out.append("the store is a read-only replica")
    return out


def degraded(client: redis.Redis) -> list[str]:
    with translated():
        return reasons(client.info(*SECTIONS))  # type: ignore[arg-type]


async def adegraded(client: redis.asyncio.Redis) -> list[str]:
    with translated():
        return reasons(await client.info(*SECTIONS))  # type: ignore[arg-type]
