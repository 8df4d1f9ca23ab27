"""The DAG list, the trigger form and what a Viewer may not do, in a real browser."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server


def row(page: Any, dag_id: str) -> Any:
    return page.locator(f'table.dag-list tr[data-dag-id="{dag_id}"]')


def test_the_dag_list_shows_the_dags_and_the_import_error_banner(op_page: Any) -> None:
    page = op_page
    expect(page.get_by_role("heading", name="DAGs", exact=True)).to_be_visible()
    for dag_id in ("branching", "params_form", "scenario", "tutorial", "xss_probe"):
        expect(row(page, dag_id).locator("a.dag-id")).to_have_text(dag_id)
    expect(page.locator("table.dag-list tbody tr")).to_have_count(5)
    expect(row(page, "tutorial").locator(".description")).to_have_text(
        "The tutorial: print the date, sleep a little, greet")
    expect(row(page, "branching")).to_have_class(re.compile(r"\bpaused\b"))
    expect(row(page, "tutorial")).to_have_class(re.compile(r"\bactive\b"))

    banner = page.locator("section.banner-error")
    expect(banner.get_by_role("heading")).to_have_text("1 DAG file could not be imported")
    expect(banner.locator("summary code")).to_have_text(re.compile(r"broken\.py$"))
    traceback = banner.locator("pre.traceback")
    expect(traceback).to_be_hidden()  # folded until asked for
    banner.locator("summary").click()
    expect(traceback).to_contain_text("this DAG file is broken on purpose")

    page.get_by_role("searchbox").fill("param")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.dag-list tbody tr")).to_have_count(1)
    expect(row(page, "params_form")).to_be_visible()


def test_trigger_a_dag_from_the_form_with_a_param(op_page: Any, server: Server) -> None:
    page = op_page
    page.get_by_role("link", name="Trigger DAG params_form").click()
    expect(page.get_by_role("heading", name="Trigger DAG params_form")).to_be_visible()
    environment = page.get_by_label("environment")
    expect(environment.locator("option:checked")).to_have_text("staging")  # the Param's default
    environment.select_option(label="production")
    page.get_by_label("replicas").fill("7")
    page.get_by_label("note").fill("triggered from the browser <b>test</b>")
    page.get_by_label("Run id").fill("browser_trigger")
    page.get_by_role("button", name="Trigger", exact=True).click()

    expect(page).to_have_url(f"{server.url}/dags/params_form")
    expect(page.get_by_role("status")).to_contain_text("Triggered DAG params_form: run browser_trigger is queued.")
    expect(page.locator('a.ur-run[data-run="browser_trigger"]')).to_be_visible()
    run = server.api("dags/params_form/dagRuns/browser_trigger")
    assert run["conf"] == {"environment": "production", "replicas": 7, "dry_run": True,
                           "note": "triggered from the browser <b>test</b>"}
    assert run["run_type"] == "manual"


def test_the_trigger_form_keeps_the_input_and_explains_a_bad_conf(op_page: Any, server: Server) -> None:
    page = op_page
    page.goto("/dags/params_form/trigger")
    page.get_by_label("replicas").fill("3")
    page.locator("details summary", has_text="Raw JSON conf").click()
    page.locator("#conf").fill("{not json")
    page.get_by_role("button", name="Trigger", exact=True).click()
    expect(page.locator("p.error[role=alert]")).to_contain_text("The run was not created")
    expect(page.locator(".field-error")).to_contain_text("The conf is not valid JSON")
    expect(page.get_by_label("replicas")).to_have_value("3")
    runs = server.api("dags/params_form/dagRuns")["dag_runs"]
    assert all(r["conf"].get("replicas") != 3 for r in runs)


def test_a_viewer_sees_no_edit_controls_and_may_not_trigger(viewer_page: Any, browser: Any, server: Server) -> None:
    page = viewer_page
    expect(page.locator("header")).to_contain_text("(Viewer)")
    expect(row(page, "tutorial")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("^Trigger"))).to_have_count(0)
    expect(page.locator("button.toggle")).to_have_count(0)
    expect(row(page, "branching").locator(".badge")).to_have_text("paused")
    page.goto("/dags/tutorial")
    expect(page.get_by_role("heading", name="tutorial")).to_be_visible()
    expect(page.get_by_role("link", name="Trigger")).to_have_count(0)
    response = page.goto("/dags/tutorial/trigger")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="Forbidden")).to_be_visible()
    expect(page.locator("main")).to_contain_text("role Viewer may not edit")


def test_an_op_pauses_and_unpauses_a_dag_from_the_list(op_page: Any, server: Server) -> None:
    page = op_page
    toggle = page.get_by_role("button", name="Unpause DAG branching")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    expect(row(page, "branching")).to_have_class(re.compile(r"\bactive\b"))
    assert server.api("dags/branching")["is_paused"] is False
    page.get_by_role("button", name="Pause DAG branching").click()
    expect(row(page, "branching")).to_have_class(re.compile(r"\bpaused\b"))
    assert server.api("dags/branching")["is_paused"] is True
