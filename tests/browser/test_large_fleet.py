"""The fleet page on a fleet of 5,000 in a real Chromium: pages, server-side search and
filters, Sync on a row far down the list, Sync all with live progress, and an idle page that
fetches almost nothing."""

from __future__ import annotations

import http.client
import json
import re
import secrets
import time

import pytest
from playwright.sync_api import Page, Request, expect

from tests.browser.harness import ENROLL_TOKEN, Fleet, PageMaker, log_in, row

pytestmark = pytest.mark.browser

FLEET = 5000


@pytest.fixture(autouse=True)
def slow_enough_to_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Few syncs at once, so that a sweep of refused connections lasts long enough to be seen
    moving (set before the dashboard starts: autouse fixtures come first)."""
    monkeypatch.setenv("VECTIS_SYNC_CONCURRENCY", "10")


def register_many(fleet: Fleet, n: int) -> list[str]:
    """n workers at loopback addresses on port 1, where nothing listens, over one connection."""
    host, port = fleet.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    ids = []
    for i in range(n):
        body = {
            "ip": f"127.1.{i // 250}.{1 + i % 250}",
            "port": 1,
            "secret": secrets.token_hex(32),
            "hostname": f"node-{i:05d}.edge.example",
        }
        conn.request(
            "POST",
            "/infra/workers/auto-register",
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {ENROLL_TOKEN}"},
        )
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        assert resp.status == 201, doc
        ids.append(doc["id"])
    conn.close()
    return ids


def test_a_fleet_of_five_thousand(fleet: Fleet, page_factory: PageMaker) -> None:
    ids = register_many(fleet, FLEET)
    listed = fleet.api("GET", "/infra/workers?limit=1000&q=node-04321")[1]["workers"]
    assert [w["hostname"] for w in listed] == ["node-04321.edge.example"]
    far = listed[0]["id"]
    page = page_factory()

    # The first rows within 2 s of logging in, the counts of the whole fleet at the top.
    started = time.monotonic()
    log_in(page)
    expect(page.locator("[data-worker-id]").first).to_be_visible(timeout=2000)
    assert time.monotonic() - started < 2.0
    expect(page.get_by_role("button", name=f"All workers: {FLEET}")).to_be_visible()
    assert page.locator("[data-worker-id]").count() <= 200, "the browser holds one page"
    expect(row(page, far)).to_have_count(0)

    # Search finds a worker that is not on the first page.
    page.get_by_label("Search").fill("node-04321")
    expect(row(page, far)).to_be_visible(timeout=3000)
    expect(page.locator("[data-worker-id]")).to_have_count(1)

    # Sync on that row: nothing listens at its address, so it ends failed, and the status
    # filter (run by the dashboard) finds it.
    row(page, far).get_by_role("button", name="Sync", exact=True).click()
    expect(row(page, far).locator("[data-status]")).to_have_attribute("data-status", "failed")
    page.get_by_label("Search").fill("")
    page.get_by_role("button", name=re.compile(r"^Failed: 1$")).click()
    expect(page.locator("[data-worker-id]")).to_have_count(1)
    expect(row(page, far)).to_be_visible()
    page.get_by_role("button", name=re.compile(r"^All workers")).click()
    expect(page.locator("[data-worker-id]")).to_have_count(100)

    # Next and Previous pages.
    first_page = page.locator("[data-worker-id]").first.get_attribute("data-worker-id")
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_text("Workers 101–200")).to_be_visible()
    assert page.locator("[data-worker-id]").first.get_attribute("data-worker-id") != first_page
    page.get_by_role("button", name="Previous").click()
    expect(page.locator("[data-worker-id]").first).to_have_attribute("data-worker-id", first_page)

    # Sync all: progress moves while it runs, and the counts at the end are the fleet's.
    page.get_by_role("button", name="Sync all").click()
    outcome = page.locator("#sync-all-outcome")
    expect(outcome).to_have_text(re.compile(r"Syncing [0-9]+ of 5000 workers"))
    seen = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = outcome.text_content() or ""
        seen.add(text)
        if text.startswith("Sync all finished"):
            break
        time.sleep(0.2)
    assert any(re.match(r"Syncing [1-9][0-9]* of 5000", t) for t in seen), seen
    expect(outcome).to_have_text(
        re.compile(r"Sync all finished at .+: 0 synced, 5000 failed, 0 outdated\.")
    )
    assert len(ids) == FLEET

    # Idle: ten seconds of the page's own refreshes fetch under 100 KB.
    page.wait_for_timeout(1500)  # the refresh after the sweep has landed
    fetched: list[int] = []

    def count(request: Request) -> None:
        sizes = request.sizes()
        fetched.append(sizes["responseBodySize"] + sizes["responseHeadersSize"])

    page.on("requestfinished", count)
    page.wait_for_timeout(10_000)
    page.remove_listener("requestfinished", count)
    assert fetched, "the page did not refresh while idle"
    assert sum(fetched) < 100_000, f"{sum(fetched)} bytes in 10 idle seconds"


def test_sync_all_progress_survives_leaving_the_page(fleet: Fleet, page_factory: PageMaker) -> None:
    register_many(fleet, 600)
    page: Page = page_factory()
    log_in(page)
    page.get_by_role("button", name="Sync all").click()
    expect(page.locator("#sync-all-outcome")).to_have_text(re.compile(r"Syncing"))
    page.reload()
    expect(page.locator("#sync-all-outcome")).to_have_text(
        re.compile(r"Syncing|Sync all finished"), timeout=5000
    )
    finished = re.compile(r"Sync all finished at .+: 0 synced, 600 failed")
    expect(page.locator("#sync-all-outcome")).to_have_text(finished, timeout=60_000)
    # A reload after the end shows the outcome again: a job that ends before the page's first
    # poll is answered leaves it as much as a slow one.
    page.reload()
    expect(page.locator("#sync-all-outcome")).to_have_text(finished)
