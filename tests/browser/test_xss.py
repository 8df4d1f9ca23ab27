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
    # The grid is drawn by script from JSON: ids full of markup stay text there too. New ids are
    # validated, so these rows are written directly (data from before the check, or from other tools).
    evil_run, evil_task = "<img src=x onerror=alert('xss-run')>", "<b onmouseover=alert('xss-task')>t</b>"
    insert_run_with_ids(server, evil_run, evil_task)
    page.goto("/dags/xss_probe")
    header = page.get_by_role("link", name=f"{evil_run} · failed · ")  # its accessible name, from aria-label
    expect(header).to_have_count(1)
    expect(header).to_have_attribute("data-run", evil_run)
    assert (header.get_attribute("title") or "").startswith(f"{evil_run} · failed · ")
    expect(page.locator("table.ur-grid th.ur-gone")).to_have_text(evil_task)
    expect(page.locator("a.ur-cell.st-removed")).to_have_attribute("data-task", evil_task)
    assert page.locator("img[src=x], main script, main b[onmouseover]").count() == 0, "markup became HTML in the grid"
    assert page.evaluate("() => document.querySelectorAll('[onerror], [onmouseover]').length") == 0
    assert page.dialogs == []


def insert_run_with_ids(server: Server, run_id: str, task_id: str) -> None:
    """A finished (failed) run of xss_probe, which no scheduler picks up, with a task instance of a task that is not in the DAG, straight into the database."""
    from scheduler.clock import utcnow
    from scheduler.config import load_settings
    from scheduler.db import store
    from scheduler.db.engine import make_engine, session_scope
    from scheduler.db.models import TaskInstance
    from scheduler.states import DagRunState, DagRunType
    from scheduler.timetables.base import DataInterval

    engine = make_engine(load_settings(environ=server.env, cwd=server.home).sql_alchemy_conn)
    now = utcnow()
    try:
        with session_scope(engine) as session:
            store.create_dag_run(session, dag_id="xss_probe", run_id=run_id, run_type=DagRunType.MANUAL,
                                 logical_date=now, data_interval=DataInterval(now, now), conf={},
                                 state=DagRunState.FAILED, run_after=now, now=now, external_trigger=True)
            session.add(TaskInstance(dag_id="xss_probe", run_id=run_id, task_id=task_id, state="removed"))
    finally:
        engine.dispose()
