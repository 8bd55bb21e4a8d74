"""A job's log as a reader sees it, from the entries of its stream. Pure module.

- Where an attempt's output went over its cap, the middle was cut (farm/store/scripts/lib.lua
  `append`): a marker line stands where it was, on a line of its own.
- With `timestamps`, each line starts with the time its entry was written (RFC 3339, UTC,
  from the entry id's milliseconds).

The whole log and a follow render alike, so an `?offset=` taken from one holds in the other.
"""

from __future__ import annotations

from farm.models import rfc3339


def marker(cut_bytes: int) -> str:
    return f"[farm] --- {cut_bytes:,} bytes of output cut here: an attempt's log keeps its first and its last bytes ---\n"


def late_marker(cut_bytes: int) -> str:
    return (f"[farm] --- {cut_bytes:,} bytes of output cut before this line while this follow was behind: an attempt's log "
            "keeps its first and its last bytes ---\n")


class LogView:
    def __init__(self, cuts: dict[str, int], *, timestamps: bool = False) -> None:
        self.cuts = cuts
        self.timestamps = timestamps
        self._line_start = True

    def feed(self, entry_id: str, data: str) -> str:
        """The text for one entry (its data, and a cut marker after it if one belongs there)."""
        text = data
        if entry_id in self.cuts:
            text += ("" if text.endswith("\n") or not text else "\n") + marker(self.cuts[entry_id])
        return self._stamp(entry_id, text) if self.timestamps else text

    def late_cut(self, entry_id: str, cut_bytes: int) -> str:
        """A follower's marker for output cut before it read it (it had passed where the
        whole log puts the marker), after the last entry it read."""
        text = ("" if self._line_start else "\n") + late_marker(cut_bytes)
        return self._stamp(entry_id, text) if self.timestamps else text

    def _stamp(self, entry_id: str, text: str) -> str:
        when = rfc3339(int(entry_id.split("-", 1)[0]))
        out = []
        for line in text.splitlines(keepends=True):
            out.append(f"{when} {line}" if self._line_start else line)
            self._line_start = line.endswith("\n")
        return "".join(out)
