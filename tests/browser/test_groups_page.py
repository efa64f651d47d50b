"""Config groups in the page: create through the form, refusals, edit, delete after confirming."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Locator, Page, Request, expect

from tests.browser.harness import Fleet, PageMaker, log_in, random_secret
from tests.support import free_port

pytestmark = pytest.mark.browser

HOSTILE = "<img src=x onerror=\"document.title='owned'\">"


def labelled(fleet: Fleet, **labels: str) -> str:
    status, body = fleet.register(random_secret(), free_port(), labels=labels)
    assert status == 201, body
    return str(body["id"])


def open_groups(page: Page) -> None:
    log_in(page)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Config groups").click()
    expect(page.get_by_role("heading", name="Config groups", level=1)).to_be_focused()


def field(page: Page, label: str) -> Locator:
    """A field of the group form, by its label, exactly."""
    return page.locator("#group-form").get_by_label(label, exact=True)


def fill_form(page: Page, name: str, selector: str, priority: str, config: str) -> None:
    field(page, "Name").fill(name)
    field(page, "Match labels").fill(selector)
    field(page, "Priority").fill(priority)
    field(page, "Group config (JSON)").fill(config)


def group_puts(page: Page) -> list[str]:
    """The PUTs of groups the page sends from now on."""
    seen: list[str] = []

    def on_request(request: Request) -> None:
        if request.method == "PUT" and "/infra/config/groups/" in request.url:
            seen.append(request.url)

    page.on("request", on_request)
    return seen


def test_a_group_made_in_the_form_reaches_a_labelled_workers_page(
    fleet: Fleet, page_factory: PageMaker
) -> None:
    edge = labelled(fleet, role="edge", region="eu")
    core = labelled(fleet, role="core")
    page = page_factory()
    open_groups(page)
    expect(page.get_by_text("No config groups yet.")).to_be_visible()

    config = {"cache": "1g", "banner": HOSTILE}
    fill_form(page, "edge-cache", "role=edge", "5", json.dumps(config, indent=2))
    page.get_by_role("button", name="Save group").click()
    expect(page.locator("#group-outcome")).to_have_text(
        "Group edge-cache created: 1 worker given a new revision, outdated until they apply it."
    )

    # The dashboard holds what the form said, and merged it into the selected worker only.
    status, group = fleet.api("GET", "/infra/config/groups/edge-cache")
    assert status == 200, group
    assert (group["selector"], group["priority"], group["config"]) == ("role=edge", 5, config)
    assert group["selected"] == 1
    assert fleet.worker_json(edge)["config"] == config
    assert fleet.worker_json(core)["config"] == {}

    # The list shows it, its config as compact JSON and as text, never as markup.
    listed = page.locator("#group-rows tr")
    expect(listed).to_have_count(1)
    expect(listed.locator("th")).to_have_text("edge-cache")
    expect(listed.locator("td").nth(0)).to_have_text("role=edge")
    expect(listed.locator("td").nth(1)).to_have_text("5")
    expect(listed.locator("td").nth(2)).to_have_text(json.dumps(config, separators=(",", ":")))
    assert page.locator("#group-rows img").count() == 0
    assert page.title() != "owned"
    expect(page.get_by_text("No config groups yet.")).to_be_hidden()

    # The labelled worker's page has the group's keys in its desired config, by source.
    page.goto(f"/#/workers/{edge}")
    sources = page.get_by_role("list", name="Desired config")
    expect(sources.get_by_role("listitem")).to_have_text(
        ["cache from group edge-cache", "banner from group edge-cache"]
    )
    expect(page.locator("#config-merged")).to_contain_text('"cache": "1g"')
    page.goto(f"/#/workers/{core}")
    expect(page.locator("#worker-title")).to_have_text(core)
    expect(page.locator("#config-merged-block")).to_be_hidden()
    page.get_by_role("link", name="Config groups").click()
    expect(listed).to_have_count(1)


def test_a_bad_selector_shows_the_dashboards_message_and_bad_json_is_refused_in_the_page(
    fleet: Fleet, page_factory: PageMaker
) -> None:
    page = page_factory()
    open_groups(page)
    puts = group_puts(page)

    # JSON that does not parse never leaves the page.
    fill_form(page, "edge", "role=edge", "1", '{"cache": }')
    page.get_by_role("button", name="Save group").click()
    expect(page.locator("#group-form-error")).to_contain_text("The config is not valid JSON")
    expect(page.locator("#group-form-error")).to_contain_text("Nothing was saved.")
    expect(field(page, "Group config (JSON)")).to_be_focused()
    expect(field(page, "Group config (JSON)")).to_have_attribute("aria-invalid", "true")
    field(page, "Group config (JSON)").fill('["not", "an", "object"]')
    page.get_by_role("button", name="Save group").click()
    expect(page.locator("#group-form-error")).to_contain_text("must be a JSON object")
    # Nor does a name the dashboard's routes do not take.
    field(page, "Group config (JSON)").fill('{"cache": "1g"}')
    field(page, "Name").fill("Edge Cache")
    page.get_by_role("button", name="Save group").click()
    expect(page.locator("#group-form-error")).to_contain_text("lowercase letters")
    expect(field(page, "Name")).to_be_focused()
    assert puts == []

    # A selector is the dashboard's to judge: the page shows its 400 as it says it.
    body = {"selector": "role===edge", "priority": 1, "config": {"cache": "1g"}}
    status, refusal = fleet.api("PUT", "/infra/config/groups/edge", body)
    assert status == 400, refusal
    fill_form(page, "edge", "role===edge", "1", '{"cache": "1g"}')
    page.get_by_role("button", name="Save group").click()
    expect(page.locator("#group-form-error")).to_have_text(f"Not saved: {refusal['message']}")
    expect(field(page, "Match labels")).to_have_attribute("aria-invalid", "true")
    expect(field(page, "Match labels")).to_be_focused()
    assert len(puts) == 1
    assert fleet.api("GET", "/infra/config/groups")[1] == {"groups": []}
    expect(page.locator("#group-rows tr")).to_have_count(0)

    # Corrected, it saves; the refusal and its mark are gone.
    field(page, "Match labels").fill("role=edge")
    expect(field(page, "Match labels")).not_to_have_attribute("aria-invalid", "true")
    page.get_by_role("button", name="Save group").click()
    expect(page.locator("#group-outcome")).to_have_text(
        "Group edge created: no worker's desired config changed."
    )
    expect(page.locator("#group-form-error")).to_have_text("")
    assert fleet.api("GET", "/infra/config/groups/edge")[0] == 200


def test_edit_changes_priority_and_config_and_delete_asks_first(
    fleet: Fleet, page_factory: PageMaker
) -> None:
    edge = labelled(fleet, role="edge")
    labelled(fleet, role="core")
    body = {"selector": "role=edge", "priority": 1, "config": {"cache": "1g"}}
    assert fleet.api("PUT", "/infra/config/groups/edge", body)[0] == 201
    page = page_factory()
    open_groups(page)
    listed = page.locator('#group-rows tr[data-group="edge"]')
    expect(listed).to_contain_text('{"cache":"1g"}')

    # A new group's form under an existing name asks before replacing it; Cancel keeps it.
    fill_form(page, "edge", "", "0", "{}")
    page.get_by_role("button", name="Save group").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading")).to_have_text("Replace group edge?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert fleet.api("GET", "/infra/config/groups/edge")[1]["selector"] == "role=edge"

    # Edit fills the form with the group, and says how many workers it selects.
    listed.get_by_role("button", name="Edit group edge").click()
    expect(field(page, "Name")).to_be_focused()
    expect(field(page, "Name")).to_have_value("edge")
    expect(field(page, "Match labels")).to_have_value("role=edge")
    expect(field(page, "Priority")).to_have_value("1")
    expect(field(page, "Group config (JSON)")).to_have_value('{\n  "cache": "1g"\n}')
    expect(page.locator("#group-selected")).to_have_text("Its selector selects 1 worker now.")

    field(page, "Priority").fill("7")
    field(page, "Group config (JSON)").fill('{"cache": "2g", "log": "info"}')
    page.get_by_role("button", name="Save group").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#group-outcome")).to_have_text(
        "Group edge saved: 1 worker given a new revision, outdated until they apply it."
    )
    status, group = fleet.api("GET", "/infra/config/groups/edge")
    assert status == 200, group
    assert (group["priority"], group["config"]) == (7, {"cache": "2g", "log": "info"}), group
    assert fleet.worker_json(edge)["config"] == {"cache": "2g", "log": "info"}
    expect(listed.locator("td").nth(1)).to_have_text("7")
    expect(listed).to_contain_text('{"cache":"2g","log":"info"}')

    # Delete asks first: Cancel keeps the group, Delete removes it.
    listed.get_by_role("button", name="Delete group edge").click()
    expect(dialog.get_by_role("heading")).to_have_text("Delete group edge?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(listed.get_by_role("button", name="Delete group edge")).to_be_focused()
    assert fleet.api("GET", "/infra/config/groups/edge")[0] == 200

    listed.get_by_role("button", name="Delete group edge").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator("#groups-outcome")).to_have_text(
        "Group edge deleted: 1 worker given a new revision, outdated until they apply it."
    )
    expect(page.locator("#group-rows tr")).to_have_count(0)
    expect(page.get_by_text("No config groups yet.")).to_be_visible()
    expect(page.get_by_role("heading", name="Groups", exact=True)).to_be_focused()
    assert fleet.api("GET", "/infra/config/groups/edge")[0] == 404
    assert fleet.worker_json(edge)["config"] == {}
