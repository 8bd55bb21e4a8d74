"""The gate's audit writer: records of answered requests go to the trail in batches.

A request that changes something is answered, then its record is handed here; records
handed within `delay_s` of each other (or `batch` of them) go to Redis in one pipelined
round trip (AuditTrail.append_many), so under load the trail costs a fraction of a round
trip per request instead of one. What was handed and not yet written is written when the
API stops (`close`); a process killed outright loses at most the last `delay_s` of records.
Refusals are not batched: their rate limit is decided in Redis, per refusal. The trail keeps
the order requests were answered in: a refusal first writes what was handed before it, and
writes never overlap (a lock), so a batch still in flight cannot land after a later refusal.
"""

from __future__ import annotations

import asyncio
import logging

from farm.audit import AuditRecord
from farm.store.audit import AuditTrail

log = logging.getLogger("farm.api")


class Recorder:
    def __init__(self, trail: AuditTrail, *, delay_s: float = 0.005, batch: int = 256) -> None:
        self.trail, self.delay_s, self.batch = trail, delay_s, batch
        self.pending: list[AuditRecord] = []
        self._flushing: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()

    async def refused(self, record: AuditRecord) -> None:
        async with self._writing:
            await self._write_pending()
            await self.trail.refused(record)

    async def append(self, record: AuditRecord) -> None:
        """Hand a record over; it is written within `delay_s` (on the event loop: no lock)."""
        self.pending.append(record)
        if len(self.pending) >= self.batch:
            await self._write()
        elif self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(self.delay_s)
        await self._write()

    async def _write(self) -> None:
        async with self._writing:
            await self._write_pending()

    async def _write_pending(self) -> None:
        records, self.pending = self.pending, []
        if not records:
            return
        try:
            await self.trail.append_many(records)
        except Exception:  # noqa: BLE001 - answered already; the loss is logged with its count
            log.exception("could not write %d audit records", len(records))

    async def flush(self) -> None:
        """Write what is pending now: a reader of the trail is about to read it."""
        await self._write()

    async def close(self) -> None:
        """Write what is pending: the API is stopping."""
        if self._flushing is not None and not self._flushing.done():
            self._flushing.cancel()
        await self._write()
