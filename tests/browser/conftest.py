"""A real browser for the portal: Debian's chromium driven by Playwright for Python.

Playwright's own browser download cannot work here (no internet), so it launches the
system's chromium (`.ci/run` installs it); headless, with a fresh profile per test, and
`--no-sandbox` when running as root (chromium refuses its sandbox to root). In CI a missing
chromium or Playwright fails the tests (tests/conftest.py `require`); nothing is skipped there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import require, require_tool

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Module-scoped, not session: Playwright's sync API runs an asyncio loop in this thread
    while it is started, and every later test's asyncio.run() would find it running."""
    require_tool("chromium", "chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require("playwright", sync_playwright, "the test extra's playwright (pip install -e '.[test]')")
    args = ["--disable-background-networking", "--disable-dev-shm-usage"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
    with sync_playwright() as p:  # type: ignore[misc]
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield browser
        browser.close()


@pytest.fixture
def new_page(chromium: Any) -> Iterator[Any]:
    """Pages in fresh browser contexts (a cookie jar each: one per tenant), each recording
    the console's errors (a CSP violation is one)."""
    contexts = []

    def make() -> Any:
        context = chromium.new_context(viewport={"width": 1280, "height": 860})
        contexts.append(context)
        page = context.new_page()
        page.errors = []  # type: ignore[attr-defined]
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)  # type: ignore[attr-defined]
        page.on("pageerror", lambda e: page.errors.append(str(e)))  # type: ignore[attr-defined]
        page.set_default_timeout(20_000)
        return page

    yield make
    for context in contexts:
        context.close()
