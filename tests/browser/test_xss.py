"""Markup in a DAG's description, tags or a run's conf is shown as text and never runs as script."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server


def test_markup_from_dag_files_and_confs_is_shown_as_text(op_page: Any, server: Server) -> None:
    page = op_page  # the fixture fails the test if any alert() or other dialog opens, or a script error happens
    server.cli("dags", "trigger", "xss_probe", "--run-id", "xss_run",
               "--conf", '{"payload": "<img src=x onerror=alert(\'xss-conf\')>"}')
    page.goto("/")
    row = page.locator('tr[data-dag-id="xss_probe"]')
    expect(row.locator(".description")).to_contain_text("<img src=x onerror=alert('xss-description')>")
    expect(row.locator(".tag")).to_have_text("<b onmouseover=alert('xss-tag')>tag</b>")
    row.locator(".tag").hover()
    for path in ("/dags/xss_probe", "/dags/xss_probe/graph", "/dags/xss_probe/trigger", "/dags/xss_probe/runs/xss_run"):
        page.goto(path)
        expect(page.locator("main")).to_contain_text("<img src=x onerror=alert(")
        assert page.locator("img[src=x], main script, main b[onmouseover]").count() == 0, f"markup became HTML on {path}"
    expect(page.locator("main")).to_contain_text("<img src=x onerror=alert('xss-conf')>")
    assert page.evaluate("() => document.querySelectorAll('[onerror], [onmouseover]').length") == 0
    assert page.dialogs == []
