"""Logging in and out in a real browser, against the real webserver."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import OP, VIEWER, Server, log_in


def test_a_page_redirects_to_login_and_logging_in_as_op_lands_on_it(page: Any, server: Server) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))
    expect(page).to_have_title(re.compile("Log in"))
    page.get_by_label("User name").fill(OP[0])
    page.get_by_label("Password").fill(OP[1])
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{server.url}/")
    expect(page.locator("header")).to_contain_text(f"signed in as {OP[0]} (Op)")
    cookie = next(c for c in page.context.cookies() if c["name"] == "updraft_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"


def test_a_wrong_password_shows_an_error_and_keeps_the_user_name(page: Any) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(VIEWER[0])
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text(f"Wrong user name or password for {VIEWER[0]}.")
    expect(page.get_by_label("User name")).to_have_value(VIEWER[0])
    expect(page.get_by_label("Password")).to_have_value("")
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))  # still not logged in


def test_logout_ends_the_session(page: Any, server: Server) -> None:
    log_in(page, OP)
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{server.url}/login")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)


def test_login_returns_to_the_page_first_asked_for(page: Any, server: Server) -> None:
    page.goto("/api/v1/version")  # an API path answers 401 instead; a UI path redirects
    page.goto("/login?next=/api/v1/health")
    page.get_by_label("User name").fill(VIEWER[0])
    page.get_by_label("Password").fill(VIEWER[1])
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{server.url}/api/v1/health")
    expect(page.locator("body")).to_contain_text("healthy")
