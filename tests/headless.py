"""Headless Chromium (Debian's package) driven by Playwright for Python, offline.

Playwright's own browser download is not used: the system browser is launched by path, with the
flags that keep it from reaching for hosts it cannot reach, and every request to a host other
than 127.0.0.1 is refused and recorded, so a page that needs the network fails its test.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

CHROMIUM = os.environ.get("GANOPS_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which(CHROMIUM) or CHROMIUM
    if not os.path.isfile(path):
        raise RuntimeError(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium")
    return path


@contextmanager
def browser():
    """A launched Chromium; ``offline_page(b)`` opens pages in it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


def offline_page(b, *, accept_downloads: bool = False):
    """A page in a fresh context that may only reach 127.0.0.1; ``page.blocked`` lists the rest,
    ``page.errors`` the page's uncaught errors and console errors."""
    context = b.new_context(accept_downloads=accept_downloads)
    page = context.new_page()
    page.blocked = []
    page.errors = []

    def route(r):
        url = r.request.url
        if url.startswith(("http://127.0.0.1", "data:", "blob:")):
            r.continue_()
        else:
            page.blocked.append(url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    return page
