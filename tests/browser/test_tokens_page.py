"""Enrollment tokens in the page: create (shown once, with the install command), use, revoke."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.harness import Fleet, PageMaker, log_in, random_secret

pytestmark = pytest.mark.browser


def test_create_copy_use_and_revoke_a_token(fleet: Fleet, page_factory: PageMaker) -> None:
    page = page_factory(permissions=["clipboard-read", "clipboard-write"])
    log_in(page)
    page.get_by_role("link", name="Tokens").click()
    expect(page.get_by_role("heading", name="Enrollment tokens")).to_be_visible()
    expect(page.get_by_text("No enrollment tokens yet.")).to_be_visible()

    # A bad use limit is caught in the form; nothing is created.
    page.get_by_label("Maximum uses").fill("0")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#token-form-error")).to_contain_text("at least 1")
    assert fleet.api("GET", "/infra/tokens")[1]["tokens"] == []

    page.get_by_label("Description").fill("rack 7")
    page.get_by_label("Expires").select_option(label="In 7 days")
    page.get_by_label("Maximum uses").fill("2")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name="Token created")).to_be_focused()
    token = page.get_by_label("Token", exact=True).input_value()
    assert len(token) >= 20
    command = (
        f"export VECTIS_TOKEN={token} VECTIS_DASHBOARD_URL={fleet.url}; "
        f"curl -fsSL {fleet.url}/install.sh | "
        "sudo --preserve-env=VECTIS_TOKEN,VECTIS_DASHBOARD_URL bash"
    )
    expect(page.get_by_label("Install command (run on the new server)")).to_have_value(command)
    page.get_by_role("button", name="Copy command").click()
    expect(page.locator("#copy-outcome")).to_have_text("Install command copied.")
    assert page.evaluate("navigator.clipboard.readText()") == command

    # The list shows it (never the token itself), with its limits.
    listed = page.locator("#token-rows tr")
    expect(listed).to_have_count(1)
    expect(listed).to_contain_text("rack 7")
    expect(listed).to_contain_text("0 / 2")
    expect(listed).to_contain_text("active")
    expect(listed).to_contain_text("in 7 d")
    assert token not in page.locator("#token-rows").inner_text()

    # The token is real: a server registers with it.
    status, body = fleet.register(random_secret(), 4001, token=token)
    assert status == 201, body

    # Shown once: Done clears it, and a reload does not bring it back.
    page.get_by_role("button", name="Done").click()
    expect(page.locator("#token-created")).to_be_hidden()
    page.reload()
    expect(page.get_by_role("heading", name="Enrollment tokens")).to_be_visible()
    expect(listed).to_contain_text("1 / 2")
    assert token not in page.content()

    # Revoke asks first; then the token no longer registers anything.
    listed.get_by_role("button", name="Revoke token rack 7").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(page.locator("#tokens-outcome")).to_have_text("Token rack 7 revoked.")
    expect(listed).to_contain_text("revoked")
    expect(listed.get_by_role("button")).to_have_count(0)
    status, body = fleet.register(random_secret(), 4002, token=token)
    assert status == 401, body
