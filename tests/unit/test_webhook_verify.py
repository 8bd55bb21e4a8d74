"""A receiver's check of farm's webhook signature: farm.webhooks.verify, and the
standard-library copy in README.md that a receiver pastes without installing farm. Both
say True to what farm signed, lately, and False, never an exception, to anything else."""

import ast
import re
import time

import pytest

from farm.webhooks import signature, verify
from tests.unit.policy_tables import README

SECRET, BODY = "whsec-test", b'{"id": "3f2a", "state": "succeeded"}'


def readme_verify():
    """The README's snippet, executed on its own: it may import hmac, hashlib and time only."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (code,) = [b for b in blocks if "def verify(" in b]
    imported = {alias.name for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in node.names} | {node.module for node in ast.walk(ast.parse(code)) if isinstance(node, ast.ImportFrom)}  # fmt: skip
    assert imported <= {"hmac", "hashlib", "time"}, imported
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code, as a receiver runs it
    return namespace["verify"]


VERIFIERS = [pytest.param(verify, id="farm"), pytest.param(readme_verify(), id="readme")]


def good() -> tuple[str, str, bytes, str]:
    ts = str(int(time.time()))
    return SECRET, ts, BODY, signature(SECRET, ts, BODY)


@pytest.mark.parametrize("check", VERIFIERS)
def test_what_farm_signed_is_accepted(check):
    assert check(*good())
    secret, ts, body, sig = good()
    assert check(secret, ts, bytearray(body), sig)  # a framework's mutable buffer
    old = str(int(time.time()) - 200)
    assert check(SECRET, old, BODY, signature(SECRET, old, BODY))  # within the 5 minutes


def malformed() -> dict[str, tuple]:
    """Made when a test runs, not at collection: the timestamps are relative to now."""
    secret, ts, body, sig = good()
    stale = str(int(time.time()) - 301)
    future = str(int(time.time()) + 301)
    cases = {
        "another secret": (secret + "x", ts, body, sig),
        "another body": (secret, ts, body + b" ", sig),
        "another timestamp": (secret, str(int(ts) - 1), body, sig),
        "stale": (secret, stale, body, signature(secret, stale, body)),
        "from the future": (secret, future, body, signature(secret, future, body)),
        "no timestamp header": (secret, None, body, sig),
        "empty timestamp": (secret, "", body, signature(secret, "", body)),
        "timestamp in float seconds": (secret, ts + ".5", body, signature(secret, ts + ".5", body)),
        "timestamp nan": (secret, "nan", body, signature(secret, "nan", body)),
        "timestamp inf": (secret, "inf", body, signature(secret, "inf", body)),
        "timestamp with a sign": (secret, "-" + ts, body, signature(secret, "-" + ts, body)),
        "timestamp with spaces": (secret, f" {ts} ", body, signature(secret, f" {ts} ", body)),
        "timestamp in other digits": (secret, "١٧٠٠٠٠٠٠٠٠", body, sig),
        "timestamp of 5000 digits": (secret, "9" * 5000, body, sig),
        "timestamp as an int": (secret, int(ts), body, sig),
        "timestamp as bytes": (secret, ts.encode(), body, sig),
        "no signature header": (secret, ts, body, None),
        "empty signature": (secret, ts, body, ""),
        "signature without its scheme": (secret, ts, body, sig.removeprefix("sha256=")),
        "signature of another scheme": (secret, ts, body, "sha1=" + sig.removeprefix("sha256=")),
        "signature cut short": (secret, ts, body, sig[:-2]),
        "signature in upper case": (secret, ts, body, sig.upper()),
        "signature not ascii": (secret, ts, body, sig[:-1] + "é"),
        "signature with a lone surrogate": (secret, ts, body, sig[:-1] + "\udc80"),
        "signature as bytes": (secret, ts, body, sig.encode()),
        "body as text": (secret, ts, body.decode(), sig),
        "body as parsed JSON": (secret, ts, {"id": "3f2a"}, sig),
        "no body": (secret, ts, None, sig),
        "no secret": (None, ts, body, sig),
        "secret as bytes": (secret.encode(), ts, body, sig),
    }
    return cases


@pytest.mark.parametrize("check", VERIFIERS)
@pytest.mark.parametrize("case", list(malformed()))
def test_anything_else_is_false_and_never_raises(check, case):
    assert check(*malformed()[case]) is False


def test_farms_verify_takes_its_clock_and_window():
    ts = "1700000000"
    sig = signature(SECRET, ts, BODY)
    assert verify(SECRET, ts, BODY, sig, now=1700000100)
    assert not verify(SECRET, ts, BODY, sig, now=1700000400)
    assert verify(SECRET, ts, BODY, sig, now=1700000400, max_age_s=600)
    assert not verify(SECRET, "0", BODY, signature(SECRET, "0", BODY), now=0.0 + 10**9)  # now=0 is a time, not "unset"
    assert verify(SECRET, "0", BODY, signature(SECRET, "0", BODY), now=0)
