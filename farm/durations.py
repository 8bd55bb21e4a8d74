"""Durations as people write them: "90s", "30m", "12h", "30d", "2w" (or plain seconds). Pure."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_FORM = re.compile(r"^\s*(\d{1,9})\s*([smhdw]?)\s*$")


def parse_duration(text: str, *, most_s: int | None = None) -> int:
    """Seconds in `text`; ValueError saying what is wrong (the caller adds the field path)."""
    m = _FORM.match(text)
    if m is None:
        raise ValueError(f"{text[:40]!r} is not a duration: write e.g. 90s, 30m, 12h, 30d or 2w")
    seconds = int(m[1]) * _UNITS[m[2] or "s"]
    if seconds <= 0:
        raise ValueError("a duration must be more than 0")
    if most_s is not None and seconds > most_s:
        raise ValueError(f"{text.strip()} is over the {most_s // 86400}-day limit")
    return seconds
