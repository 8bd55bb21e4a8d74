"""The API's lookups of git hosts are bounded: in time, in threads, and per request."""

import threading
import time

from farm.api.resolver import BoundedResolver, budgeted


def test_an_answer_in_time_is_the_answer():
    assert BoundedResolver(1.0, lookup=lambda host: ["140.82.112.3"])("git.example.com") == ["140.82.112.3"]
    assert BoundedResolver(1.0, lookup=lambda host: None)("nowhere.example.com") is None


def test_a_lookup_that_hangs_is_no_answer_after_the_bound_and_holds_a_slot_only():
    release = threading.Event()

    def hangs(host: str) -> list[str]:
        release.wait(10)
        return ["127.0.0.1"]

    resolve = BoundedResolver(0.2, max_pending=2, lookup=hangs)
    t0 = time.monotonic()
    assert resolve("a") is None and resolve("b") is None
    assert time.monotonic() - t0 < 1.5
    t0 = time.monotonic()
    assert resolve("c") is None  # both slots still out: no thread more, no wait
    assert time.monotonic() - t0 < 0.1
    release.set()
    time.sleep(0.2)
    assert resolve("d") == ["127.0.0.1"]  # the slots came back with the answers


def test_a_request_looks_each_name_up_once_and_stops_when_its_budget_is_spent():
    asked, now = [], [0.0]

    def lookup(host: str) -> list[str]:
        asked.append(host)
        now[0] += 1.5
        return ["140.82.112.3"]

    resolve = budgeted(lookup, 2.0, clock=lambda: now[0])
    assert resolve("a") == ["140.82.112.3"] and resolve("a") == ["140.82.112.3"]
    assert resolve("b") == ["140.82.112.3"]
    assert resolve("c") is None  # 3 s spent of 2
    assert asked == ["a", "b"]
