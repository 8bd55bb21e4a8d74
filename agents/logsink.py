"""Buffers a running attempt's output for its Redis log stream.

The executor's watch thread calls `flush()` every ~100 ms (and at once when `max_bytes` are
waiting), so a chatty step costs a few Redis calls a second, not one per line; whatever is
left at the end rides along with the finish script (`take_rest()`), so a short job costs no
separate log write. Bytes are decoded as UTF-8 incrementally (a character split across
reads stays whole; invalid bytes become U+FFFD), and secret values are masked before
anything leaves the process, holding back a tail long enough to catch a value split across
two reads.

farm's own lines (`note`, `line`) travel as segments of their own, so the store keeps them
when it cuts a log over its cap, and always start on a line of their own.
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import Callable, Sequence

from farm.errors import FarmError, StaleAttempt
from farm.secrets import Masker, Shape
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
        shapes: Sequence[Shape] = (),
    ) -> None:
        self.store, self.job_id, self.attempt, self.cap = store, job_id, attempt, cap
        self.on_stale, self.on_full = on_stale, on_full
        self.max_bytes = max_bytes
        self.mask = Masker(secrets or [], shapes)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf: list[list[str]] = []  # segments: ["o", output] or ["n", farm's line]
        self._size = 0
        self._open_line = False  # the output so far ends mid-line
        self._lock = threading.Lock()

    @property
    def full(self) -> bool:
        """Enough is buffered that it should go out now, whatever the flush interval."""
        return self._size >= self.max_bytes

    def write(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self._put("o", text)

    def note(self, text: str) -> None:
        """A line of farm's, marked as such: `[farm] ...`."""
        self.line(f"[farm] {text}")

    def line(self, text: str) -> None:
        """A line of farm's as it is (a step's `--- step build` delimiter)."""
        self._put("n", text + "\n")

    def _put(self, kind: str, text: str) -> None:
        with self._lock:
            if kind == "n" and self._open_line:
                text = "\n" + text  # farm's line starts a line of its own
            if kind == "o":
                self._open_line = not text.endswith("\n")
            if kind == "o" and self._buf and self._buf[-1][0] == "o":
                self._buf[-1][1] += text
            else:
                self._buf.append([kind, text])
            self._size += len(text)
            full = self.full
        if full:
            self.on_full()

    def _take(self, final: bool) -> list[tuple[str, str]]:
        with self._lock:
            if final:
                tail = self._decoder.decode(b"", final=True)
                if tail:
                    self._buf.append(["o", tail])
            last = self._buf[-1][1] if not final and self._buf and self._buf[-1][0] == "o" else None
            segments = [(kind, self.mask(text)) for kind, text in (self._buf[:-1] if last is not None else self._buf)]
            rest: list[list[str]] = []
            if last is not None:  # hold back what may be the start of a secret
                sent, held = self.mask.split(last)
                segments.append(("o", sent))
                rest = [["o", held]] if held else []
            self._buf, self._size = rest, sum(len(t) for _, t in rest)
        return [s for s in segments if s[1]]

    def flush(self) -> None:
        """Send what is buffered (less a possible secret prefix) to the log stream."""
        segments = self._take(final=False)
        if not segments:
            return
        try:
            self.store.append_log(self.job_id, self.attempt, segments, cap=self.cap)
        except StaleAttempt:
            self.on_stale()
        except FarmError:
            pass  # Redis away for a moment: this chunk is lost, the job goes on

    def take_rest(self) -> list[tuple[str, str]]:
        """Everything still buffered, masked, for the finish script to append."""
        return self._take(final=True)
