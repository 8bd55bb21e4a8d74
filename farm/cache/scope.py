"""Cache keys and trust scopes. Pure: no I/O beyond the file reader passed in.

An entry lives under tenant → repository → tier → ref. The tier comes from the token the
job was submitted with (a CI system holds a protected token for its default and release
branches and an unprotected one for everything else), never from the job spec: a pull
request's job cannot claim the protected tier by naming `main` as its ref.

    reads:  its own (tier, ref) first, then the protected tier (any ref, newest first)
    writes: its own (tier, ref) only

So a protected job never restores anything an unprotected job wrote, and one unprotected
ref never restores another's. A prefix fallback (`restore_keys`) walks the same scopes, so
it never crosses into a lower tier either (the poisoning of carlos-emr/carlos#3463).

Key templates: `{{ hashFiles('requirements.txt', 'poetry.lock') }}` (sha256 over the
matching files' paths and contents, in sorted order; globs allowed) and `{{ env.NAME }}`
(the job's env).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from farm.errors import InvalidInput
from farm.paths import safe_path


class Tier(StrEnum):
    UNPROTECTED = "unprotected"
    PROTECTED = "protected"


KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=,@:/-]{0,511}$")
_EXPR = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_HASH_FILES = re.compile(r"^hashFiles\((.*)\)$")
_ARG = re.compile(r"""\s*'([^']*)'\s*(?:,|$)""")
_ENV = re.compile(r"^env\.([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True, order=True)
class Scope:
    tenant: str
    repo: str  # the source's URL, or "-" for a job without source
    tier: Tier
    ref: str  # the source's ref, or "-"

    def may_read(self, entry: "Scope") -> bool:
        """The rule every lookup obeys (the property test checks it): the same tenant and
        repository, and either this very scope or the protected tier."""
        if (entry.tenant, entry.repo) != (self.tenant, self.repo):
            return False
        return entry == self or entry.tier is Tier.PROTECTED


def check_key(key: str) -> str:
    if not KEY.match(key):
        raise InvalidInput(f"cache key {key!r}: letters, digits and ._+=,@:/- only, at most 512, not starting with a symbol")
    return key


def check_template(template: str) -> str:
    """What can be known of a key template at submit: its expressions parse, hashFiles
    patterns are relative paths inside the workspace, and with every expression filled in
    (a digest, an env value) it is a valid key. InvalidInput otherwise."""

    def hashes(patterns: list[str]) -> str:
        for p in patterns:
            try:
                safe_path(p)
            except InvalidInput:
                raise InvalidInput(f"cache key: hashFiles path {p!r} must be relative and stay inside the workspace") from None
        return "0" * 64

    check_key(render(template, env=_AnyEnv(), hash_files=hashes))
    return template


class _AnyEnv(dict):  # type: ignore[type-arg]
    """Stands for the job's env at submit: every name has a plain value."""

    def get(self, key: str, default: str = "") -> str:  # type: ignore[override]
        return "x"


def render(template: str, *, env: dict[str, str], hash_files: Callable[[list[str]], str]) -> str:
    """A key template with its `{{ ... }}` expressions filled in."""

    def expand(m: re.Match[str]) -> str:
        expr = m.group(1)
        if hf := _HASH_FILES.match(expr):
            args, rest = [], hf.group(1)
            while rest.strip():
                a = _ARG.match(rest)
                if not a:
                    raise InvalidInput(f"cache key: cannot read hashFiles arguments in {expr!r} (use 'quoted' paths)")
                args.append(a.group(1))
                rest = rest[a.end() :]
            if not args:
                raise InvalidInput("cache key: hashFiles needs at least one path")
            return hash_files(args)
        if e := _ENV.match(expr):
            return env.get(e.group(1), "")
        raise InvalidInput(f"cache key: unknown expression {expr!r} (hashFiles('...') or env.NAME)")

    return _EXPR.sub(expand, template)


def files_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """What hashFiles returns: sha256 over (path, sha256(content)) of the files, sorted by
    path; the empty string when nothing matched (as actions/cache does)."""
    h, n = hashlib.sha256(), 0
    for path, content in sorted(files):
        h.update(path.encode() + b"\0" + hashlib.sha256(content).digest())
        n += 1
    return h.hexdigest() if n else ""
