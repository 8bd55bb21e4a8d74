"""Path checks for what a tenant names inside a workspace (cache paths, a build's context
and Dockerfile, hashFiles patterns): pure, so the models validate with them at the edge
without loading what archives or runs anything."""

from __future__ import annotations

import posixpath

from farm.errors import InvalidInput


class UnsafeEntry(InvalidInput):
    """A path, link or file type farm must not hold or follow (it would leave the workspace)."""


def safe_path(p: str) -> str:
    """A relative POSIX path with no '..' part; '.' parts and trailing slashes dropped."""
    norm = posixpath.normpath(p) if p else ""
    if not p or "\x00" in p or "\\" in p or p.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
        raise UnsafeEntry(f"cache path {p!r} must be relative and stay inside the workspace")
    return norm
