"""Ships a running attempt's output to its Redis log stream in batches.

Output is buffered and flushed every `interval_s` or once `max_bytes` are waiting, so a
chatty step costs a few Redis calls a second, not one per line. Secret values are masked
before anything leaves the process. Bytes are decoded as UTF-8
incrementally (a character split across reads stays whole); invalid bytes become U+FFFD.
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
        interval_s: float = 0.1,
        max_bytes: int = 64 * 1024,
        secrets: list[str] | None = None,
    ) -> None:
        self.mask = Masker(secrets or [])
        self.store, self.job_id, self.attempt, self.cap = store, job_id, attempt, cap
        self.on_stale = on_stale
        self.interval_s, self.max_bytes = interval_s, max_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf: list[str] = []
        self._size = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"log-{job_id}", daemon=True)
        self._thread.start()

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
            if self._size >= self.max_bytes:
                self._wake.set()

    def flush(self, final: bool = False) -> None:
        with self._lock:
            text = self.mask("".join(self._buf))
            # Keep back a tail that may be the start of a secret split across chunks.
            keep = 0 if final or not self.mask.values else min(self.mask.hold, len(text))
            text, tail = text[: len(text) - keep], text[len(text) - keep :]
            self._buf, self._size = ([tail] if tail else []), len(tail)
        if not text:
            return
        try:
            self.store.append_log(self.job_id, self.attempt, text, cap=self.cap)
        except StaleAttempt:
            self.on_stale()
        except FarmError:
            pass  # Redis away for a moment: this chunk is lost, the job goes on

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._put(tail)
        self._closed.set()
        self._wake.set()
        self._thread.join()
        self.flush(final=True)
