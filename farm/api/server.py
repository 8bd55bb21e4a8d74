"""How farm serves its API: uvicorn on httptools, with the limits a server facing strangers
needs and httptools lacks.

- **Request heads are bounded**: a URL and headers over `MAX_HEAD_BYTES` are a 400 and the
  connection closes (httptools buffers whatever it is sent: one connection streaming header
  lines grew `farm up` by 1.5 GB in a red-team run).
- **A head must arrive within `HEAD_TIMEOUT_S`** of the connection opening (or of the
  previous response): an idle connection holds a file descriptor, and 20,000 of them
  exhausted the process's.
- **Connections are capped** (`api.max_connections`, uvicorn's `limit_concurrency`): past it,
  requests get a 503 at once.
- **A stop tells the app first** (`app.state.stopping`), so log followers end on their own
  within a second instead of being cut at the graceful timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from farm.errors import FarmError

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 10.0


class HeadTooLarge(FarmError):
    """A request head over `max_head_bytes`: httptools reports it, and uvicorn answers 400 and closes."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on the request head and a deadline for it."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout_s = HEAD_TIMEOUT_S
    _head_bytes = 0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.max_head_bytes:
            raise HeadTooLarge(f"request head over {self.max_head_bytes} bytes")  # httptools reports it: a 400, closed

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm()  # the next request of a kept-alive connection
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def config(app: Any, settings: Any, **kw: Any) -> uvicorn.Config:
    """uvicorn's settings for farm's API (`app` may be an import string, with factory=True)."""
    return uvicorn.Config(
        app, host=settings.api.host, port=settings.api.port, log_level="warning", loop="uvloop",
        http=BoundedHttpToolsProtocol, access_log=False, limit_concurrency=settings.api.max_connections,
        timeout_graceful_shutdown=settings.api.graceful_shutdown_s, **kw,
    )  # fmt: skip


class Server(uvicorn.Server):
    """Tells the app when it starts to stop (followers end on their own then)."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.app.state.stopping.set()
        super().handle_exit(sig, frame)
