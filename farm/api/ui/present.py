"""How the portal writes values for people: durations, times, log text. Pure module.

Log text is shown as text, always: the templates escape every byte (Jinja2's autoescape) and
portal.js inserts live output with `textContent`, never as markup. This module adds what
escaping alone does not: a terminal's control sequences are shown visibly instead of being
passed to the browser as invisible characters (ESC becomes ␛, so `\\x1b[31m` reads `␛[31m`),
and characters that reorder text (bidirectional overrides) are named, not obeyed.
"""

from __future__ import annotations

import datetime as dt
import json
import re

# C0 controls but tab and newline, and DEL: the Unicode "control pictures" block shows each.
_C0 = {c: chr(0x2400 + c) for c in range(0x20) if c not in (0x09, 0x0A)}
_C0[0x7F] = "\u2421"
# C1 controls (a lone 0x9b is an 8-bit CSI) and the bidirectional embeddings, overrides and
# isolates (text that reads one way and runs another): named in brackets.
_NAMED = {c: f"<U+{c:04X}>" for c in [*range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]}
_VISIBLE = str.maketrans({**_C0, **_NAMED})
_NEWLINES = re.compile(r"\r\n?")


def visible(text: str) -> str:
    """`text` with every control character but tab and newline shown as a visible one;
    carriage returns end lines (a progress bar's redraws read as its successive states)."""
    return _NEWLINES.sub("\n", text).translate(_VISIBLE)


_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def safe_json(value: object) -> str:
    """JSON with `<`, `>` and `&` escaped (as \\u003c...): what the portal sends portal.js
    holds no markup in any byte, even where a browser were to sniff it as HTML."""
    return json.dumps(value).translate(_JSON_ESCAPES)


def duration(seconds: float | None) -> str:
    """'0.4 s', '12 s', '3 min 5 s', '2 h 4 min', '3 d 2 h'; '' for None."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{max(seconds, 0):.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def between(start: str | None, end: str | None, now: dt.datetime) -> float | None:
    """Seconds from `start` to `end` (to `now` while `end` is None); None without a start."""
    t0 = parse_time(start)
    if t0 is None:
        return None
    t1 = parse_time(end) or now
    return (t1 - t0).total_seconds()


def iso(text: str | None) -> str:
    """An RFC 3339 time as shown: to the second, UTC ('2026-11-26 06:03:11Z'); '' for None."""
    t = parse_time(text)
    return "" if t is None else t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def size(n: int | None) -> str:
    """Bytes as people read them: '812 B', '3.4 KiB', '10.0 MiB'."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def value(v: object) -> str:
    """A setting's value as a policy file would write it: `true`, `60`, `[...]`; '–' for none."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def label(text: str) -> tuple[str, str] | None:
    """A label filter as typed, `key=value`; None when it is not one."""
    key, eq, value = text.partition("=")
    key, value = key.strip(), value.strip()
    return (key, value) if eq and key else None


def short(job_or_run_id: str | None) -> str:
    """The 12 characters listings show (a prefix any route takes)."""
    return (job_or_run_id or "")[:12]
