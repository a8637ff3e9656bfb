"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright.

``make browser`` (a dependency of ``make test``) installs the package when /usr/bin/chromium is
missing; Playwright never downloads a browser of its own. Requests that leave the machine are
refused and recorded (the tests run offline, as ganops promises to), and screenshots or pages
a test keeps go to ``$GANOPS_TEST_ARTIFACTS`` (default ``test-artifacts/``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Route, sync_playwright

CHROMIUM = os.environ.get("GANOPS_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach hosts it cannot.
FLAGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
LOCAL_SCHEMES = {"file", "data", "blob", "about"}


def artifacts_dir() -> Path:
    """Where a test keeps what a person would want to look at after a run."""
    default = Path(__file__).resolve().parents[1] / "test-artifacts"
    path = Path(os.environ.get("GANOPS_TEST_ARTIFACTS") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium (the system's) for one test."""
    if not Path(CHROMIUM).is_file():
        raise RuntimeError(f"{CHROMIUM}: not found; `make browser` installs Debian's chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def offline(context: BrowserContext) -> list[str]:
    """Refuse every request that is not to this machine; returns the list of refused URLs."""
    refused: list[str] = []

    def route(r: Route) -> None:
        url = urlsplit(r.request.url)
        if url.scheme in LOCAL_SCHEMES or url.hostname in LOCAL_HOSTS:
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort("internetdisconnected")

    context.route("**/*", route)
    return refused
