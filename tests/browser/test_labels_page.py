"""Labels on the fleet page and the Selector filter; a worker's merged config and its sources."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.harness import Fleet, PageMaker, log_in, random_secret, row
from tests.support import free_port

pytestmark = pytest.mark.browser

LABELS = {
    "edge-eu": {"role": "edge", "region": "eu"},
    "edge-us": {"role": "edge", "region": "us"},
    "core-eu": {"role": "core", "region": "eu"},
    "bare": {},
}


def test_labels_show_on_each_row_and_the_selector_filters(
    fleet: Fleet, page_factory: PageMaker
) -> None:
    ids: dict[str, str] = {}
    for name, labels in LABELS.items():
        status, body = fleet.register(random_secret(), free_port(), labels=labels)
        assert status == 201, body
        ids[name] = body["id"]
    page = page_factory()
    log_in(page)
    expect(page.locator("[data-worker-id]")).to_have_count(4)
    # Each row lists its labels, one key=value each, sorted by key.
    edge_labels = (
        row(page, ids["edge-eu"]).get_by_role("list", name="Labels").get_by_role("listitem")
    )
    expect(edge_labels).to_have_text(["region=eu", "role=edge"])
    expect(row(page, ids["bare"]).get_by_role("list", name="Labels")).to_be_hidden()

    # The selector is run by the dashboard: the rows and the counts are the selection's.
    selector = page.get_by_label("Selector")
    selector.fill("role=edge,region!=us")
    expect(page.locator("[data-worker-id]")).to_have_count(1)
    expect(row(page, ids["edge-eu"])).to_be_visible()
    expect(page.get_by_role("button", name="All workers: 1")).to_be_visible()
    selector.fill("region=eu")
    expect(page.locator("[data-worker-id]")).to_have_count(2)
    # One that does not parse says why, in words.
    selector.fill("role===edge")
    expect(page.locator("#fleet-error")).to_contain_text("selector")
    selector.fill("")
    expect(page.locator("[data-worker-id]")).to_have_count(4)
    expect(page.locator("#fleet-error")).to_have_text("")

    # A group's config reaches the worker page: the merged config and where each key is from;
    # the editor holds the worker's own config only.
    group = {"selector": "role=edge", "priority": 5, "config": {"cache": "1g"}}
    assert fleet.api("PUT", "/infra/config/groups/edge", group)[0] == 201
    assert fleet.api("PUT", f"/infra/workers/{ids['edge-eu']}/config", {"log": "debug"})[0] == 200
    row(page, ids["edge-eu"]).get_by_role("link", name=ids["edge-eu"]).click()
    expect(page.locator("#worker-details")).to_contain_text("region=eu, role=edge")
    sources = page.get_by_role("list", name="Desired config")
    expect(sources.get_by_role("listitem")).to_have_text(
        ["cache from group edge", "log from this worker"]
    )
    expect(page.get_by_label("Config (JSON object)")).to_have_value('{\n  "log": "debug"\n}')
