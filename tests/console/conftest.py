"""Browser fixtures: Debian's Chromium driven by Playwright (headless), never a
browser Playwright downloaded. scripts/test installs the package (scripts/setup
--browser); a machine without it fails here with what to install, never skips."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = os.environ.get("CHATD_CHROMIUM", "/usr/bin/chromium")
# no sandbox as root; and none of Chromium's own network traffic, which this
# machine's closed network refuses (and which a test has no business making)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/setup --browser (Debian's chromium) or set CHATD_CHROMIUM")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            await b.close()
