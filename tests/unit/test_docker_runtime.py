"""DockerRuntime's step loop (`_run`) and its output follower, on a fake container: a log
stream that breaks while the step runs on, a wait and a kill that meet a daemon away. Pure logic
on threads; the real daemon's side is tests/integration/test_runtime_contract.py."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import docker.errors
import pytest
import requests.exceptions

from agents.runtimes.base import StepContext
from agents.runtimes.docker import DockerRuntime
from agents.runtimes.follower import OutputFollower
from farm.settings import DockerSettings

OUTPUT = [b"one\n", b"two\n", b"three\n", b"four\n", b"five"]


class FakeContainer:
    """What `_run` uses of a docker-py Container. Its output is `output`; follow number i
    (from 0) yields `breaks[i]` chunks from the start and then raises a transport error (None:
    all of them, then the container exits). `kill_errors` are raised by kill() in turn (a
    NotFound: the container is gone)."""

    id = "c0ffee" * 10

    def __init__(self, breaks: list[int | None], kill_errors: list[Exception] | None = None, code: int = 0,
                 output: list[bytes] = OUTPUT, wait_errors: list[Exception] | None = None) -> None:  # fmt: skip
        self.output = output
        self.breaks = list(breaks)
        self.kill_errors = list(kill_errors or [])
        self.wait_errors = list(wait_errors or [])
        self.waits = 0
        self.code = code
        self.exited = threading.Event()
        self.follows = 0
        self.kills = 0

    def start(self) -> None:
        pass

    def wait(self) -> dict[str, int]:
        self.waits += 1
        if self.wait_errors:
            error = self.wait_errors.pop(0)
            if isinstance(error, tuple):  # (held for seconds, then raised)
                time.sleep(error[0])
                error = error[1]
            raise error
        self.exited.wait(10)
        return {"StatusCode": self.code}

    def kill(self) -> None:
        self.kills += 1
        if self.kill_errors:
            error = self.kill_errors.pop(0)
            if isinstance(error, docker.errors.NotFound):
                self.exited.set()
            raise error
        self.code = 137
        self.exited.set()

    def logs(self, stream: bool = False, follow: bool = False, tail: int | None = None):  # type: ignore[no-untyped-def]
        if tail is not None:
            return b"".join(self.output).splitlines(keepends=True)[-1]
        assert stream and follow
        self.follows += 1
        return self._stream(self.breaks.pop(0) if self.breaks else None)

    def _stream(self, upto: int | None):  # type: ignore[no-untyped-def]
        yield from self.output[: len(self.output) if upto is None else upto]
        if upto is not None:
            raise requests.exceptions.ConnectionError("connection reset by peer")
        self.exited.set()


def run(container: FakeContainer, stop: threading.Event | None = None, wait_retry_s: float | None = None,
        wait_held_s: float | None = None) -> tuple[int, bytes]:  # fmt: skip
    got = bytearray()
    ctx = StepContext(job_id="j", workspace=Path("."), env={}, output=got.extend, stop=stop or threading.Event())
    runtime = DockerRuntime(DockerSettings())
    if wait_retry_s is not None:
        runtime.WAIT_RETRY_S = wait_retry_s
    if wait_held_s is not None:
        runtime.WAIT_HELD_S = wait_held_s
    code = runtime._run(container, ctx)
    return code, bytes(got)


def test_a_broken_output_stream_is_followed_again_and_nothing_is_lost_or_repeated(caplog):
    container = FakeContainer(breaks=[2, None])
    with caplog.at_level(logging.WARNING, logger="farm.docker"):
        code, log = run(container)
    assert code == 0 and container.follows == 2
    note = b"[farm] the step's output stream broke (ConnectionError: connection reset by peer); following it again\n"
    assert log == b"one\ntwo\n" + note + b"three\nfour\nfive"
    assert "output stream broke after 8 bytes" in caplog.text


def test_a_break_mid_line_puts_the_note_on_a_line_of_its_own():
    code, log = run(FakeContainer(breaks=[1, None], output=[b"par", b"tial\n"]))
    assert log.startswith(b"par\n[farm] the step's output stream broke") and log.endswith(b"again\ntial\n")


def test_a_stream_that_keeps_breaking_is_given_up_and_read_once_the_container_exited():
    container = FakeContainer(breaks=[1] + [0] * (OutputFollower.RETRIES + 1))
    got = bytearray()
    follower = OutputFollower(container, got.extend, threading.Event(), pause_s=0)
    follower.run()
    assert follower.gave_up and container.follows == OutputFollower.RETRIES + 2
    assert got.count(b"following it again") == OutputFollower.RETRIES + 1 and got.endswith(b"; stopped following it\n")
    follower.finish()  # the container exited: one more read, from where the log stopped
    assert got.startswith(b"one\n[farm]") and got.endswith(b"it\ntwo\nthree\nfour\nfive")


@pytest.mark.parametrize("errors,kills", [
    ([requests.exceptions.ConnectionError("daemon away")], 2),  # tried again, and killed
    ([docker.errors.NotFound("no such container")], 1),  # gone already: stopped
    ([requests.exceptions.ConnectionError("daemon away")] * 2, 2),  # left to the step's forced removal
])  # fmt: skip
def test_a_stop_whose_kill_meets_a_transport_error_is_not_a_runtime_failure(errors, kills, caplog):
    container = FakeContainer(breaks=[None], kill_errors=errors)
    container._stream = lambda upto: iter(())  # type: ignore[method-assign]  # quiet, running until killed
    stop = threading.Event()
    stop.set()
    if len(errors) == 2:
        threading.Timer(0.2, container.exited.set).start()  # it ends on its own, the kill never arrived
    with caplog.at_level(logging.INFO, logger="farm.docker"):
        code, _ = run(container, stop)  # no RuntimeFailure
    assert container.kills == kills
    assert code == (137 if kills == 2 and len(errors) == 1 else 0)
    assert f"container {container.id[:12]}: kill" in caplog.text


def test_a_stream_ending_after_the_step_is_over_is_no_news(caplog):
    container = FakeContainer(breaks=[2])
    got = bytearray()
    follower = OutputFollower(container, got.extend, threading.Event(), pause_s=0)
    follower.close()  # the step returned; its container is being removed under the stream
    with caplog.at_level(logging.WARNING, logger="farm.docker"):
        follower.run()
    assert got == b"one\ntwo\n" and container.follows == 1 and not caplog.text


def test_a_wait_that_meets_the_daemon_away_asks_again_and_the_step_ends_as_it_did(caplog):
    """A transport error while waiting for the container's exit is the daemon, not the step:
    it runs on, and its exit code is the step's (it was -9, as if killed)."""
    away = requests.exceptions.ConnectionError("daemon away")
    container = FakeContainer(breaks=[None], code=3, wait_errors=[away, away])
    with caplog.at_level(logging.WARNING, logger="farm.docker"):
        code, got = run(container)
    assert (code, got, container.waits) == (3, b"".join(OUTPUT), 3)
    assert caplog.text.count("waiting for its exit failed (ConnectionError: daemon away); asking again") == 2


def test_a_daemon_that_keeps_failing_is_a_runtime_failure_not_an_exit_code():
    container = FakeContainer(breaks=[None], wait_errors=[requests.exceptions.ReadTimeout("no answer")] * 100)
    container._stream = lambda upto: iter(())  # type: ignore[method-assign]  # quiet, running on
    with pytest.raises(requests.exceptions.ReadTimeout):
        run(container, wait_retry_s=0.5)  # run_step maps it to a RuntimeFailure (docker_errors)
    assert 3 <= container.waits < 100  # asked again, backing off, for as long as allowed


def test_a_container_gone_while_waiting_is_not_waited_for_again():
    container = FakeContainer(breaks=[None], wait_errors=[docker.errors.NotFound("no such container")])
    container._stream = lambda upto: iter(())  # type: ignore[method-assign]
    with pytest.raises(docker.errors.NotFound):
        run(container)
    assert container.waits == 1


def test_breaks_apart_in_time_each_start_a_new_row_and_a_5xx_is_asked_again():
    """Waits that held (the daemon answered) and then broke are not a daemon failing in a
    row: the step is waited for however long it runs. A 5xx is the daemon away too."""
    held = (0.15, requests.exceptions.ConnectionError("daemon restarted"))
    answer = requests.Response()
    answer.status_code, answer.url, answer.reason = 503, "http+docker://localhost/containers/c/wait", "Service Unavailable"
    unavailable = docker.errors.APIError("503 Server Error", response=answer)
    container = FakeContainer(breaks=[None], code=5, wait_errors=[held, held, unavailable, held, held])
    code, _ = run(container, wait_retry_s=0.3, wait_held_s=0.1)  # 0.75 s of breaks in all, each row shorter than 0.3 s
    assert (code, container.waits) == (5, 6)
