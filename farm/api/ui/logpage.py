"""A job's log as the portal shows it: a window of its end, earlier windows on demand, and
what is written after, live, as server-sent events.

The page never holds the whole log: it opens on the last WINDOW characters (a 10 MiB log
costs its page 64 KiB), "show earlier" asks for the window before that, and the live
events carry only what is new. Entries are read newest first (JobStore.read_log_before), so
a window costs the entries it shows and one more, whatever the log's size. Text goes
through LogView as the API's log does (the head-and-tail cut marker stands where the middle
was cut), then through `present.visible` (terminal escapes shown, never obeyed).

A window's far end may fall inside an entry (an entry holds up to a sixteenth of the cap):
a cursor is `<entry id>~<n>`, "the first n characters of that entry and everything before
it", so paging back loses and repeats nothing.

Invariants:
- `window` is pure: the entries it reads come from an iterator the adapter fills lazily.
- A live follow is bounded as the API's are (farm.api.gate.Followers: per tenant, and at
  most api.follow_max_s), ends when the job ends, and holds no thread while it waits.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

from farm.api.ui.present import safe_json, visible
from farm.logtext import LogView
from farm.store.jobs import JobStore

WINDOW = 64 * 1024  # characters of log a page (or a "show earlier") carries
READ_BATCH = 32  # entries read back at a time
EVENT_ENTRIES = 16  # entries one live event carries at most (an entry is 64 KiB at most, as the executor writes)
_CURSOR = re.compile(r"^([0-9]{1,20}-[0-9]{1,20})~([0-9]{1,9})$")


@dataclass(frozen=True)
class Window:
    text: str  # oldest first, as shown
    earlier: str | None  # the cursor of what comes before; None at the log's start
    newest: str | None  # the newest entry id read (a live follow goes on after it); None: an empty log


def parse_cursor(cursor: str | None) -> tuple[str, int] | None:
    """(entry id, characters of it) of a cursor; None for the log's end (or a cursor that
    is not one: the page then shows the end)."""
    m = _CURSOR.match(cursor or "")
    return (m[1], int(m[2])) if m else None


def window(entries: Iterable[tuple[str, str | None]], budget: int = WINDOW, *, upto: int | None = None) -> Window:
    """The window ending where `entries` (newest first, rendered) begin: up to `budget`
    characters of whole entries, or of the one entry that is longer than that. `upto`: keep
    only the first that many characters of the first entry (the cursor's cut)."""
    it = iter(entries)
    parts: list[str] = []
    used, newest = 0, None
    for i, (entry_id, text) in enumerate(it):
        newest = newest or entry_id
        text = text or ""  # the end marker: no text
        if i == 0 and upto is not None:
            text = text[:upto]
        if used + len(text) > budget:
            if parts:  # this entry starts the next window back
                return Window("".join(reversed(parts)), f"{entry_id}~{len(text)}", newest)
            keep = text[-budget:]
            return Window(keep, f"{entry_id}~{len(text) - len(keep)}", newest)
        parts.append(text)
        used += len(text)
        if used == budget:
            nxt = next(it, None)  # whether anything is left before
            return Window("".join(reversed(parts)), f"{nxt[0]}~{len(nxt[1] or '')}" if nxt else None, newest)
    return Window("".join(reversed(parts)), None, newest)


def read_window(jobs: JobStore, job_id: str, cursor: str | None) -> Window:
    """The window before `cursor` (None: the log's end), shown as text. Runs in a worker
    thread: it reads the store."""
    at = parse_cursor(cursor)
    view = LogView(jobs.log_cuts(job_id))

    def entries() -> Iterator[tuple[str, str | None]]:
        before, inclusive = ("+", False) if at is None else (at[0], True)
        while chunks := jobs.read_log_before(job_id, before, count=READ_BATCH, inclusive=inclusive):
            for c in chunks:
                yield c.entry_id, None if c.data is None else view.feed(c.entry_id, c.data)
            before, inclusive = chunks[-1].entry_id, False

    found = window(entries(), upto=None if at is None else at[1])
    return Window(visible(found.text), found.earlier, found.newest)


def event(name: str, data: dict[str, object], entry_id: str | None = None) -> str:
    """One server-sent event; its data is JSON (one line, whatever the text holds, and no
    markup character: present.safe_json)."""
    head = f"id: {entry_id}\n" if entry_id else ""
    return f"{head}event: {name}\ndata: {safe_json(data)}\n\n"


async def follow(jobs: JobStore, job_id: str, after: str, *, max_s: float, stopping: threading.Event) -> AsyncIterator[str]:
    """Events for the log after entry `after` ('-': from its start) as it is written, then
    `end` when the job ends (with its state), when it is purged, or when the follow has
    lasted `max_s` (`renew`: the browser follows again from where it is)."""
    view = LogView(await jobs.alog_cuts(job_id))
    deadline = time.monotonic() + max_s
    yield "retry: 2000\n\n"
    while time.monotonic() < deadline:
        if stopping.is_set():
            yield event("renew", {"why": "the server is stopping"})
            return
        chunks = await jobs.aread_log(job_id, after, block_ms=1000, count=EVENT_ENTRIES)
        if not chunks:
            if not await jobs.aexists(job_id):
                yield event("end", {"state": None})
                return
            yield ": still here\n\n"  # a comment: a client that hung up is noticed within a second
            continue
        text, first = [], chunks[0].entry_id
        for c in chunks:
            if c.end_state is not None:
                if text:
                    yield event("log", {"text": visible("".join(text)), "first": first}, after)
                yield event("end", {"state": c.end_state.value})
                return
            after = c.entry_id
            if c.data:
                text.append(view.feed(c.entry_id, c.data))
        if text:
            yield event("log", {"text": visible("".join(text)), "first": first}, after)
    yield event("renew", {"why": f"a live log lasts {max_s:.0f} s at most"})
