"""A step container's output, followed into the job log through a stream that breaks.

docker's log stream (`logs(stream=True, follow=True)`) is one long HTTP response, which a
daemon restart, a proxy or a socket error can end with an exception while the step runs
on. The thread reading it must not die of that unseen, and the step's later output must not
be lost: the break is logged and noted in the job's log, and the output is followed again
from its start with the bytes already passed on skipped. The log driver keeps a container's
output in order, so what was passed on is a prefix of what the next follow reads: nothing
is lost or shown twice. Only the container's bytes are counted, never farm's notes.

Bounded: after RETRIES breaks in a row with no new byte between them, or once the step is
being stopped, the follower gives up (noted); `finish`, after the container exited, reads
what it missed then (a follow of an exited container reads its whole output and ends).
Once the step is over (`close`), a stream still open ends with the container's removal:
that is no break to report.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("farm.docker")

TAIL = 65536  # bytes of the output kept to compare with the daemon's last line


class OutputFollower:
    RETRIES = 5

    def __init__(self, container: Any, output: Callable[[bytes], None], stop: threading.Event, *, pause_s: float = 0.2) -> None:
        self.container = container  # a docker-py Container: logs() is all that is used
        self.output = output
        self.stop = stop  # set: the step is being stopped, its later output is not wanted
        self.pause_s = pause_s  # before following again; grows with each fruitless break
        self.sent = 0  # bytes of the container's output passed on
        self.tail = bytearray()  # the last TAIL of them
        self.breaks = 0
        self.gave_up = False
        self.closed = False  # the step is over: a break now (its container removed) is no news

    def run(self) -> None:
        """Follow until the container's output ends (it exited), following again after a break."""
        fruitless = 0
        while True:
            before = self.sent
            try:
                self._follow()
                return
            except Exception as e:  # noqa: BLE001 - whatever ended the stream: the thread must not die of it unseen
                if self.closed:
                    return
                self.breaks += 1
                fruitless = 0 if self.sent > before else fruitless + 1
                self.gave_up = fruitless > self.RETRIES or self.stop.is_set()
                then = "stopped following it" if self.gave_up else "following it again"
                log.warning("container %s: its output stream broke after %d bytes (%s); %s",
                            _short(self.container), self.sent, _what(e), then)  # fmt: skip
                self._note(f"the step's output stream broke ({_what(e)}); {then}")
                if self.gave_up or self.stop.wait(self.pause_s * max(fruitless, 1)):
                    self.gave_up = True
                    return

    def finish(self) -> None:
        """After the container exited and `run` returned or was left: what the follow missed.
        A follow that gave up reads the exited container's output once more. One that ended
        may have ended before the daemon flushed a last line without a newline (seen 1 run in
        30): the daemon's own last entry says whether it is missing."""
        if self.gave_up:
            try:
                self._follow()
            except Exception as e:  # noqa: BLE001 - the output after the break is lost: said, not raised
                log.warning("container %s: output after byte %d lost: %s", _short(self.container), self.sent, _what(e))
                self._note(f"the step's output after byte {self.sent} could not be read ({_what(e)})")
            return
        last = self.container.logs(tail=1)
        if last and not self.tail.endswith(last):
            self.output(last)

    def close(self) -> None:
        """The step is over: a stream still open ends with its container's removal, unreported."""
        self.closed = True

    def _follow(self) -> None:
        skip = self.sent  # passed on by an earlier follow, which this one reads again
        for chunk in self.container.logs(stream=True, follow=True):
            if skip:
                n = min(skip, len(chunk))
                chunk, skip = chunk[n:], skip - n
                if not chunk:
                    continue
            self.output(chunk)
            self.sent += len(chunk)
            self.tail.extend(chunk)
            del self.tail[:-TAIL]

    def _note(self, text: str) -> None:
        lead = "\n" if self.tail and not self.tail.endswith(b"\n") else ""
        try:
            self.output(f"{lead}[farm] {text}\n".encode())
        except Exception:  # noqa: BLE001 - the log itself failing: logged above already
            pass


def _short(container: Any) -> str:
    return str(getattr(container, "id", "?"))[:12]


def _what(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]
