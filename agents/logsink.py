"""Buffers a running attempt's output for its Redis log stream.

The executor's watch thread calls `flush()` every ~100 ms (and at once when `max_bytes` are
waiting), so a chatty step costs a few Redis calls a second, not one per line; whatever is
left at the end rides along with the finish script (`take_rest()`), so a short job costs no
separate log write. Bytes are decoded as UTF-8 incrementally (a character split across
reads stays whole; invalid bytes become U+FFFD), and secret values are masked before
anything leaves the process, holding back a tail long enough to catch a value split across
two reads.
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import Callable

from farm.errors import FarmError, StaleAttempt
from farm.secrets import Masker
from farm.store.jobs import JobStore


class LogSink:
    def __init__(
        self,
        store: JobStore,
        job_id: str,
        attempt: int,
        *,
        cap: int,
        on_stale: Callable[[], None],
        on_full: Callable[[], None] = lambda: None,
        max_bytes: int = 64 * 1024,
        secrets: list[str] | None = None,
    ) -> None:
        self.store, self.job_id, self.attempt, self.cap = store, job_id, attempt, cap
        self.on_stale, self.on_full = on_stale, on_full
        self.max_bytes = max_bytes
        self.mask = Masker(secrets or [])
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf: list[str] = []
        self._size = 0
        self._lock = threading.Lock()

    @property
    def full(self) -> bool:
        """Enough is buffered that it should go out now, whatever the flush interval."""
        return self._size >= self.max_bytes

    def write(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self._put(text)

    def note(self, text: str) -> None:
        self._put(f"[farm] {text}\n")

    def _put(self, text: str) -> None:
        with self._lock:
            self._buf.append(text)
            self._size += len(text)
            full = self.full
        if full:
            self.on_full()

    def _take(self, final: bool) -> str:
        with self._lock:
            if final:
                tail = self._decoder.decode(b"", final=True)
                if tail:
                    self._buf.append(tail)
            text = self.mask("".join(self._buf))
            keep = 0 if final or not self.mask.values else min(self.mask.hold, len(text))
            text, rest = text[: len(text) - keep], text[len(text) - keep :]
            self._buf, self._size = ([rest] if rest else []), len(rest)
        return text

    def flush(self) -> None:
        """Send what is buffered (less a possible secret prefix) to the log stream."""
        text = self._take(final=False)
        if not text:
            return
        try:
            self.store.append_log(self.job_id, self.attempt, text, cap=self.cap)
        except StaleAttempt:
            self.on_stale()
        except FarmError:
            pass  # Redis away for a moment: this chunk is lost, the job goes on

    def take_rest(self) -> str:
        """Everything still buffered, masked, for the finish script to append."""
        return self._take(final=True)
