"""The portal's pure parts: log windows and their cursors, text made visible, values written
for people, and where a login may lead."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from farm.api.ui.logpage import parse_cursor, window
from farm.api.ui.present import duration, label, safe_json, size, visible
from farm.api.ui.session import next_page


def _entries(texts: list[str]) -> list[tuple[str, str]]:
    return [(f"{i + 1}-0", t) for i, t in enumerate(texts)]


def _pages(entries: list[tuple[str, str]], budget: int) -> list[str]:
    """Every window from the end back to the start, as the portal pages them."""
    newest_first = list(reversed(entries))
    pages, cursor = [], None
    while True:
        at = parse_cursor(cursor)
        rest = newest_first if at is None else [e for e in newest_first if int(e[0].split("-")[0]) <= int(at[0].split("-")[0])]
        w = window(rest, budget, upto=None if at is None else at[1])
        pages.insert(0, w.text)
        if w.earlier is None:
            return pages
        assert w.earlier != cursor, "a window must move back"
        cursor = w.earlier


@given(st.lists(st.text(min_size=0, max_size=40), max_size=30), st.integers(min_value=1, max_value=50))
def test_windows_add_up_to_the_whole_log_each_within_its_budget(texts, budget):
    entries = _entries(texts)
    pages = _pages(entries, budget)
    assert "".join(pages) == "".join(texts)
    assert all(len(p) <= budget for p in pages)


def test_a_window_is_the_end_and_says_where_the_rest_begins():
    entries = _entries(["aaaa", "bbbb", "cccc"])
    w = window(reversed(entries), 8)
    assert (w.text, w.earlier, w.newest) == ("bbbbcccc", "1-0~4", "3-0")
    assert window(reversed(entries), 100).earlier is None
    big = window(reversed(_entries(["x" * 10 + "y" * 5])), 5)
    assert (big.text, big.earlier) == ("yyyyy", "1-0~10")
    assert window([], 10) == window([], 10) and window([], 10).newest is None


def test_a_cursor_is_an_entry_and_a_count_or_nothing():
    assert parse_cursor("1700000000000-3~12") == ("1700000000000-3", 12)
    for bad in (None, "", "+", "1-0", "1-0~", "1-0~-1", "x-0~1", "1-0~1; DROP"):
        assert parse_cursor(bad) is None


def test_terminal_escapes_and_reordering_characters_show_as_text():
    assert visible("\x1b[31mred\x1b[0m") == "␛[31mred␛[0m"
    assert visible("a\r\nb\rc\td\x00\x07\x7f") == "a\nb\nc\td␀␇␡"
    assert visible("\x9b31m") == "<U+009B>31m" and visible("abc\u202edef") == "abc<U+202E>def"
    assert visible("<script>") == "<script>"  # markup is the templates' to escape, and they do


def test_json_for_the_page_holds_no_markup_character():
    text = safe_json({"t": "<script>alert(1)</script>&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"t": "<script>alert(1)</script>&"}


def test_values_as_people_read_them():
    assert [duration(x) for x in (None, 0.42, 12.4, 185, 7440, 266400)] == ["", "0.4 s", "12 s", "3 min 5 s", "2 h 4 min", "3 d 2 h"]
    assert [size(x) for x in (None, 812, 3482, 10 * 1024 * 1024)] == ["", "812 B", "3.4 KiB", "10.0 MiB"]
    assert label("branch = main") == ("branch", "main") and label("nolabel") is None and label("=x") is None


def test_a_login_leads_only_into_the_portal():
    assert next_page("/ui/jobs?state=failed") == "/ui/jobs?state=failed"
    for elsewhere in (None, "", "https://evil.example/ui", "//evil.example", "/\\evil.example", "/v1/jobs", "/ui\\..\\x", "/uix",
                      "/ui/\r\nSet-Cookie: x"):
        assert next_page(elsewhere) == "/ui", elsewhere
