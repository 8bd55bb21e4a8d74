"""The audit trail: one stream entry per request that changed something or was refused.

Invariants:
- Append-only for farm's own API: entries are added (`append`, `refused`) and leave only
  by age, never edited or deleted by a route. Each append trims what is older than
  `retention_s` (XADD's `MINID ~`, in the same round trip); the trim is approximate (whole
  stream nodes), so readers also stop at the retention bound: nothing older is ever shown.
- The entry's stream id is the record's time (Redis's clock) and a page's cursor.
- Refusals (401/403) are rate-limited per client address, tenant and status
  (scripts/audit_refused.lua): the first `refusals_per_minute` of a minute are recorded,
  the rest only counted, and one `auth.refused.suppressed` entry with the count is written
  when the minute is settled (the first refusal of a later minute, or a read of the trail).
  So a flood of bad tokens adds at most N+1 entries per client per minute and the count is
  exact; a summary written at the N+1th would be timely but could not know the count.
  Past `CLIENTS_A_MINUTE` clients in a minute, newcomers share one bucket ("*"), so a flood
  from many addresses is bounded too.
- Reads are bounded: a page scans at most `SCAN_MAX` entries (it may come back short, with
  a cursor to go on), an export reads `EXPORT_BATCH` at a time up to the newest entry there
  was when it began.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import redis
import redis.asyncio

from farm.audit import AuditFilter, AuditRecord, from_fields, to_fields
from farm.store.client import translated
from farm.store.keys import Keys
from farm.store.lua import Scripts

SCAN_MAX = 5000  # entries one page may read looking for matches
EXPORT_BATCH = 500
CLIENTS_A_MINUTE = 100  # refusal buckets counted apart per minute; the rest share one


class AuditTrail:
    def __init__(self, client: redis.Redis, keys: Keys, *, aclient: redis.asyncio.Redis | None = None, retention_s: float,
                 refusals_per_minute: int, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.client, self.aclient, self.keys = client, aclient, keys
        self.retention_ms = int(retention_s * 1000)
        self.limit = refusals_per_minute
        self.clock = clock
        self._scripts = Scripts(client, keys, aclient)

    def _async(self) -> redis.asyncio.Redis:
        if self.aclient is None:
            raise RuntimeError("the audit trail was made without an asyncio client (aclient)")
        return self.aclient

    def _minid(self) -> str:
        return str(max(int(self.clock() * 1000) - self.retention_ms, 0))

    async def append(self, record: AuditRecord) -> str:
        """Record a request (on the event loop: the gate's path): one XADD. Its stream id."""
        with translated():
            return await self._async().xadd(self.keys.audit, to_fields(record), minid=self._minid(), approximate=True)

    async def append_many(self, records: list[AuditRecord]) -> None:
        """Several records in one round trip (a pipeline of XADDs, in order): how the gate's
        writer (farm.api.recorder) keeps the trail off the cost of each request."""
        with translated():
            pipe = self._async().pipeline(transaction=False)
            for record in records:
                pipe.xadd(self.keys.audit, to_fields(record), minid=self._minid(), approximate=True)
            await pipe.execute()

    def append_sync(self, record: AuditRecord) -> str:
        """`append` for callers off the event loop."""
        with translated():
            return self.client.xadd(self.keys.audit, to_fields(record), minid=self._minid(), approximate=True)  # type: ignore[return-value]

    async def refused(self, record: AuditRecord) -> bool:
        """Record a refused request, unless its client is past the limit this minute (then it
        is only counted). One script call. Whether it was recorded."""
        bucket = json.dumps([record.client, record.tenant, record.status], separators=(",", ":"))
        fields = [part for pair in to_fields(record).items() for part in pair]
        self._async()
        with translated():
            return bool(
                await self._scripts.acall("audit_refused", self.retention_ms, self.limit, CLIENTS_A_MINUTE, bucket, *fields)
            )

    def settle(self) -> None:
        """Write the summaries of a past minute's suppressed refusals, if not yet written."""
        with translated():
            self._scripts.call("audit_refused", self.retention_ms, self.limit, CLIENTS_A_MINUTE, "")

    def _floor(self, since_ms: int | None) -> int:
        return max(since_ms or 0, int(self.clock() * 1000) - self.retention_ms, 0)

    def page(self, *, tenant: str | None = None, limit: int, cursor: str | None = None, actor: str | None = None,
             action: str | None = None, since_ms: int | None = None) -> tuple[list[AuditRecord], str | None]:  # fmt: skip
        """Up to `limit` records, newest first, older than `cursor` (a stream id) and of the
        filter (`tenant`: only that tenant's; None: all). The next cursor is the id of the
        last entry read, or None when nothing older is left. At most SCAN_MAX entries are
        read: a rare match comes back in short pages rather than one long read."""
        self.settle()
        keep = AuditFilter(tenant, actor, action, since_ms)
        floor = str(self._floor(since_ms))
        top = "+" if cursor is None else _before(cursor)
        if top is None:
            return [], None
        batch = max(limit, 200) if keep.narrows else limit
        out: list[AuditRecord] = []
        scanned, last = 0, None
        while scanned < SCAN_MAX:
            want = min(batch, SCAN_MAX - scanned)
            with translated():
                rows = self.client.xrevrange(self.keys.audit, max=top, min=floor, count=want)
            for entry_id, fields in rows:
                record = from_fields(entry_id, fields)
                if keep.keep(record):
                    out.append(record)
                    if len(out) == limit:
                        return out, entry_id
            if len(rows) < want:
                return out, None
            scanned += len(rows)
            last = rows[-1][0]
            top = _before(last)
            if top is None:
                return out, None
        return out, last

    def export(self, *, tenant: str | None = None, actor: str | None = None, action: str | None = None,
               since_ms: int | None = None) -> Iterator[AuditRecord]:  # fmt: skip
        """Every matching record, oldest first, read EXPORT_BATCH at a time, up to the newest
        entry when the export began (a busy trail does not make it endless)."""
        self.settle()
        keep = AuditFilter(tenant, actor, action, since_ms)
        with translated():
            newest = self.client.xrevrange(self.keys.audit, count=1)
        if not newest:
            return
        end, start = newest[0][0], str(self._floor(since_ms))
        while True:
            with translated():
                rows = self.client.xrange(self.keys.audit, min=start, max=end, count=EXPORT_BATCH)
            for entry_id, fields in rows:
                record = from_fields(entry_id, fields)
                if keep.keep(record):
                    yield record
            if len(rows) < EXPORT_BATCH:
                return
            start = f"({rows[-1][0]}"


def _before(entry_id: str) -> str | None:
    """The greatest stream id below `entry_id` (None below 0-0): a page's upper bound.
    XREVRANGE's exclusive "(0-0" is an error, not an empty range."""
    ms, _, seq = entry_id.partition("-")
    if int(seq or 0):
        return f"{int(ms)}-{int(seq) - 1}"
    return f"{int(ms) - 1}-{2**64 - 1}" if int(ms) else None
