"""The page under a strict CSP, on a phone's width, from the keyboard, with hostile data."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.harness import Fleet, PageMaker, log_in, random_secret, row

pytestmark = pytest.mark.browser

HOSTILE = "<img src=x onerror=\"document.title='owned'\">"


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 375, f"{page.url} is {width} px wide"


def test_phone_width_keyboard_and_escaping(fleet: Fleet, page_factory: PageMaker) -> None:
    alpha = fleet.start_worker("alpha")
    status, body = fleet.register(random_secret(), 4100, hostname=HOSTILE, version=HOSTILE)
    assert status == 201, body
    hostile_id = body["id"]
    page = page_factory(width=375, height=800)

    # The page and all its assets come from the dashboard, under its CSP.
    response = page.goto("/")
    assert response is not None and response.ok
    csp = response.headers.get("content-security-policy", "")
    assert "default-src 'self'" in csp

    # Keyboard only: the token field has focus on load; Enter logs in.
    expect(page.get_by_label("Admin token")).to_be_focused()
    page.keyboard.type("wrong")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    page.get_by_label("Admin token").fill("")
    log_in(page)
    expect(row(page, alpha.id)).to_be_visible()
    no_sideways_scroll(page)

    # Focus is visible on the controls a keyboard reaches.
    page.get_by_role("button", name="Sync all").focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")

    # Data from workers is text, never markup.
    expect(row(page, hostile_id)).to_contain_text(HOSTILE)
    page.goto(f"/#/workers/{hostile_id}")
    expect(page.locator("#worker-details")).to_contain_text(HOSTILE)
    assert page.locator("#worker-details img").count() == 0
    assert page.title() != "owned"
    no_sideways_scroll(page)

    page.goto(f"/#/workers/{alpha.id}")
    page.get_by_role("button", name="Sync now").click()
    expect(page.locator("#worker-badge")).to_have_text("synced")
    no_sideways_scroll(page)
    page.goto("/#/tokens")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name="Token created")).to_be_visible()
    no_sideways_scroll(page)
    # Leaving the view forgets the new token: it is shown once.
    token = page.locator("#created-token").input_value()
    page.get_by_role("link", name="Fleet", exact=True).click()
    expect(row(page, alpha.id)).to_be_visible()
    assert token
    assert page.locator("#created-token").input_value() == ""
    assert token not in page.locator("#created-command").input_value()


def test_session_cookie_csrf_and_logout(fleet: Fleet, page_factory: PageMaker) -> None:
    page = page_factory()
    log_in(page)
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    cookies = page.context.cookies()
    assert cookies, "no session cookie"
    assert all(c["httpOnly"] and c["sameSite"] == "Strict" for c in cookies), cookies
    assert page.evaluate("document.cookie") == ""

    # A state-changing call without the CSRF header is refused, even with the cookie.
    status = page.evaluate(
        "fetch('/infra/tokens', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: '{}'}).then(r => r.status)"
    )
    assert status == 403, status  # authenticated by the cookie, forbidden without CSRF
    assert fleet.api("GET", "/infra/tokens")[1]["tokens"] == []

    # A reload keeps the session; logging out ends it for good.
    page.reload()
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("Admin token")).to_be_visible()
    page.reload()
    expect(page.get_by_label("Admin token")).to_be_visible()
    assert page.evaluate("fetch('/infra/workers').then(r => r.status)") == 401
