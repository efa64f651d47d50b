"""The fleet page in a real Chromium: log in, see workers, Sync and Sync all, failures by cause."""

from __future__ import annotations

import re
import socket

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.harness import Fleet, PageMaker, log_in, percent_shown, row, screenshot

pytestmark = pytest.mark.browser


def status_of(page: Page, worker_id: str) -> Locator:
    return row(page, worker_id).locator("[data-status]")


def test_log_in_sync_and_see_each_failure_cause(fleet: Fleet, page_factory: PageMaker) -> None:
    alpha = fleet.start_worker("alpha")
    bravo = fleet.start_worker("bravo")
    charlie = fleet.start_worker("charlie")
    page = page_factory()

    # A wrong token is refused in words, and the form stays.
    page.goto("/")
    page.get_by_label("Admin token").fill("not-the-admin-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    log_in(page)
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()

    # Every registered worker is one row, pending until first reached, counted at the top.
    expect(page.locator("[data-worker-id]")).to_have_count(3)
    for worker in (alpha, bravo, charlie):
        expect(status_of(page, worker.id)).to_have_attribute("data-status", "pending")
        expect(status_of(page, worker.id)).to_have_text("pending")
        expect(row(page, worker.id)).to_contain_text(worker.subdomain)
        expect(row(page, worker.id)).to_contain_text(f"127.0.0.1:{worker.port}")
    expect(page.get_by_role("button", name="Pending: 3")).to_be_visible()

    # Sync one: the row turns synced and shows the stats the worker sent.
    row(page, alpha.id).get_by_role("button", name="Sync", exact=True).click()
    expect(status_of(page, alpha.id)).to_have_attribute("data-status", "synced")
    expect(row(page, alpha.id)).to_contain_text("Sync succeeded.")
    stats = fleet.worker_json(alpha.id)["stats"]
    assert stats is not None
    memory = row(page, alpha.id).get_by_role("meter", name="Memory")
    expect(memory).to_have_attribute("aria-valuenow", percent_shown(stats["memory"]["percent"]))
    disk = row(page, alpha.id).get_by_role("meter", name="Disk")
    expect(disk).to_have_attribute("aria-valuenow", percent_shown(stats["disks"][0]["percent"]))
    expect(row(page, alpha.id).get_by_role("meter", name="CPU")).to_have_attribute(
        "aria-valuenow", percent_shown(stats["cpu_percent"])
    )
    expect(row(page, alpha.id)).to_contain_text("just now")
    expect(status_of(page, bravo.id)).to_have_attribute("data-status", "pending")

    # Sync all reaches every worker and reports the counts.
    page.get_by_role("button", name="Sync all").click()
    expect(page.locator("#sync-all-outcome")).to_have_text(
        re.compile(r"Sync all finished at .+: 3 synced, 0 failed, 0 outdated\.")
    )
    for worker in (alpha, bravo, charlie):
        expect(status_of(page, worker.id)).to_have_attribute("data-status", "synced")
    expect(page.get_by_role("button", name="Synced: 3")).to_be_visible()

    # A stopped worker: Sync (from the keyboard) shows failed, and why.
    bravo.proc.stop()
    sync_bravo = row(page, bravo.id).get_by_role("button", name="Sync", exact=True)
    sync_bravo.focus()
    page.keyboard.press("Enter")
    expect(status_of(page, bravo.id)).to_have_attribute("data-status", "failed")
    error = fleet.worker_json(bravo.id)["last_error"]
    assert error.startswith("unreachable")
    expect(row(page, bravo.id).locator(".w-outcome")).to_have_text(f"Failed: {error}")
    expect(sync_bravo).to_be_focused()

    # A host that takes the connection and never answers: progress shows, then the failure,
    # worded as a refused connection is (a sync's cause tells no port's state apart).
    charlie.proc.stop()
    with socket.socket() as silent:
        # The port may still hold connections in TIME_WAIT from the stopped worker.
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", charlie.port))
        silent.listen(8)
        row(page, charlie.id).get_by_role("button", name="Sync", exact=True).click()
        expect(row(page, charlie.id)).to_have_attribute("aria-busy", "true")
        expect(row(page, charlie.id).locator(".w-outcome")).to_have_text("Syncing…")
        expect(status_of(page, charlie.id)).to_have_attribute("data-status", "failed")
    expect(row(page, charlie.id)).to_have_attribute("aria-busy", "false")
    expect(row(page, charlie.id).locator(".w-outcome")).to_contain_text(
        "Failed: unreachable: no answer from 127.0.0.1:"
    )

    # Another host now answers on bravo's address: its answer is not bravo's, so identity fails.
    fleet.start_worker("impostor", port=bravo.port, register=False)
    sync_bravo.click()
    expect(row(page, bravo.id).locator(".w-outcome")).to_contain_text(
        "Failed: identity mismatch", timeout=10_000
    )
    expect(page.get_by_role("button", name="Failed: 2")).to_be_visible()
    expect(page.get_by_role("button", name="Synced: 1")).to_be_visible()

    # Filter by status, then search by name or IP.
    page.get_by_role("button", name="Failed: 2").click()
    expect(page.locator("[data-worker-id]:visible")).to_have_count(2)
    expect(row(page, alpha.id)).to_be_hidden()
    page.get_by_role("button", name="All workers: 3").click()
    page.get_by_label("Search").fill(alpha.id)
    expect(page.locator("[data-worker-id]:visible")).to_have_count(1)
    expect(row(page, alpha.id)).to_be_visible()
    page.get_by_label("Search").fill("charlie.example")
    expect(page.locator("[data-worker-id]:visible")).to_have_count(1)
    expect(row(page, charlie.id)).to_contain_text("host charlie.example.net")
    page.get_by_label("Search").fill("127.0.0.1")
    expect(page.locator("[data-worker-id]:visible")).to_have_count(3)
    page.get_by_label("Search").fill("no-such-worker")
    expect(page.get_by_text("No worker matches this filter.")).to_be_visible()
    page.get_by_label("Search").fill("")
    screenshot(page, "fleet-failures")


def test_sync_all_with_no_workers_and_empty_fleet(fleet: Fleet, page_factory: PageMaker) -> None:
    page = page_factory()
    log_in(page)
    expect(page.get_by_text(re.compile("No workers yet"))).to_be_visible()
    page.get_by_role("button", name="Sync all").click()
    expect(page.locator("#sync-all-outcome")).to_contain_text("0 synced, 0 failed")
    expect(page.locator("[data-worker-id]")).to_have_count(0)


def test_a_failed_apply_shows_on_its_row(fleet: Fleet, page_factory: PageMaker) -> None:
    command = "echo 'nginx: [emerg] unknown directive' >&2; exit 1"
    # With the dashboard's URL: a command that outlasts the sync's wait reports by heartbeat.
    env = {"VECTIS_APPLY_COMMAND": command, "VECTIS_DASHBOARD_URL": fleet.url}
    delta = fleet.start_worker("delta", env=env)
    page = page_factory()
    log_in(page)
    sync = row(page, delta.id).get_by_role("button", name="Sync", exact=True)
    sync.click()
    expect(status_of(page, delta.id)).to_have_attribute("data-status", "synced")
    status, _ = fleet.api("PUT", f"/infra/workers/{delta.id}/config", {"role": "edge"})
    assert status == 200
    sync.click()
    expect(status_of(page, delta.id)).to_have_attribute("data-status", "outdated")
    # The worker is outdated from the config change on; the cause arrives with the sync's
    # answer or, when the command outlasts the answer's wait, with the heartbeat after it.
    error = "apply failed: exit 1: nginx: [emerg] unknown directive"
    expect(row(page, delta.id).locator(".w-outcome")).to_have_text(error, timeout=20_000)
    assert fleet.worker_json(delta.id)["last_error"] == error
