"""A worker's page: details, stats, history, the config editor, delete; live refresh."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.browser.harness import Fleet, PageMaker, log_in, percent_shown, row, screenshot

pytestmark = pytest.mark.browser


def editor_text(config: object) -> str:
    return json.dumps(config, indent=2)


def test_config_edit_makes_outdated_then_sync_applies_it(
    fleet: Fleet, page_factory: PageMaker
) -> None:
    alpha = fleet.start_worker("alpha")
    bravo = fleet.start_worker("bravo")
    charlie = fleet.start_worker("charlie")
    page = page_factory()
    log_in(page)
    page.get_by_role("button", name="Sync all").click()
    expect(page.get_by_role("button", name="Synced: 3")).to_be_visible()
    expect(page.locator("#sync-all-outcome")).to_contain_text("3 synced")
    charlie.proc.stop()
    row(page, charlie.id).get_by_role("button", name="Sync", exact=True).click()
    expect(row(page, charlie.id).locator("[data-status]")).to_have_text("failed")
    delta = fleet.start_worker("delta")  # registered, never reached: pending
    expect(row(page, delta.id).locator("[data-status]")).to_have_text("pending")

    # The worker's page, reached from its row: details and the stats it last sent.
    row(page, alpha.id).get_by_role("link", name=alpha.id).click()
    expect(page).to_have_url(f"{fleet.url}/#/workers/{alpha.id}")
    expect(page.get_by_role("heading", level=1)).to_have_text(alpha.id)
    expect(page.locator("#worker-badge")).to_have_text("synced")
    details = page.locator("#worker-details")
    expect(details).to_contain_text(alpha.subdomain)
    expect(details).to_contain_text("alpha.example.net")
    expect(details).to_contain_text(str(alpha.port))
    stats = fleet.worker_json(alpha.id)["stats"]
    memory = page.locator("#worker-stats").get_by_role("meter", name="Memory")
    expect(memory).to_have_attribute("aria-valuenow", percent_shown(stats["memory"]["percent"]))
    mount = stats["disks"][0]["mount"]
    expect(page.locator("#worker-stats").get_by_role("meter", name=f"Disk {mount}")).to_be_visible()
    expect(page.locator("#worker-history")).to_contain_text("sync succeeded")
    editor = page.get_by_label("Config (JSON object)")
    expect(editor).to_have_value("{}")

    # Bad JSON and a non-object are refused before anything is sent.
    editor.fill('{"log_level": "debug",')
    page.get_by_role("button", name="Save config").click()
    expect(page.locator("#config-message")).to_contain_text("Not valid JSON")
    expect(editor).to_have_attribute("aria-invalid", "true")
    editor.fill('["not", "an", "object"]')
    page.get_by_role("button", name="Save config").click()
    expect(page.locator("#config-message")).to_contain_text("must be a JSON object")
    assert fleet.worker_json(alpha.id)["desired_revision"] == 0

    # A good config saves a new revision: the worker is outdated until it applies it.
    config = {"log_level": "debug", "workers": 4, "features": {"gzip": True}}
    editor.fill(json.dumps(config))
    page.get_by_role("button", name="Save config").click()
    expect(page.locator("#config-message")).to_contain_text("Saved as revision 1")
    expect(page.locator("#worker-badge")).to_have_text("outdated")
    expect(editor).to_have_value(editor_text(config))
    assert fleet.worker_json(alpha.id)["desired_revision"] == 1
    assert alpha.applied_config() == {}
    expect(page.locator("#worker-history")).to_contain_text("config revision 1 set")

    # The fleet shows it too; keep a picture of every status at once.
    page.get_by_role("link", name="← Fleet").click()
    expect(row(page, alpha.id).locator("[data-status]")).to_have_text("outdated")
    expect(row(page, alpha.id)).to_contain_text("Config revision 1 not applied yet")
    expect(page.locator("[data-worker-id] .gauge-fill").first).to_be_visible()
    # The earlier Sync all's banner belonged to that visit: the rows tell the present.
    expect(page.locator("#sync-all-outcome")).to_have_text("")
    screenshot(page, "fleet")

    # Sync from the worker's page: the worker applies revision 1 and is synced again.
    page.get_by_role("link", name=alpha.id).click()
    page.get_by_role("button", name="Sync now").click()
    expect(page.locator("#worker-outcome")).to_have_text("Sync succeeded: synced.")
    expect(page.locator("#worker-badge")).to_have_text("synced")
    assert alpha.applied_config() == config
    body = fleet.worker_json(alpha.id)
    assert (body["status"], body["applied_revision"]) == ("synced", 1)
    expect(page.locator("#worker-history tr").first).to_contain_text("applied config revision 1")
    expect(page.locator("#config-revisions")).to_contain_text(
        "Desired revision 1; the worker runs revision 1."
    )
    screenshot(page, "worker")
    assert bravo.proc.alive()


def test_refresh_keeps_focus_and_unsaved_edits(fleet: Fleet, page_factory: PageMaker) -> None:
    alpha = fleet.start_worker("alpha")
    page = page_factory()
    log_in(page)
    page.goto(f"/#/workers/{alpha.id}")
    expect(page.locator("#worker-badge")).to_have_text("pending")
    editor = page.get_by_label("Config (JSON object)")
    editor.click()
    editor.fill('{"draft": ')

    # A sync made elsewhere shows up without a reload; the draft and the focus stay.
    status, body = fleet.api("POST", f"/infra/workers/{alpha.id}/sync")
    assert status == 200 and body["status"] == "synced", body
    expect(page.locator("#worker-badge")).to_have_text("synced", timeout=10_000)
    expect(editor).to_have_value('{"draft": ')
    expect(editor).to_be_focused()
    page.get_by_role("button", name="Discard changes").click()
    expect(editor).to_have_value("{}")

    # On the fleet: a new worker and a status change appear while the search box keeps focus.
    page.get_by_role("link", name="Fleet", exact=True).click()
    search = page.get_by_label("Search")
    search.click()
    search.type("127.0")
    bravo = fleet.start_worker("bravo")
    expect(row(page, bravo.id)).to_be_visible(timeout=10_000)
    status, _ = fleet.api("PUT", f"/infra/workers/{alpha.id}/config", {"tier": "gold"})
    assert status == 200
    expect(row(page, alpha.id).locator("[data-status]")).to_have_text("outdated", timeout=10_000)
    expect(search).to_be_focused()
    expect(search).to_have_value("127.0")


def test_delete_asks_first(fleet: Fleet, page_factory: PageMaker) -> None:
    alpha = fleet.start_worker("alpha")
    page = page_factory()
    log_in(page)
    page.goto(f"/#/workers/{alpha.id}")
    expect(page.locator("#worker-badge")).to_have_text("pending")

    page.get_by_role("button", name="Delete worker").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Delete {alpha.id}?")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="Delete worker")).to_be_focused()
    assert fleet.api("GET", f"/infra/workers/{alpha.id}")[0] == 200

    page.get_by_role("button", name="Delete worker").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    expect(page.locator("[data-worker-id]")).to_have_count(0)
    assert fleet.api("GET", f"/infra/workers/{alpha.id}")[0] == 404
