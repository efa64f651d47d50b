"""Browser tests: a real headless Chromium against a real dashboard and real worker processes.

Playwright's sync API drives Debian's Chromium (never a downloaded browser); the tests are
plain functions, so pytest-asyncio's auto mode leaves them alone. Each test gets its own
dashboard (SQLite under tmp_path) and starts the workers it needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.browser.harness import (
    ADMIN_TOKEN,
    CHROMIUM,
    CHROMIUM_ARGS,
    Fleet,
    PageErrors,
    PageMaker,
    dashboard_env,
)
from tests.support import free_port, running


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A running dashboard with no workers yet (tests start the ones they need)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        fleet = Fleet(url, tmp_path, stack)
        fleet.dashboard = stack.enter_context(
            running(
                ["dashboard", "serve", "--host", "127.0.0.1", "--port", str(port)],
                ready_url=f"{url}/healthz",
                log=tmp_path / "logs" / "dashboard.log",
                env=dashboard_env(tmp_path),
            )
        )
        yield fleet
        # Nothing secret may reach a log line, whatever the page did.
        logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
        assert ADMIN_TOKEN not in logs
        for worker in fleet.workers:
            secret = (worker.conf_dir / "worker.secret").read_text().strip()
            assert secret not in logs


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, shared by the browser tests and closed after them.

    Closed before the other packages run: the sync API keeps an event loop running in the
    main thread, which pytest-asyncio's tests cannot share.
    """
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page_factory(browser: Browser, fleet: Fleet) -> Iterator[PageMaker]:
    """New pages on a fresh browser context (own cookies), checked for script errors."""
    contexts: list[BrowserContext] = []
    errors = PageErrors()

    def make(width: int = 1280, height: int = 860, **options: Any) -> Page:
        context = browser.new_context(
            viewport={"width": width, "height": height}, base_url=fleet.url, **options
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("console", errors.console)
        page.on("pageerror", errors.page_error)
        return page

    yield make
    for context in contexts:
        context.close()
    assert errors.seen == [], errors.seen
