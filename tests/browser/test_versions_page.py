"""A worker on another build than the dashboard's is marked on its row and on its page."""

from __future__ import annotations

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.harness import Fleet, PageMaker, log_in, random_secret, row
from tests.support import free_port
from vectis import __version__

pytestmark = pytest.mark.browser


def test_a_worker_on_another_build_is_marked(fleet: Fleet, page_factory: PageMaker) -> None:
    ids = {}
    for version in ("0.0.1", __version__):
        status, body = fleet.register(random_secret(), free_port(), version=version)
        assert status == 201, body
        ids[version] = body["id"]
    page = page_factory()
    log_in(page)
    old = version_of(page, ids["0.0.1"])
    expect(old).to_have_text("0.0.1 (not current)")
    expect(old).to_have_class("v stale")
    expect(old).to_have_attribute(
        "title", "Not the dashboard's version: reinstall with its install.sh"
    )
    current = version_of(page, ids[__version__])
    expect(current).to_have_text(__version__)
    expect(current).to_have_class("v")

    row(page, ids["0.0.1"]).get_by_role("link", name=ids["0.0.1"]).click()
    expect(page.locator("#worker-details dd.stale")).to_have_text("0.0.1 (not current)")


def version_of(page: Page, worker_id: str) -> Locator:
    return row(page, worker_id).locator(".w-field", has_text="Version").locator(".v")
