"""One Op's session from start to end, in a real browser: the issue's acceptance scenario.

Log in → the DAG list shows the import-error banner → unpause the paused ``scenario`` DAG with its toggle
(it stays unpaused after a reload) → trigger it through its Param form → with the scheduler running, the run
turns green in the grid without a reload → the run, graph and task instance pages, with the task's log →
clear the task through the confirmation page → it and its downstream task go back to no state, then run
again (try 2) while the page watches. Screenshots of the main pages go to tests/browser/screenshots/.
"""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import OP, Server, log_in, running_scheduler, screenshot

#: How long a run may take once the scheduler is up (a few seconds here, the page polls every 3 s).
RUN_DEADLINE_MS = 60_000
DAG_ID = "scenario"
RUN_ID = "browser_scenario"
WHO = "the acceptance test"


def mark_not_reloaded(page: Any) -> None:
    """Set a variable that a reload or navigation would lose."""
    page.evaluate("window.__not_reloaded = true")


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__not_reloaded === true"), f"{page.url} was reloaded"


def fact(page: Any, name: str) -> Any:
    """The value of the fact ``name`` (a ``dt``/``dd`` pair) on a page."""
    return page.locator("dl.ur-facts > div").filter(has=page.get_by_text(name, exact=True)).locator("dd")


def test_an_op_unpauses_triggers_watches_inspects_and_clears_a_dag(page: Any, server: Server) -> None:
    # --- log in; the DAG list with the import-error banner ----------------------------------------
    log_in(page, OP)
    expect(page.get_by_role("heading", name="DAGs", exact=True)).to_be_visible()
    banner = page.locator("section.banner-error")
    expect(banner.get_by_role("heading")).to_have_text("1 DAG file could not be imported")
    expect(banner.locator("summary code")).to_have_text(re.compile(r"broken\.py$"))
    banner.locator("summary").click()
    expect(banner.locator("pre.traceback")).to_contain_text("this DAG file is broken on purpose")
    screenshot(page, "dag-list")

    # --- unpause with the toggle; it stays unpaused after a reload ---------------------------------
    row = page.locator(f'table.dag-list tr[data-dag-id="{DAG_ID}"]')
    expect(row).to_have_class(re.compile(r"\bpaused\b"))
    page.get_by_role("button", name=f"Unpause DAG {DAG_ID}").click()
    expect(row).to_have_class(re.compile(r"\bactive\b"))
    page.reload()
    expect(row).to_have_class(re.compile(r"\bactive\b"))
    expect(page.get_by_role("button", name=f"Pause DAG {DAG_ID}")).to_have_attribute("aria-pressed", "true")
    assert server.api(f"dags/{DAG_ID}")["is_paused"] is False

    # --- trigger through the Param form ----------------------------------------------------------
    page.get_by_role("link", name=f"Trigger DAG {DAG_ID}").click()
    expect(page.get_by_role("heading", name=f"Trigger DAG {DAG_ID}")).to_be_visible()
    expect(page.locator("p.note", has_text="This DAG is paused")).to_have_count(0)
    who = page.get_by_label("who")
    expect(who).to_have_value("nobody")  # the Param's default
    who.fill(WHO)
    page.get_by_label("Run id").fill(RUN_ID)
    screenshot(page, "trigger-form")
    page.get_by_role("button", name="Trigger", exact=True).click()
    expect(page).to_have_url(f"{server.url}/dags/{DAG_ID}")
    expect(page.get_by_role("status")).to_contain_text(f"Triggered DAG {DAG_ID}: run {RUN_ID} is queued.")
    assert server.api(f"dags/{DAG_ID}/dagRuns/{RUN_ID}")["conf"] == {"who": WHO}

    # --- the run turns green in the grid without a reload ------------------------------------------
    run_cell = page.locator(f'a.ur-run[data-run="{RUN_ID}"]')
    expect(run_cell).to_have_class(re.compile(r"\bst-queued\b"))
    mark_not_reloaded(page)
    with running_scheduler(server, "scheduler-scenario"):
        expect(run_cell).to_have_class(re.compile(r"\bst-success\b"), timeout=RUN_DEADLINE_MS)
    for task_id in ("say", "done"):
        expect(page.locator(f'a.ur-cell[data-run="{RUN_ID}"][data-task="{task_id}"]')).to_have_class(
            re.compile(r"\bst-success\b"), timeout=4_000)  # the cells of a run that had none when the page was served
    assert_not_reloaded(page)
    screenshot(page, "grid")

    # --- the run page and the graph of the run -----------------------------------------------------
    run_cell.click()
    expect(page).to_have_url(re.compile(rf"/dags/{DAG_ID}/runs/{RUN_ID}$"))
    expect(page.locator(f'h2 .ur-state[data-run="{RUN_ID}"]')).to_have_text("success")
    expect(page.locator("pre.ur-value")).to_contain_text(WHO)  # the conf
    screenshot(page, "run")
    page.locator("p.ur-links").get_by_role("link", name="Graph").click()
    svg = page.locator("svg.ur-graph")
    expect(svg.locator("g.ur-node")).to_have_count(2)
    for task_id in ("say", "done"):
        expect(svg.locator(f'g.ur-node[data-task="{task_id}"]')).to_have_class(re.compile(r"\bst-success\b"))
    screenshot(page, "graph")

    # --- the task instance page with its log -------------------------------------------------------
    page.go_back()
    page.get_by_role("link", name="say", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/dags/{DAG_ID}/runs/{RUN_ID}/tasks/say$"))
    ti_state = page.locator('h2 .ur-state[data-task="say"]')
    expect(ti_state).to_have_text("success")
    expect(fact(page, "Try")).to_have_text("1 of 1")
    expect(page.locator("pre#ur-log")).to_contain_text(f"scenario greets {WHO}")
    expect(page.locator("dl.ur-values")).to_contain_text(f"echo 'scenario greets {WHO}'")  # rendered
    screenshot(page, "task-instance")

    # --- clear it (and its downstream task) through the confirmation page --------------------------
    expect(page.get_by_label("downstream")).to_be_checked()  # the default
    page.get_by_role("button", name="Clear…").click()
    expect(page.get_by_role("heading", name="Clear say?")).to_be_visible()
    changes = page.locator("section.ur-confirm table tbody tr")
    expect(changes).to_have_count(2)
    for n, task_id in enumerate(("say", "done")):
        expect(changes.nth(n).locator("td")).to_have_text([task_id, "success", "none"])
    assert server.api(f"dags/{DAG_ID}/dagRuns/{RUN_ID}")["state"] == "success"  # nothing changed yet
    screenshot(page, "clear-confirm")
    page.get_by_role("button", name="Confirm").click()

    expect(page).to_have_url(re.compile(rf"/dags/{DAG_ID}/runs/{RUN_ID}$"))
    expect(page.get_by_role("status")).to_have_text("Cleared 2 task instances.")
    run_state = page.locator(f'h2 .ur-state[data-run="{RUN_ID}"]')
    expect(run_state).to_have_text("queued")
    states = {t: page.locator(f'td .ur-state[data-run="{RUN_ID}"][data-task="{t}"]') for t in ("say", "done")}
    for state in states.values():
        expect(state).to_have_text("none")

    # --- with the scheduler running again, the page shows them run again, without a reload ----------
    mark_not_reloaded(page)
    with running_scheduler(server, "scheduler-scenario"):
        expect(run_state).to_have_text("success", timeout=RUN_DEADLINE_MS)
        for task_id, state in states.items():
            expect(state).to_have_text("success", timeout=RUN_DEADLINE_MS)
            expect(page.locator(f'td[data-run="{RUN_ID}"][data-task="{task_id}"][data-show="try_number"]')
                   ).to_have_text("2")
    assert_not_reloaded(page)

    page.get_by_role("link", name="say", exact=True).click()
    expect(ti_state).to_have_text("success")
    expect(fact(page, "Try")).to_have_text("2 of 2")  # no retries: a cleared task gets one more try
    expect(page.locator("h2", has_text="Log of try 2")).to_be_visible()
    expect(page.locator("pre#ur-log")).to_contain_text(f"scenario greets {WHO}")
    expect(page.get_by_role("link", name="log of try 1")).to_be_visible()
