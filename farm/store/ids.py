"""Ids as people type them: a whole id, or a unique prefix of MIN_PREFIX characters or more.

A job's or a run's id is 32 lowercase hex characters (uuid4); listings show the first 12.
A prefix is resolved in a lex-ordered sorted set of every id (keys `jobids` and `runids`,
score 0), written in the script step that makes the job or run (lib.lua `index_ids`) and
emptied by purge.lua, so a lookup reads a range of that set (ZRANGEBYLEX, a page of
SHOWN + 1), never the keyspace.

Invariants:
- A whole id is never looked up here: it names what it named before, at no extra cost,
  also a job or run made before the index existed (which has no entry, so only its whole id
  finds it until retention purges it).
- A prefix resolves among the ids the caller may see (`tenant`; None: every one): another
  tenant's ids are absent, never counted, never shown.
- An ambiguous prefix is an `Ambiguous` naming at most SHOWN matches, with their states.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from farm.errors import Ambiguous, NotFound
from farm.store.client import translated

ID_LENGTH = 32
MIN_PREFIX = 8
SHOWN = 10  # matches an ambiguous prefix lists
PATTERN = rf"^[0-9a-f]{{{MIN_PREFIX},{ID_LENGTH}}}$"
SCAN_MAX = 1_000  # index entries one lookup reads at most (others' ids it passes over included)
_HEX = frozenset("0123456789abcdef")

# The (tenant, state) of each id, None for one gone since the index was read.
Read = Callable[[list[str]], list[tuple[str, str] | None]]


def is_whole(text: str) -> bool:
    return len(text) == ID_LENGTH and set(text) <= _HEX


def is_prefix(text: str) -> bool:
    return MIN_PREFIX <= len(text) < ID_LENGTH and set(text) <= _HEX


def resolve_id(client: redis.Redis, index: str, kind: str, typed: str, *, tenant: str | None, read: Read) -> str:
    """The whole id `typed` names in `index`: itself when it is whole (not read), else the
    one id it begins among those of `tenant` (None: all). NotFound when none (or `typed` is
    no prefix), Ambiguous when more than one."""
    if is_whole(typed):
        return typed
    if not is_prefix(typed):
        short = len(typed) < MIN_PREFIX and set(typed) <= _HEX
        raise NotFound(f"no {kind} {typed}" + (f" (a prefix of an id needs {MIN_PREFIX} characters at least)" if short else ""))
    lo, hi = b"[" + typed.encode(), b"[" + typed.encode() + b"\xff"
    found: list[tuple[str, str]] = []
    scanned = 0
    while len(found) <= SHOWN and scanned < SCAN_MAX:
        with translated():
            page = client.zrangebylex(index, lo, hi, start=0, num=SHOWN + 1)
        rows = read(page) if page else []
        found += [(i, row[1]) for i, row in zip(page, rows, strict=True) if row and (tenant is None or row[0] == tenant)]
        scanned += len(page)
        if len(page) <= SHOWN:
            break  # the range is read to its end
        lo = b"(" + page[-1].encode()
    return pick(kind, typed, found)


def pick(kind: str, typed: str, found: list[tuple[str, str]]) -> str:
    """The one id of `found` ((id, state) pairs, in id order), or the error `typed` gets."""
    if not found:
        raise NotFound(f"no {kind} {typed}")
    if len(found) == 1:
        return found[0][0]
    shown = found[:SHOWN]
    many = f"more than {SHOWN}" if len(found) > SHOWN else str(len(found))
    listed = ", ".join(f"{i} ({state})" for i, state in shown)
    raise Ambiguous(f"{typed} begins {many} {kind} ids: {listed}; give more of the id", shown)
