"""The DAG page (grid, graph), a run's state refreshing in place, and a task instance's log, in a real browser."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import OP, Server, log_in, running_scheduler

#: How long a run may take to finish once the scheduler is up (it takes about a second here).
RUN_DEADLINE_MS = 60_000


def test_a_run_state_refreshes_in_place_without_a_reload(browser: Any, server: Server) -> None:
    server.cli("dags", "trigger", "tutorial", "--run-id", "browser_live")
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 800})
    try:
        grid, run_page, dag_list = context.new_page(), context.new_page(), context.new_page()
        log_in(grid, OP, "/dags/tutorial")
        run_page.goto("/dags/tutorial/runs/browser_live")
        dag_list.goto("/")
        run_cell = grid.locator('a.ur-run[data-run="browser_live"]')
        expect(run_cell).to_have_class(re.compile(r"\bst-queued\b"))
        run_state = run_page.locator('h2 .ur-state[data-run="browser_live"]')
        expect(run_state).to_have_text("queued")
        last_run = dag_list.locator('tr[data-dag-id="tutorial"] [data-last-run] .state-label')
        expect(last_run).to_have_text("queued")
        for page in (grid, run_page, dag_list):
            page.evaluate("window.__not_reloaded = true")

        with running_scheduler(server, "scheduler-live"):
            expect(run_cell).to_have_class(re.compile(r"\bst-success\b"), timeout=RUN_DEADLINE_MS)
            expect(run_state).to_have_text("success", timeout=RUN_DEADLINE_MS)
            expect(run_state).to_have_class(re.compile(r"\bst-success\b"))
            expect(last_run).to_have_text("success", timeout=RUN_DEADLINE_MS)
            expect(last_run).to_have_class(re.compile(r"\bstate-success\b"))
        for page in (grid, run_page, dag_list):
            assert page.evaluate("window.__not_reloaded") is True, f"{page.url} was reloaded"
    finally:
        context.close()


def test_the_graph_page_draws_one_node_per_task(op_page: Any, finished_run: tuple[str, str]) -> None:
    page = op_page
    dag_id, run_id = finished_run
    page.goto(f"/dags/{dag_id}")
    page.get_by_role("link", name="Graph").click()
    svg = page.locator("svg.ur-graph")
    expect(svg).to_be_visible()
    nodes = svg.locator("g.ur-node")
    expect(nodes).to_have_count(3)
    assert sorted(svg.locator("text.ur-node-label").all_text_contents()) == ["greet", "pause", "print_date"]
    expect(svg.locator("path.ur-edge")).to_have_count(2)
    for n in range(3):
        assert nodes.nth(n).bounding_box() is not None  # laid out and drawn, not just in the DOM

    page.goto(f"/dags/{dag_id}/graph?run_id={run_id}")
    for task_id in ("print_date", "pause", "greet"):
        expect(svg.locator(f'g.ur-node[data-task="{task_id}"]')).to_have_class(re.compile(r"\bst-success\b"))

    page.goto("/dags/branching/graph")
    expect(svg.locator("g.ur-node")).to_have_count(4)
    expect(svg.locator("path.ur-edge")).to_have_count(4)
    expect(svg).to_have_attribute("aria-label", "Graph of branching: 4 nodes, 4 edges")


def test_the_task_instance_page_shows_the_log(op_page: Any, finished_run: tuple[str, str]) -> None:
    page = op_page
    dag_id, run_id = finished_run
    page.goto(f"/dags/{dag_id}")
    cell = page.locator(f'a.ur-cell[data-run="{run_id}"][data-task="greet"]')
    expect(cell).to_have_class(re.compile(r"\bst-success\b"))
    cell.click()
    expect(page).to_have_url(re.compile(rf"/dags/{dag_id}/runs/{run_id}/tasks/greet$"))
    expect(page.locator('h2 .ur-state[data-task="greet"]')).to_have_text("success")
    log = page.locator("pre#ur-log")
    expect(log).to_contain_text("tutorial says hi from the browser tests")
    expect(page.locator("dl.ur-values")).to_contain_text("echo 'tutorial says hi from the browser tests'")


def test_a_run_created_after_the_grid_was_served_appears_as_a_new_column(op_page: Any, server: Server) -> None:
    page = op_page
    run_id = "browser_new_column"
    page.goto("/dags/tutorial")
    expect(page.locator("table.ur-grid th", has_text="Task")).to_be_visible()  # drawn by grid.js
    page.evaluate("window.__not_reloaded = true")
    server.cli("dags", "trigger", "tutorial", "--run-id", run_id)
    run_cell = page.locator(f'a.ur-run[data-run="{run_id}"]')
    # The grid polls every 10 s while nothing moves, every 3 s while something does.
    expect(run_cell).to_have_class(re.compile(r"\bst-queued\b"), timeout=15_000)
    assert page.locator("a.ur-run").last.get_attribute("data-run") == run_id  # the newest run is the last column
    with running_scheduler(server, "scheduler-new-cells"):
        expect(run_cell).to_have_class(re.compile(r"\bst-success\b"), timeout=RUN_DEADLINE_MS)
    for task_id in ("print_date", "pause", "greet"):
        cell = page.locator(f'a.ur-cell[data-run="{run_id}"][data-task="{task_id}"]')
        expect(cell).to_have_class(re.compile(r"\bst-success\b"), timeout=4_000)  # more than one poll (3 s)
        expect(cell).to_have_attribute("title", re.compile(rf"^{task_id} · {run_id} · success · try 1 · "))
    assert page.evaluate("window.__not_reloaded") is True
    page.locator(f'a.ur-cell[data-run="{run_id}"][data-task="greet"]').click()
    expect(page).to_have_url(re.compile(rf"/dags/tutorial/runs/{run_id}/tasks/greet$"))
